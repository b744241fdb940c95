#!/usr/bin/env bash
# The release build: one manylinux wheel per CPython version given, each from that interpreter
# on this machine (scripts/find-python.sh), written to OUT_DIR; prints the time and size of each.
#   scripts/build-wheels.sh OUT_DIR 3.10 3.11 3.12 3.13
# Per-version wheels, not abi3: a `dict` subclass (Session) needs PyO3's abi3 support for native
# base types, which starts at CPython 3.12 (see the README's "Building wheels").
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1
shift
maturin=${MATURIN:-.venv/bin/maturin}
for version in "$@"; do
  python=$(bash scripts/find-python.sh "$version")
  start=$(date +%s)
  "$maturin" build --release --quiet --interpreter "$python" -o "$out"
  tag="cp${version/./}"
  wheel=$(ls "$out"/tornsession-*-"$tag"-"$tag"-*.whl)
  echo "built $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB) with $python in $(( $(date +%s) - start )) s"
done
