#!/usr/bin/env bash
# One command for the benchmarks: python -m bench.run with the repo's .venv (made and built
# when missing). Arguments go to bench.run: --quick, --scale, --rounds N, --seconds N, ...
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet -r requirements-dev.txt
fi
if ! "$VENV/bin/python" -c "import tornsession" 2>/dev/null; then
  VIRTUAL_ENV="$PWD/$VENV" "$VENV/bin/maturin" develop --release --quiet
fi
exec "$VENV/bin/python" -m bench.run "$@"
