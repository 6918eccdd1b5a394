#!/usr/bin/env python
"""Prompt and generation speed of the installed llama.cpp build on the offline 0.5B pack.

Measures what the flags in scripts/llama-cmake-args.sh cost: run it once with the portable build
(`make setup`) and once with another build first on the path, e.g. a native one:

    CMAKE_ARGS="-DGGML_NATIVE=ON" pip wheel --no-deps --no-cache-dir llama-cpp-python==0.3.36 -w /tmp/w
    pip install --no-deps --target /tmp/native /tmp/w/llama_cpp_python-*.whl
    PYTHONPATH=/tmp/native python scripts/llama-speed.py

Each row: llama.cpp's system info, repack on/off, prompt tokens/s (a 600-token guide-like prompt)
and generation tokens/s (64 tokens, greedy), best of `--repeat` runs.
"""

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-repack", action="store_true", help="also measure with llama.cpp's repacking off")
    args = ap.parse_args()
    from guide.config import load_config, usable_cores
    from guide.llm_server import _no_repack, system_info
    from guide.models import assemble_pack

    path = assemble_pack("qwen2.5-0.5b", load_config().cache_dir)
    import llama_cpp
    from llama_cpp import Llama

    prompt = ("The Eiffel Tower was built for the 1889 World's Fair on the Champ de Mars in Paris. " * 34)[:2600]
    n = usable_cores()
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    print(f"machine: {cpu}, {n} cores; llama-cpp-python {llama_cpp.__version__} from {Path(llama_cpp.__file__).parent}")
    print(f"system info: {system_info()}")
    print("| repack | prompt tokens | prompt tok/s | gen tok/s |")
    print("|---|---|---|---|")
    for repack in ([True, False] if args.no_repack else [True]):
        if not repack:
            _no_repack()
        llm = Llama(model_path=str(path), n_ctx=2048, n_threads=n, n_threads_batch=n, verbose=False, seed=0)
        tokens = llm.tokenize(prompt.encode())
        best_p = best_g = 0.0
        for _ in range(args.repeat):
            llm.reset()
            t = time.perf_counter()
            llm.eval(tokens)
            best_p = max(best_p, len(tokens) / (time.perf_counter() - t))
            t = time.perf_counter()
            out = llm.create_completion("Q: How tall is the Eiffel Tower?\nA:", max_tokens=64, temperature=0.0,
                                        seed=0)
            gen = out["usage"]["completion_tokens"]
            best_g = max(best_g, gen / (time.perf_counter() - t))
        print(f"| {'on' if repack else 'off'} | {len(tokens)} | {best_p:.0f} | {best_g:.1f} |")
        del llm


if __name__ == "__main__":
    main()
