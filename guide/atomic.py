"""Atomic build folders: how the text index (retrieval.py) and the photo index (photo_index.py) are saved.

An index lives in a folder holding one or more builds and a pointer:

    folder/CURRENT                  the name of the build in use (one line)
    folder/build-<hash>-<ms>/       a complete build: its files and manifest.json

`publish_build` writes a new build into a temporary `.build-*` folder, records every file's size
(and sha256) in its manifest, renames the folder into place and then switches CURRENT with one
atomic rename: a crash at any point leaves the previous build in use, and a reader never sees a
half-written one. Older builds and crashed leftovers are removed afterwards. `verify_files` lets a
loader refuse a build whose files were truncated or changed since.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .models import sha256_file

__all__ = ["HASH_BYTES", "publish_build", "current_build", "read_current_manifest", "file_records", "verify_files"]

log = logging.getLogger(__name__)

HASH_BYTES = 64 * 1024 * 1024  # index files up to this size get a sha256 in the manifest (all get their size)


def file_records(folder: Path) -> dict[str, dict]:
    """Size (and sha256, for files up to HASH_BYTES) of every file in a build folder, for the manifest."""
    out = {}
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name != "manifest.json"):
        size = path.stat().st_size
        out[path.name] = {"bytes": size, **({"sha256": sha256_file(path)} if size <= HASH_BYTES else {})}
    return out


def verify_files(folder: Path, records: dict | None) -> None:
    """Raise ValueError when a file of a build is missing, truncated or changed since it was written.

    Builds written before the manifest listed its files (records None) are only checked for
    consistency by their loaders.
    """
    for name, rec in (records or {}).items():
        path = Path(folder) / name
        if not path.is_file():
            raise ValueError(f"{name} is missing")
        size = path.stat().st_size
        if size != rec.get("bytes"):
            raise ValueError(f"{name} is {size} bytes, {rec.get('bytes')} were written (truncated or damaged)")
        if rec.get("sha256") and sha256_file(path) != rec["sha256"]:
            raise ValueError(f"{name} changed since it was written (damaged)")


def publish_build(folder: Path, write: Callable[[Path], None], manifest: dict) -> Path:
    """Write a build with `write(build_folder)` and make it the folder's CURRENT one, atomically.

    `manifest` gets a "files" entry (file_records) and is written as the build's manifest.json;
    its "content_hash" names the build. Returns the published build folder. Only folders named
    build-* or .build-* (this function's own) are ever removed.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=".build-", dir=folder))
    try:
        write(build)
        manifest["files"] = file_records(build)
        (build / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        name = f"build-{manifest.get('content_hash', 'x')[:12]}-{int(time.time() * 1000)}"
        os.rename(build, folder / name)
        pointer = folder / ".CURRENT.tmp"
        pointer.write_text(name)
        os.replace(pointer, folder / "CURRENT")  # the switch is one atomic rename
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    for old in folder.iterdir():  # previous builds and crashed leftovers (other folders are not ours)
        if old.is_dir() and old.name != name and old.name.startswith(("build-", ".build-")):
            shutil.rmtree(old, ignore_errors=True)
    log.debug("published %s", folder / name)
    return folder / name


def current_build(folder: Path) -> Path:
    """The build folder CURRENT points to (OSError when there is none)."""
    folder = Path(folder)
    return folder / (folder / "CURRENT").read_text().strip()


def read_current_manifest(folder: Path) -> dict | None:
    """The manifest of the folder's current build, or None when there is none or it is unreadable."""
    try:
        return json.loads((current_build(folder) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
