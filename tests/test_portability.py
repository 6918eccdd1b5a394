"""The native builds run on every x86-64 CPU of the project's kind, not only on the build machine.

`make setup` compiles llama.cpp from source. A build that picked up the build machine's AVX-512 or
AMX (GGML_NATIVE, -march=native) crashes with SIGILL on an AVX2-only EPYC, and the AMX repack path
crashed decoding on a Xeon. These tests read the installed libraries themselves, so a wheel built
with other flags (a cached one, a hand-made one) fails here, on any machine, before it reaches one
where it would crash.
"""

import hashlib
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

# x86 registers and instructions that exist only with AVX-512 (zmm, opmask k0-k7) or AMX (tiles)
AVX512_OR_AMX = re.compile(r"%zmm\d|\{%k[1-7]\}|\b(ldtilecfg|tileloadd|tdpb[su][su]d|tdpbf16ps|tilezero)\b")


def llama_libs() -> list[Path]:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.origin:
        pytest.skip("llama-cpp-python is not installed")
    root = Path(spec.origin).parent
    libs = sorted(p for p in root.rglob("*.so*") if p.is_file())
    assert libs, f"no native libraries found under {root}"
    # libllama.so, .so.0 and .so.0.5.0 are often three copies of one file, not links: each is read once
    distinct: dict[bytes, Path] = {}
    for lib in libs:
        distinct.setdefault(hashlib.sha256(lib.read_bytes()).digest(), lib)
    return sorted(distinct.values())


def offending_instructions(lib: Path, limit: int = 5) -> list[str]:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    out = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True,
                         check=True).stdout
    if not any(part in out for part in ("zmm", "%k", "ldtilecfg", "tileloadd", "tilezero", "tdpb")):  # no line can match
        return []
    hits = []
    for line in out.splitlines():
        if AVX512_OR_AMX.search(line):
            hits.append(line.strip())
            if len(hits) >= limit:
                break
    return hits


@pytest.mark.skipif(not re.match(r"x86_64|amd64", __import__("platform").machine().lower()), reason="x86-64 only")
def test_llama_cpp_contains_no_avx512_or_amx_code():
    found = {lib.name: offending_instructions(lib) for lib in llama_libs()}
    bad = {name: hits for name, hits in found.items() if hits}
    assert not bad, ("llama.cpp was built for this machine, not for every x86-64 CPU of the kind "
                     f"(rebuild with `make setup`; flags in scripts/llama-cmake-args.sh): {bad}")


def test_llama_cpp_reports_the_portable_feature_set():
    pytest.importorskip("llama_cpp")
    from guide.llm_server import system_info

    info = system_info()
    if "x86" not in info.lower() and "AVX" not in info:
        pytest.skip(f"not an x86 build: {info}")
    assert "AVX2 = 1" in info, info
    for feature in ("AVX512 = 1", "AMX_INT8 = 1", "AVX512_BF16 = 1"):
        assert feature not in info, info


def test_the_self_check_decodes_without_repacking_too():
    """The fallback the supervisor uses if a decode crashes: llama.cpp's model params can skip repacking."""
    llama_cpp = pytest.importorskip("llama_cpp")
    params = llama_cpp.llama_model_default_params()
    assert hasattr(params, "use_extra_bufts"), "llama-cpp-python no longer exposes use_extra_bufts"


def test_measurements_name_the_vector_instruction_sets_they_ran_on():
    from guide.evaluate import machine_description, simd_flags

    assert simd_flags(frozenset({"sse2", "avx2", "fma", "amx_tile", "avx512f"})) == "avx2 fma avx512f amx_tile"
    if "x86" in __import__("platform").machine() or "amd64" in __import__("platform").machine().lower():
        assert "avx2" in machine_description()
