#!/usr/bin/env bash
# Deploy the real CDK stack to the local ministack emulator (its Lambdas run as host Node processes).
#
#   scripts/local-deploy.sh deploy [CONFIG]   cdk bootstrap + deploy (default config: a fresh demo world
#                                             in .itk3/local/config.json, keys in .itk3/local/keystore.json)
#   scripts/local-deploy.sh destroy           cdk destroy
#
# Start the emulator first: bash scripts/emulator.sh start ministack
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ENDPOINT="http://127.0.0.1:${ITK3_MINISTACK_PORT:-4566}"
STACK="${ITK3_LOCAL_STACK:-Itk3Local}"
export AWS_ENDPOINT_URL="$ENDPOINT" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export CDK_DEFAULT_ACCOUNT=000000000000 CDK_DEFAULT_REGION=us-east-1
export AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=true
unset AWS_PROFILE

if ! curl -sf -m 5 "$ENDPOINT/_ministack/health" >/dev/null; then
  echo "ministack is not answering at $ENDPOINT: run bash scripts/emulator.sh start ministack" >&2
  exit 1
fi

case "${1:-}" in
  deploy)
    CONFIG="${2:-}"
    if [ -z "$CONFIG" ]; then
      CONFIG=.itk3/local/config.json
      if [ ! -f "$CONFIG" ]; then
        node bin/itk3.js demo --fast --out .itk3/local >/dev/null
        echo "demo world (keys and configuration) written to .itk3/local/"
      fi
    fi
    npx cdk bootstrap aws://000000000000/us-east-1
    # The emulator runs functions on a Node without the AWS SDK: bundle it (itk3:bundleAwsSdk).
    npx cdk deploy --require-approval never -c "itk3:configFile=$CONFIG" -c itk3:removalPolicy=destroy \
      -c "itk3:stackName=$STACK" -c itk3:bundleAwsSdk=true --outputs-file .itk3/local/outputs.json
    echo "outputs: .itk3/local/outputs.json (queue URLs say localhost; the HTTP API is at $ENDPOINT/_aws/execute-api/<api id>/\$default/messages)"
    ;;
  destroy)
    CONFIG="${2:-.itk3/local/config.json}"
    npx cdk destroy --force -c "itk3:configFile=$CONFIG" -c "itk3:stackName=$STACK" -c itk3:bundleAwsSdk=true
    ;;
  *)
    echo "usage: $0 deploy [CONFIG] | destroy [CONFIG]" >&2
    exit 2
    ;;
esac
