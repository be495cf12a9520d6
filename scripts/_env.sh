# Shared set-up for scripts/serve, scripts/test and scripts/bench (sourced, not run).
# Creates .venv on first use, installs the locked dependencies and the npm
# packages, and skips all of it on later runs while the lock files are unchanged.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.parley-installed"
want="$( (cat requirements.lock pyproject.toml package-lock.json 2>/dev/null || true) | sha256sum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "parley: creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "parley: installing locked dependencies" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check uv
  "$VENV/bin/uv" pip sync -q --python "$VENV/bin/python" requirements.lock
  "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --no-deps -e .
  if [ -f package-lock.json ]; then
    if command -v npm >/dev/null 2>&1; then
      npm ci --silent --no-audit --no-fund
    else
      echo "parley: Node.js >= 18 (npm) is needed for the web client's socket.io-client" >&2
    fi
  fi
  echo "$want" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
mkdir -p "$ROOT/var"
