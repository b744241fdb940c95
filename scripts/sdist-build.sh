#!/usr/bin/env bash
# Builds a wheel from the sdist in a temporary folder, as pip does for a user without a wheel for
# their platform (needs Rust; a full release build, so CI does not run it), then imports it.
#   scripts/sdist-build.sh dist/tornsession-X.tar.gz
set -euo pipefail
sdist=$(realpath "$1")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --upgrade pip
(cd "$work" && "$work/venv/bin/pip" wheel --no-deps -w "$work/wheels" "$sdist")
"$work/venv/bin/pip" install --quiet "$work"/wheels/tornsession-*.whl
(cd "$work" && "$work/venv/bin/python" -c \
  'import tornsession; m = tornsession.SessionManager("s"); print("sdist build OK:", tornsession.__version__, type(m.get()).__name__)')
ls -l "$work"/wheels/
