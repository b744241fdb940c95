#!/usr/bin/env bash
# Installs the built wheel into a fresh virtualenv and runs pytest there, with no Rust toolchain
# on PATH (the wheel must not need one), the Tornado given, and the wheel's own dependencies.
#
#   [PYTHON=python3.12] scripts/test-wheel-venv.sh VENV_DIR TORNADO_REQUIREMENT WHEEL [PYTEST_ARGS...]
# PYTHON is the interpreter the venv is made from (default python3); it must match the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$1 tornado_req=$2 wheel=$3
shift 3
[ -f "$wheel" ] || { echo "no wheel at '$wheel': run make wheel" >&2; exit 1; }

# The tag: a manylinux wheel (maturin's auditwheel-style check chose it), not a linux_x86_64 one.
case "$(basename "$wheel")" in
  *-manylinux_*.whl) ;;
  *) echo "not a manylinux wheel: $wheel" >&2; exit 1 ;;
esac

# PATH without any folder that holds cargo or rustc (rustup's ~/.cargo/bin, /usr/bin ...).
clean_path=""
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  [ -n "$d" ] || continue
  if [ -e "$d/cargo" ] || [ -e "$d/rustc" ]; then continue; fi
  clean_path="${clean_path:+$clean_path:}$d"
done
export PATH=$clean_path
unset CARGO_HOME RUSTUP_HOME
if command -v cargo >/dev/null || command -v rustc >/dev/null; then
  echo "cargo/rustc still on PATH" >&2; exit 1
fi

rm -rf "$venv"
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
# --only-binary tornsession: pip must take the wheel, never build tornsession from source.
# pytest-xdist (the version requirements-dev.txt asks for): the harness runs the tests in parallel;
# no test imports it.
xdist_req=$(grep -E '^pytest-xdist' requirements-dev.txt)
"$venv/bin/pip" install --quiet --only-binary tornsession "$wheel[test]" "$tornado_req" "$xdist_req"
"$venv/bin/pip" check
"$venv/bin/python" - <<'PY'
import tornado
import tornsession
print(f"tornsession {tornsession.__version__} from {tornsession.__file__}, Tornado {tornado.version}")
PY
# The repo's tests, against the installed package (pythonpath has tests/ and the root, where
# there is no tornsession to shadow it). scripts/ holds the Tornado 6.0 harness plugin, loaded
# through PYTEST_PLUGINS so the pytest runs that tests start in subprocesses load it too.
PYTHONPATH=$PWD/scripts PYTEST_PLUGINS=pytest_tornado_compat \
  "$venv/bin/pytest" -q -p no:cacheprovider "$@"
