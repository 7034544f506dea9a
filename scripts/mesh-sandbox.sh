#!/usr/bin/env bash
# NHS England's MESH sandbox for tests and local runs, without Docker (docs/MESH.md).
#
#   scripts/mesh-sandbox.sh start    install (once), start on 127.0.0.1, wait for health
#   scripts/mesh-sandbox.sh stop     stop the process this script started
#   scripts/mesh-sandbox.sh status   running? healthy? where?
#   scripts/mesh-sandbox.sh install  install (once) only; `itk3 demo --mesh` starts its own sandbox
#
# Everything lives under the git-ignored .mesh/ folder: a venv with the sandbox and NHS England's
# Python mesh-client (the partner the integration tests send and receive with), reused on re-runs;
# the sandbox's file store; a PID file and a log. The sandbox checks the real NHSMESH HMAC header
# (AUTH_MODE=full) with the environment secret SHARED_KEY.
#
# Environment overrides (all optional):
#   ITK3_MESH_PORT             port (47701)
#   ITK3_MESH_SHARED_KEY       the sandbox's shared secret (TestKey; the tests use the same default)
#   ITK3_MESH_HEALTH_SECONDS   health wait bound (60)
#
# Then: export ITK3_MESH_SANDBOX=http://127.0.0.1:47701 and run the test/integration/mesh-* suites.
set -euo pipefail

# --- pins -------------------------------------------------------------------------------------------
PINS=("mesh-sandbox==1.0.137" "mesh-client==5.0.2")

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MESH_DIR="$ROOT/.mesh"
VENV="$MESH_DIR/venv"
STORE="$MESH_DIR/store"
PID_FILE="$MESH_DIR/sandbox.pid"
PORT_FILE="$MESH_DIR/sandbox.port"
LOG_FILE="$MESH_DIR/sandbox.log"
STAMP="$VENV/.itk3-pin"
PORT="${ITK3_MESH_PORT:-47701}"
SHARED_KEY="${ITK3_MESH_SHARED_KEY:-TestKey}"
HEALTH_SECONDS="${ITK3_MESH_HEALTH_SECONDS:-60}"

log() { echo "[mesh-sandbox] $*"; }

usage() {
  echo "usage: $0 start|stop|status|install" >&2
  exit 2
}
ACTION="${1:-}"
[[ "$ACTION" =~ ^(start|stop|status|install)$ ]] || usage

# Is the PID in the file alive and really our sandbox (not a recycled PID)?
running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$VENV" || return 1
  echo "$pid"
}

# A running sandbox keeps the port it was started on, whatever the environment says now.
if [[ -f "$PORT_FILE" ]] && running_pid >/dev/null; then
  RUNNING_PORT="$(cat "$PORT_FILE")"
  if [[ "$ACTION" == start && "$RUNNING_PORT" != "$PORT" ]]; then
    echo "[mesh-sandbox] already running on port $RUNNING_PORT (pid $(cat "$PID_FILE")); stop it before using port $PORT" >&2
    exit 1
  fi
  PORT="$RUNNING_PORT"
fi
ENDPOINT="http://127.0.0.1:$PORT"

# The sandbox's own health endpoint (no mailbox credentials needed).
healthy() {
  curl -fsS --max-time 2 "$ENDPOINT/health" >/dev/null 2>&1
}

port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

ensure_venv() {
  local want="${PINS[*]}"
  if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    log "reusing $VENV ($want)"
    return
  fi
  local py started
  py="$(command -v python3)"
  log "installing $want into $VENV with $("$py" --version 2>&1)"
  started=$(date +%s)
  mkdir -p "$MESH_DIR"
  [[ -x "$VENV/bin/python" ]] || "$py" -m venv "$VENV"
  if ! "$VENV/bin/pip" install "${PINS[@]}" >"$MESH_DIR/install.log" 2>&1; then
    tail -n 40 "$MESH_DIR/install.log" >&2
    echo "[mesh-sandbox] pip install failed; full log in $MESH_DIR/install.log" >&2
    exit 1
  fi
  echo "$want" >"$STAMP"
  log "installed in $(($(date +%s) - started)) s ($(du -sm "$VENV" | cut -f1) MB on disk)"
}

start_process() {
  mkdir -p "$STORE"
  : >"$LOG_FILE"
  # setsid: the sandbox leads its own process group, so stop ends exactly what start launched.
  env AUTH_MODE=full STORE_MODE=file MAILBOXES_DATA_DIR="$STORE" SHARED_KEY="$SHARED_KEY" \
    setsid "$VENV/bin/uvicorn" mesh_sandbox.api:app --host 127.0.0.1 --port "$PORT" \
    >>"$LOG_FILE" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  echo "$PORT" >"$PORT_FILE"
}

# Poll health until it answers, the process dies, or the bound passes. 0 healthy, 1 died, 2 timed out.
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
    if wait_healthy "$pid"; then
      log "already running (pid $pid) at $ENDPOINT"
      return
    fi
    echo "[mesh-sandbox] pid $pid is running but not healthy at $ENDPOINT; log tail follows. Stop it first." >&2
    tail -n 40 "$LOG_FILE" >&2
    exit 1
  fi
  if port_busy; then
    echo "[mesh-sandbox] port $PORT on 127.0.0.1 is taken by another process; set ITK3_MESH_PORT" >&2
    exit 1
  fi
  ensure_venv
  local started_ms outcome=0
  started_ms=$(date +%s%3N)
  start_process
  pid="$(cat "$PID_FILE")"
  log "started pid $pid, waiting up to ${HEALTH_SECONDS} s for $ENDPOINT/health"
  wait_healthy "$pid" || outcome=$?
  if ((outcome == 1)); then
    echo "[mesh-sandbox] process $pid exited before becoming healthy; log follows" >&2
    cat "$LOG_FILE" >&2
    rm -f "$PID_FILE" "$PORT_FILE"
    exit 1
  elif ((outcome == 2)); then
    echo "[mesh-sandbox] not healthy after ${HEALTH_SECONDS} s; log follows" >&2
    cat "$LOG_FILE" >&2
    cmd_stop
    exit 1
  fi
  log "healthy after $(($(date +%s%3N) - started_ms)) ms at $ENDPOINT (export ITK3_MESH_SANDBOX=$ENDPOINT)"
}

cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    log "not running"
    rm -f "$PID_FILE" "$PORT_FILE"
    return
  fi
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
      log "running (pid $pid) and healthy at $ENDPOINT"
    else
      log "running (pid $pid) at $ENDPOINT but not healthy"
      exit 1
    fi
  else
    log "not running"
    exit 3
  fi
}

cmd_install() {
  ensure_venv
}

"cmd_$ACTION"
