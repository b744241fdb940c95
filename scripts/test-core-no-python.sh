#!/usr/bin/env bash
# Runs the core crate's tests (crates/core: every store, the lifecycle, the codecs) with no
# Python interpreter on PATH: the proof that the core needs none. Each PATH folder is mirrored
# into a temporary one of symlinks, leaving out python*, so cc, redis-server and memcached
# stay reachable.
#   scripts/test-core-no-python.sh [CARGO_TEST_ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
shadow=$(mktemp -d)
trap 'rm -rf "$shadow"' EXIT
clean_path=""
i=0
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  [ -d "$d" ] || continue
  i=$((i + 1))
  mkdir "$shadow/$i"
  for f in "$d"/*; do
    case "$(basename "$f")" in python*) continue ;; esac
    ln -s "$f" "$shadow/$i/" 2>/dev/null || true
  done
  clean_path="${clean_path:+$clean_path:}$shadow/$i"
done
cargo=$(command -v cargo)
PATH=$clean_path
if command -v python3 >/dev/null || command -v python >/dev/null; then
  echo "a python is still on PATH" >&2
  exit 1
fi
unset VIRTUAL_ENV PYO3_PYTHON PYTHONHOME
exec "$cargo" test -p tornsession-core "$@"
