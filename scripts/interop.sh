#!/usr/bin/env bash
# The Python interop sender's venv (scripts/interop/itk3_sender.py, test/interop/python-sender.test.ts).
#
#   bash scripts/interop.sh            install (once) and print the venv's python
#
# The sender is what an outside engineer writes from the docs alone, with jwcrypto (and the
# cryptography package under it) from PyPI. Everything lives under the git-ignored .interop/ folder;
# re-runs reuse the venv while its pins are unchanged. Then:
#   export ITK3_INTEROP_PYTHON="$(bash scripts/interop.sh | tail -n 1)"
set -euo pipefail

# --- pins (the whole closure, so a re-run installs the same bytes) --------------------------------
PINS=("jwcrypto==1.6.1" "cryptography==50.0.2" "cffi==2.1.1" "pycparser==3.12" "typing-extensions==4.16.0")

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INTEROP_DIR="$ROOT/.interop"
VENV="$INTEROP_DIR/venv"
STAMP="$VENV/.itk3-pin"

log() { echo "[interop] $*" >&2; }

want="${PINS[*]}"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  log "reusing $VENV ($want)"
else
  py="$(command -v python3)"
  log "installing $want into $VENV with $("$py" --version 2>&1)"
  started=$(date +%s)
  mkdir -p "$INTEROP_DIR"
  [[ -x "$VENV/bin/python" ]] || "$py" -m venv "$VENV"
  if ! "$VENV/bin/pip" install --disable-pip-version-check "${PINS[@]}" >"$INTEROP_DIR/install.log" 2>&1; then
    tail -n 40 "$INTEROP_DIR/install.log" >&2
    echo "[interop] pip install failed; full log in $INTEROP_DIR/install.log" >&2
    exit 1
  fi
  echo "$want" >"$STAMP"
  log "installed in $(($(date +%s) - started)) s"
fi
# The sender must import: a broken venv is reported here, not as a confusing test failure.
"$VENV/bin/python" -c 'import jwcrypto.jwe, jwcrypto.jws, jwcrypto.jwt' >/dev/null
echo "$VENV/bin/python"
