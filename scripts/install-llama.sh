#!/usr/bin/env bash
# Build llama-cpp-python (pinned in requirements-base.txt) for a portable target: scripts/llama-cmake-args.sh.
# Rebuilt only when the pinned version or the flags change (the flags are kept beside the venv), and
# never from pip's wheel cache: a wheel cached from other flags (a native build) must not come back.
# usage: install-llama.sh PYTHON "CMAKE FLAGS"
set -euo pipefail
py=$1
flags=$2
req=$(grep -E '^llama-cpp-python' requirements-base.txt | awk '{print $1}')
want="$req $flags"
stamp="$(dirname "$(dirname "$py")")/.llama-build"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$py" -c "import llama_cpp" 2>/dev/null; then
  exit 0
fi
echo "building $req with: $flags"
CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
  "$py" -m pip install --no-cache-dir --force-reinstall --no-deps "$req"
echo "$want" > "$stamp"
