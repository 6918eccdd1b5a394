#!/usr/bin/env bash
# Decode a few tokens with the installed llama.cpp on an emulated AVX2-only CPU (QEMU user mode,
# -cpu Haswell: no AVX-512, no AMX), to show the build runs on the oldest CPU of the project's kind.
# Needs Debian's qemu-user (apt-get install qemu-user). Takes a few minutes: everything is emulated.
# usage: scripts/check-portable.sh [PYTHON] [CPU]   (PYTHONPATH selects another build, see llama-speed.py)
set -euo pipefail
py=${1:-.venv/bin/python}
cpu=${2:-Haswell}
command -v qemu-x86_64 >/dev/null || { echo "qemu-x86_64 not found: apt-get install qemu-user" >&2; exit 2; }
model=$("$py" -c "from guide.config import load_config; from guide.models import assemble_pack; print(assemble_pack('qwen2.5-0.5b', load_config().cache_dir))")
qemu-x86_64 -cpu "$cpu" "$py" - "$model" 2> >(grep -v "TCG doesn't support" >&2) <<'PY'
import sys, time
t = time.time()
import llama_cpp
from llama_cpp import Llama
print(llama_cpp.llama_print_system_info().decode().strip(), flush=True)
llm = Llama(model_path=sys.argv[1], n_ctx=256, n_threads=2, verbose=False, seed=0)
out = llm.create_completion("The capital of France is", max_tokens=3, temperature=0)
print("decoded:", repr(out["choices"][0]["text"]), f"in {time.time() - t:.0f} s (emulated)", flush=True)
PY
