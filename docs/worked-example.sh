#!/usr/bin/env bash
# A worked example from zero: keys → a configuration → `itk3 serve` → a sealed message → the
# delivered Bundle and the signed ITK3 response. Every command is one an operator or a sender
# runs; CI runs this script as written (test/e2e/worked-example.test.ts).
#
#   bash docs/worked-example.sh [WORK_DIR]        (default: a fresh temporary folder)
#
# Two parties, each with its own keystore:
#   the gateway  — a decryption key for the recipient A83627 and a key that signs ITK3 responses;
#   the sender   — organisation X26: its token service's key (the issuer) and its signing key.
# Only public keys cross between them. Everything listens on 127.0.0.1 only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$(mktemp -d)}"
mkdir -p "$WORK"
cd "$WORK"
itk3() { node "$ROOT/bin/itk3.js" "$@"; }
AUDIENCE="https://itk3-gateway.example.nhs.uk/messages"

echo "== 1. gateway keys: recipient A83627 and the response-signing key, with chosen key ids"
itk3 keys init --keystore gateway-keystore.json --recipient A83627 --gateway ITK3GW \
  --kid A83627=a83627-enc-1 --kid ITK3GW=itk3gw-response-1 --modulus 2048 > gateway.jwks
# gateway.jwks is what the gateway publishes to senders (public keys only).

echo "== 2. sender keys: X26's token service (issuer) and X26's message-signing key"
itk3 keys add --keystore sender-keystore.json --purpose issuer-sign --alg ES256 --owner x26-idp \
  --kid x26-idp-1 > issuer.jwk
itk3 keys add --keystore sender-keystore.json --purpose sender-sign --alg ES256 --owner X26 \
  --kid x26-sign-1 > sender.jwk
# issuer.jwk and sender.jwk are what the sender gives the gateway's operator.

echo "== 3. the gateway's configuration"
node - "$AUDIENCE" > config.json <<'NODE'
const { readFileSync } = require('node:fs');
const audience = process.argv[2];
const publicKey = (file) => {
  const { kty, kid, alg, crv, x, y, n, e } = JSON.parse(readFileSync(file, 'utf8'));
  return Object.fromEntries(Object.entries({ kty, kid, alg, crv, x, y, n, e }).filter(([, v]) => v));
};
const config = {
  audience,
  gatewayOds: 'ITK3GW',
  responseSigning: { kid: 'itk3gw-response-1' },
  unauthenticatedResponseTarget: { type: 'folder', path: 'responses/_unauthenticated' },
  issuers: [
    {
      id: 'x26-idp',
      issuer: 'https://idp.x26.example',
      organisations: ['X26'],
      keys: [publicKey('issuer.jwk')],
    },
  ],
  senders: [
    {
      ods: 'X26',
      clients: [{ issuer: 'x26-idp', sub: 'x26-pharmacy-system' }],
      meshMailbox: 'X26MESH01',
      signingKeys: [publicKey('sender.jwk')],
      responseTarget: { type: 'folder', path: 'responses/X26' },
    },
  ],
  recipients: [
    { ods: 'A83627', keys: [{ kid: 'a83627-enc-1' }], target: { type: 'folder', path: 'delivered/A83627' } },
  ],
  rules: [
    {
      id: 'x26-immunisation-to-a83627',
      sender: { ods: 'X26' },
      event: 'ITK009D',
      messageDefinition: ['ITK-DM-Immunization-MessageDefinition-1'],
      recipientType: ['FA'],
      recipients: ['A83627'],
    },
  ],
};
process.stdout.write(`${JSON.stringify(config, null, 2)}\n`);
NODE
# Checks the document and that every key id it names is in the keystore it will run with.
itk3 config validate config.json --keystore gateway-keystore.json

echo "== 4. the sender's ITK3 message (built here; a real sender's system produces its own Bundle)"
(cd "$ROOT" && node --import tsx --input-type=module -e "
  import { randomUUID } from 'node:crypto';
  import { writeFileSync } from 'node:fs';
  import { buildItk3Message } from './lib/itk3/builder.ts';
  writeFileSync(process.argv[1], buildItk3Message({
    format: 'xml', event: 'ITK009D', senderOds: 'X26', receiverOds: 'A83627', meshMailbox: 'X26MESH01',
    messageId: randomUUID(), bundleId: randomUUID(), documentId: randomUUID(),
    acks: { inf: true, bus: true }, recipientType: 'FA',
    messageDefinition: 'ITK-DM-Immunization-MessageDefinition-1', timestamp: new Date().toISOString(),
  }));
" "$WORK/message.xml")

echo "== 5. the sender: a credential from its token service, then sign and encrypt the Bundle"
itk3 token --keystore sender-keystore.json --kid x26-idp-1 --iss https://idp.x26.example \
  --sub x26-pharmacy-system --aud "$AUDIENCE" --org X26 > message.jwt
itk3 seal message.xml --keystore sender-keystore.json --signer-kid x26-sign-1 --to A83627 \
  --recipient-jwks gateway.jwks --recipient-kid a83627-enc-1 --out message.jwe

echo "== 6. before sending: why would it pass? (explain never delivers, consumes the jti or writes)"
itk3 explain message.jwe --config config.json --keystore gateway-keystore.json

echo "== 7. the gateway: itk3 serve on a free loopback port"
# node itself in the background (not the itk3 function), so $! is the server's own process id.
node "$ROOT/bin/itk3.js" serve --config config.json --keystore gateway-keystore.json --port 0 --out run \
  > serve.log 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM   # so the EXIT trap stops the server on Ctrl-C or a CI timeout too
PORT=""
for _ in $(seq 1 300); do
  PORT="$(sed -n 's|^listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' serve.log)"
  [ -n "$PORT" ] && break
  kill -0 "$SERVER" 2>/dev/null || { cat serve.log; exit 1; }
  sleep 0.1
done
[ -n "$PORT" ] || { echo "serve did not start"; cat serve.log; exit 1; }

echo "== 8. send it: POST /messages, credential as a Bearer token, the compact JWE as the body"
curl -sS --fail-with-body -X POST "http://127.0.0.1:$PORT/messages" \
  -H "Authorization: Bearer $(cat message.jwt)" --data-binary @message.jwe | tee accepted.json
echo

echo "== 9. the delivered Bundle and the signed ITK3 response (ITK008M)"
delivered=""
response=""
for _ in $(seq 1 300); do
  delivered="$(ls run/delivered/A83627/*.xml 2>/dev/null | head -n 1 || true)"
  response="$(ls run/responses/X26/*.jws 2>/dev/null | head -n 1 || true)"
  [ -n "$delivered" ] && [ -n "$response" ] && break
  sleep 0.1
done
[ -n "$delivered" ] && [ -n "$response" ] || { echo "no delivery or response"; cat serve.log; exit 1; }
cmp "$delivered" message.xml && echo "delivered byte-identical: $delivered"
# The sender checks the response with the gateway's published response-signing key.
(cd "$ROOT" && node --input-type=module -e "
  import { readFileSync } from 'node:fs';
  import { compactVerify, importJWK } from 'jose';
  const [jwksFile, responseFile] = process.argv.slice(1);
  const jwk = JSON.parse(readFileSync(jwksFile, 'utf8')).keys.find((k) => k.kid === 'itk3gw-response-1');
  const { payload } = await compactVerify(readFileSync(responseFile, 'utf8').trim(), await importJWK(jwk, 'ES256'));
  const code = new TextDecoder().decode(payload).match(/<code value=\"(2001[0-9])\"/)?.[1];
  console.log('response signature verified; ITK3 code', code);
  if (code !== '20013') process.exit(1);
" "$WORK/gateway.jwks" "$WORK/$response")
echo "worked example complete in $WORK"
