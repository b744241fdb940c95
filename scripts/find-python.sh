#!/usr/bin/env bash
# The path of a CPython X.Y interpreter on this machine, never downloaded: pyenv's newest X.Y.N
# (CI machines have the same pyenv set), else pythonX.Y on PATH. Fails when there is none.
#   scripts/find-python.sh 3.12
set -euo pipefail
version=$1
root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
# Only X.Y.N folders ("3.1" must not take 3.10, nor "3.13" a free-threaded 3.13.0t); sort -V
# puts 3.12.10 after 3.12.9.
found=$(for dir in "$root"/versions/"$version".*; do
  if [[ $(basename "$dir") =~ ^${version//./\\.}\.[0-9]+$ ]] && [ -x "$dir/bin/python$version" ]; then
    echo "$dir/bin/python$version"
  fi
done | sort -V | tail -n 1)
if [ -z "$found" ]; then
  found=$(command -v "python$version" || true)
fi
if [ -z "$found" ]; then
  echo "no CPython $version on this machine (pyenv install $version, or python$version on PATH)" >&2
  exit 1
fi
echo "$found"
