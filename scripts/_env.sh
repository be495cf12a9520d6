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
      echo "parley: Node.js >= 18 (npm) is needed to build the web client" >&2
    fi
  fi
  echo "$want" > "$STAMP"
fi
# The web client's bundle (scripts/build-web.mjs into build/web/), rebuilt when
# a static source, the build script or the npm lock changed.
web_want="$(find static scripts/build-web.mjs package-lock.json -type f -print0 2>/dev/null \
  | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
if [ "$(cat build/web/.stamp 2>/dev/null)" != "$web_want" ]; then
  if command -v node >/dev/null 2>&1 && [ -d node_modules/esbuild ]; then
    node scripts/build-web.mjs
    echo "$web_want" > build/web/.stamp
  else
    echo "parley: Node.js >= 18 and \`npm ci\` are needed to build the web client" >&2
  fi
fi
export PATH="$VENV/bin:$PATH"
mkdir -p "$ROOT/var"
