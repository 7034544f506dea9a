#!/usr/bin/env bash
# Local AWS emulators for tests and local runs, without Docker (docs/LOCAL-AWS.md).
#
#   scripts/emulator.sh start  [ministack|localstack]   install (once), start, wait for health, smoke test
#   scripts/emulator.sh stop   [ministack|localstack]   stop the process this script started
#   scripts/emulator.sh status [ministack|localstack]   running? healthy? where?
#
# The default emulator is ministack. Both can run together: ministack on 127.0.0.1:4566, LocalStack on
# 127.0.0.1:4567. Everything lives under the git-ignored .emulator/ folder: one venv per emulator
# (reused on re-runs), a PID file, a log, and LocalStack's state directory.
#
# Environment overrides (all optional):
#   ITK3_MINISTACK_PORT / ITK3_LOCALSTACK_PORT   ports (4566 / 4567)
#   ITK3_MINISTACK_VERSION                       ministack pin (fallback 1.4.21 if 1.5.33 regresses)
#   ITK3_EMULATOR_HEALTH_SECONDS                 health wait bound (30 ministack, 120 LocalStack)
#   ITK3_EMULATOR_SMOKE=0                        skip the capability smoke test after start
set -euo pipefail

# --- pins: one variable each ------------------------------------------------------------------------
MINISTACK_VERSION="${ITK3_MINISTACK_VERSION:-1.5.33}" # fallback pin: 1.4.21
MINISTACK_EXTRAS=("cryptography>=43" "cbor2>=5.4")    # cryptography: RSA/ECC KMS keys; cbor2: CloudWatch
LOCALSTACK_VERSION="4.14.0"                            # last token-free localstack-core
LOCALSTACK_PYTHON="3.13.0"                             # pyenv interpreter; 4.14.0 needs Python >= 3.12
LOCALSTACK_CONSTRAINTS="scripts/lib/localstack-constraints.txt" # its dependencies moved on since it was archived

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EMU_DIR="$ROOT/.emulator"

usage() {
  echo "usage: $0 start|stop|status [ministack|localstack]" >&2
  exit 2
}

ACTION="${1:-}"
NAME="${2:-ministack}"
[[ "$ACTION" =~ ^(start|stop|status)$ ]] || usage

case "$NAME" in
  ministack)
    PORT="${ITK3_MINISTACK_PORT:-4566}"
    VENV="$EMU_DIR/ministack-venv"
    PIN="ministack==$MINISTACK_VERSION"
    HEALTH_PATH="/_ministack/health"
    HEALTH_SECONDS="${ITK3_EMULATOR_HEALTH_SECONDS:-30}"
    ;;
  localstack)
    PORT="${ITK3_LOCALSTACK_PORT:-4567}"
    VENV="$EMU_DIR/localstack-venv"
    PIN="localstack-core[runtime]==$LOCALSTACK_VERSION"
    HEALTH_PATH="/_localstack/health"
    # First start compiles and loads the providers; 2 cores are slow at it.
    HEALTH_SECONDS="${ITK3_EMULATOR_HEALTH_SECONDS:-120}"
    ;;
  *) usage ;;
esac

PID_FILE="$EMU_DIR/$NAME.pid"
PORT_FILE="$EMU_DIR/$NAME.port" # the port the running process was started on
LOG_FILE="$EMU_DIR/$NAME.log"
STAMP="$VENV/.itk3-pin" # what was installed, so a changed pin reinstalls and an unchanged one is reused

log() { echo "[emulator:$NAME] $*"; }

# Is the PID in the file alive and really our emulator (not a recycled PID)?
running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$VENV" || return 1
  echo "$pid"
}

# A running emulator keeps the port it was started on, whatever the environment says now.
if [[ -f "$PORT_FILE" && -f "$PID_FILE" ]] && running_pid >/dev/null; then
  RUNNING_PORT="$(cat "$PORT_FILE")"
  if [[ "$ACTION" == start && "$RUNNING_PORT" != "$PORT" ]]; then
    echo "[emulator:$NAME] already running on port $RUNNING_PORT (pid $(cat "$PID_FILE")); stop it before using port $PORT" >&2
    exit 1
  fi
  PORT="$RUNNING_PORT"
fi
ENDPOINT="http://127.0.0.1:$PORT"

healthy() {
  case "$NAME" in
    ministack)
      curl -fsS --max-time 2 "$ENDPOINT$HEALTH_PATH" >/dev/null 2>&1
      ;;
    localstack)
      # Ready only when the init stages completed; health alone answers earlier.
      curl -fsS --max-time 2 "$ENDPOINT/_localstack/init/ready" 2>/dev/null | grep -q '"completed": *true' &&
        curl -fsS --max-time 2 "$ENDPOINT$HEALTH_PATH" >/dev/null 2>&1
      ;;
  esac
}

port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

python_for_venv() {
  case "$NAME" in
    ministack) command -v python3 ;;
    localstack)
      if command -v pyenv >/dev/null 2>&1 && pyenv versions --bare 2>/dev/null | grep -qx "$LOCALSTACK_PYTHON"; then
        echo "$(pyenv root)/versions/$LOCALSTACK_PYTHON/bin/python"
      elif command -v "python${LOCALSTACK_PYTHON%.*}" >/dev/null 2>&1; then
        command -v "python${LOCALSTACK_PYTHON%.*}"
      else
        echo "LocalStack $LOCALSTACK_VERSION needs Python >= 3.12: install pyenv $LOCALSTACK_PYTHON or python3.13" >&2
        return 1
      fi
      ;;
  esac
}

ensure_venv() {
  local want
  want="$PIN ${MINISTACK_EXTRAS[*]}"
  [[ "$NAME" == localstack ]] && want="$PIN $(sha256sum "$ROOT/$LOCALSTACK_CONSTRAINTS" | cut -c1-12)"
  if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    log "reusing $VENV ($want)"
    return
  fi
  local py started
  py="$(python_for_venv)"
  log "installing $want into $VENV with $("$py" --version 2>&1)"
  started=$(date +%s)
  mkdir -p "$EMU_DIR"
  [[ -x "$VENV/bin/python" ]] || "$py" -m venv "$VENV"
  local pkgs=("$PIN")
  [[ "$NAME" == ministack ]] && pkgs+=("${MINISTACK_EXTRAS[@]}")
  [[ "$NAME" == localstack ]] && pkgs+=(-c "$ROOT/$LOCALSTACK_CONSTRAINTS")
  # pip's output goes to a file (it warns about every missing local index); shown when it fails.
  if ! "$VENV/bin/pip" install "${pkgs[@]}" >"$EMU_DIR/$NAME-install.log" 2>&1; then
    tail -n 40 "$EMU_DIR/$NAME-install.log" >&2
    echo "[emulator:$NAME] pip install failed; full log in $EMU_DIR/$NAME-install.log" >&2
    exit 1
  fi
  echo "$want" >"$STAMP"
  log "installed in $(($(date +%s) - started)) s ($(du -sm "$VENV" | cut -f1) MB on disk)"
}

start_process() {
  : >"$LOG_FILE"
  case "$NAME" in
    ministack)
      # IOT_MTLS_ENABLED=0: otherwise an MQTT/TLS listener opens on 0.0.0.0:8883 whatever BIND_HOST says.
      env BIND_HOST=127.0.0.1 GATEWAY_PORT="$PORT" EDGE_PORT="$PORT" \
        IOT_MTLS_ENABLED=0 SFTP_ENABLED=0 \
        MINISTACK_REGION=us-east-1 MINISTACK_ACCOUNT_ID=000000000000 LAMBDA_EXECUTOR=local \
        setsid "$VENV/bin/ministack" >>"$LOG_FILE" 2>&1 </dev/null &
      ;;
    localstack)
      mkdir -p "$EMU_DIR/localstack-fs"
      # OVERRIDE_IN_DOCKER=0 and DNS_ADDRESS=0: inside a container LocalStack would otherwise bind
      # 0.0.0.0 and start a DNS server that rewrites the system resolver to point at itself.
      # SQS_ENDPOINT_STRATEGY=path: queue URLs on 127.0.0.1, which the SDK sends SQS calls to.
      # GATEWAY_SERVER=hypercorn: the default twisted server ignores the host of GATEWAY_LISTEN and
      # binds 0.0.0.0 (runtime/server/twisted.py, "TODO: interface = host?").
      env OVERRIDE_IN_DOCKER=0 DNS_ADDRESS=0 GATEWAY_SERVER=hypercorn \
        GATEWAY_LISTEN="127.0.0.1:$PORT" LOCALSTACK_HOST="127.0.0.1:$PORT" \
        SQS_ENDPOINT_STRATEGY=path FILESYSTEM_ROOT="$EMU_DIR/localstack-fs" \
        SKIP_SSL_CERT_DOWNLOAD=1 DISABLE_EVENTS=1 SQS_DISABLE_CLOUDWATCH_METRICS=1 \
        SERVICES=sqs,kms,s3,iam,sts,ssm,cloudformation EAGER_SERVICE_LOADING=1 \
        setsid "$VENV/bin/python" -m localstack.runtime.main >>"$LOG_FILE" 2>&1 </dev/null &
      ;;
  esac
  echo $! >"$PID_FILE"
  echo "$PORT" >"$PORT_FILE"
}

# Resident memory of the emulator's process group (it may fork workers).
memory_mb() {
  local pid="$1" kb
  kb=$(ps -o rss= -g "$pid" 2>/dev/null | awk '{s+=$1} END {print s+0}')
  echo $((kb / 1024))
}

run_smoke() {
  if [[ "${ITK3_EMULATOR_SMOKE:-1}" == 0 ]]; then
    log "smoke test skipped (ITK3_EMULATOR_SMOKE=0)"
    return
  fi
  local flags=()
  # LocalStack host mode downloads Java and DynamoDB Local on first DynamoDB use: no DynamoDB offline.
  [[ "$NAME" == localstack ]] && flags+=(--no-dynamodb)
  # The SDK warns once per process that its 2027 releases need Node 22: known, and noise here.
  (cd "$ROOT" && AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=true npx tsx scripts/emulator-smoke.ts "$ENDPOINT" "${flags[@]}")
}

# Poll health until it answers, the process dies, or the bound passes. Returns 0 healthy, 1 died,
# 2 timed out.
wait_healthy() {
  local pid="$1" deadline=$(($(date +%s) + HEALTH_SECONDS))
  until healthy; do
    kill -0 "$pid" 2>/dev/null || return 1
    (($(date +%s) < deadline)) || return 2
    sleep 0.25
  done
}

cmd_start() {
  local pid
  if pid="$(running_pid)"; then
    # Never kill a running emulator from start: it may be busy serving someone's tests.
    if wait_healthy "$pid"; then
      log "already running (pid $pid) at $ENDPOINT"
      run_smoke
      return
    fi
    echo "[emulator:$NAME] pid $pid is running but not healthy at $ENDPOINT; log tail follows. Stop it first." >&2
    tail -n 40 "$LOG_FILE" >&2
    exit 1
  fi
  if port_busy; then
    echo "[emulator:$NAME] port $PORT on 127.0.0.1 is taken by another process; set ITK3_${NAME^^}_PORT" >&2
    exit 1
  fi
  ensure_venv
  local started_ms
  started_ms=$(date +%s%3N)
  start_process
  pid="$(cat "$PID_FILE")"
  log "started pid $pid, waiting up to ${HEALTH_SECONDS} s for $ENDPOINT$HEALTH_PATH"
  local outcome=0
  wait_healthy "$pid" || outcome=$?
  if ((outcome == 1)); then
    echo "[emulator:$NAME] process $pid exited before becoming healthy; log follows" >&2
    cat "$LOG_FILE" >&2
    rm -f "$PID_FILE" "$PORT_FILE"
    exit 1
  elif ((outcome == 2)); then
    echo "[emulator:$NAME] not healthy after ${HEALTH_SECONDS} s; log follows" >&2
    cat "$LOG_FILE" >&2
    cmd_stop
    exit 1
  fi
  log "healthy after $(($(date +%s%3N) - started_ms)) ms, $(memory_mb "$pid") MB resident"
  run_smoke
}

cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    log "not running"
    rm -f "$PID_FILE" "$PORT_FILE"
    return
  fi
  # setsid made the emulator a process-group leader: the group is exactly what start launched
  # (the emulator and any Lambda workers it forked), nothing else.
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid ignored SIGTERM for 10 s; sending SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE" "$PORT_FILE"
  log "stopped pid $pid"
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    if healthy; then
      log "running (pid $pid) and healthy at $ENDPOINT, $(memory_mb "$pid") MB resident"
    else
      log "running (pid $pid) at $ENDPOINT but not healthy"
      exit 1
    fi
  else
    log "not running"
    exit 3
  fi
}

"cmd_$ACTION"
