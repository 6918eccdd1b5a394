"""A tour's reference photos and their index: global vectors in FAISS and SIFT features per photo,
saved as an atomic build folder (atomic.py) under index_root/_photos/<tour>/<recognizer>/ and rebuilt
when the photos, the model or the feature settings change; `add_photos` files new reference photos.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from .atomic import current_build, publish_build, read_current_manifest, verify_files
from .errors import GuideError
from .image_io import load_image
from .models import sha256_file
from .photo_features import LocalFeatures, features_key
from .photo_features import extract_features as _extract_features
from .tours import Tour

if TYPE_CHECKING:
    from .image_embedders import ImageEmbedder
    from .vision import VisionOptions

__all__ = ["ReferencePhoto", "PhotoIndex", "list_photos", "photo_index_folder", "ensure_photo_index", "add_photos"]

log = logging.getLogger(__name__)

MMAP_BYTES = 512 * 1024 * 1024  # photo-index descriptors larger than this are memory-mapped, not read
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
FORMAT_VERSION = 1  # bump when features or the on-disk layout change: old photo indexes become stale
PHOTO_INDEX_DIR = "_photos"  # index_root/_photos/<tour>/<recognizer>/ ('_' never starts a tour id)


@dataclass(frozen=True)
class ReferencePhoto:
    attraction: str
    file: str  # path relative to the tour folder (or absolute, for photos outside a tour)
    sha256: str


def list_photos(tour: Tour) -> list[tuple[str, Path]]:
    """(attraction id, path) of every reference photo of the tour, sorted; unknown attraction folders are skipped."""
    root = tour.folder / "photos"
    if not root.is_dir():
        return []
    known = {a.id for a in tour.attractions}
    out: list[tuple[str, Path]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name not in known:
            log.warning("%s: no attraction %r in tour %s; its photos are ignored", folder, folder.name, tour.id)
            continue
        out += [(folder.name, p) for p in sorted(folder.iterdir())
                if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES and not p.name.startswith(".")]
    return out


def _features_key(options: VisionOptions, local: bool) -> str:
    if not local:
        return "none"
    return f"{features_key(options)}/gem{options.global_side}"


class PhotoIndex:
    """Reference photos: global vectors in a FAISS inner-product index, and SIFT features per photo."""

    def __init__(self, photos: list[ReferencePhoto], vectors: np.ndarray, *, keypoints: np.ndarray | None = None,
                 descriptors: np.ndarray | None = None, offsets: np.ndarray | None = None,
                 shapes: np.ndarray | None = None, manifest: dict | None = None):
        import faiss

        self.photos = photos
        dim = int((manifest or {}).get("dim") or (np.shape(vectors)[-1] if np.ndim(vectors) == 2 else 1))
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(photos), dim)
        self.dense = faiss.IndexFlatIP(dim)
        if len(photos):
            self.dense.add(self.vectors)
        self._kp, self._desc, self._offsets, self._shapes = keypoints, descriptors, offsets, shapes
        self.manifest = dict(manifest or {})

    def __len__(self) -> int:
        return len(self.photos)

    @property
    def has_local(self) -> bool:
        return self._offsets is not None

    @classmethod
    def from_features(cls, photos: list[ReferencePhoto], vectors: np.ndarray, local: list[LocalFeatures] | None,
                      manifest: dict | None = None) -> PhotoIndex:
        """An in-memory index from features already computed (evaluation, benchmarks)."""
        if local is None:
            return cls(photos, vectors, manifest=manifest)
        counts = [len(f) for f in local]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        kp = np.concatenate([f.keypoints for f in local]) if local else np.zeros((0, 4), np.float32)
        desc = np.concatenate([f.descriptors for f in local]) if local else np.zeros((0, 128), np.uint8)
        shapes = np.array([f.shape for f in local], dtype=np.int32).reshape(-1, 2)
        return cls(photos, vectors, keypoints=kp, descriptors=desc, offsets=offsets, shapes=shapes, manifest=manifest)

    def local(self, i: int) -> LocalFeatures:
        lo, hi = int(self._offsets[i]), int(self._offsets[i + 1])
        return LocalFeatures(np.asarray(self._kp[lo:hi]), np.asarray(self._desc[lo:hi]),
                             (int(self._shapes[i][0]), int(self._shapes[i][1])))

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The k nearest reference photos by cosine: [(photo number, similarity)], best first."""
        k = min(k, len(self.photos))
        if k <= 0:
            return []
        sims, ids = self.dense.search(np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32), k)
        return [(int(i), float(s)) for i, s in zip(ids[0], sims[0]) if i >= 0]

    def save(self, folder: Path) -> None:
        """Write atomically (atomic.publish_build): a build folder, then one rename of the CURRENT pointer."""
        import faiss

        def write(build: Path) -> None:
            faiss.write_index(self.dense, str(build / "global.faiss"))
            with open(build / "photos.jsonl", "w", encoding="utf-8") as f:
                for p in self.photos:
                    f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")
            if self.has_local:
                np.save(build / "keypoints.npy", np.asarray(self._kp, dtype=np.float32))
                np.save(build / "descriptors.npy", np.asarray(self._desc, dtype=np.uint8))
                np.save(build / "offsets.npy", np.asarray(self._offsets, dtype=np.int64))
                np.save(build / "shapes.npy", np.asarray(self._shapes, dtype=np.int32))

        publish_build(folder, write, self.manifest)

    @classmethod
    def load(cls, folder: Path) -> PhotoIndex:
        import faiss

        current = current_build(folder)
        manifest = json.loads((current / "manifest.json").read_text())
        verify_files(current, manifest.get("files"))
        with open(current / "photos.jsonl", encoding="utf-8") as f:
            photos = [ReferencePhoto(**json.loads(line)) for line in f if line.strip()]
        dense = faiss.read_index(str(current / "global.faiss"))
        if dense.ntotal != len(photos) or manifest.get("n_photos", len(photos)) != len(photos):
            raise ValueError(f"photos.jsonl lists {len(photos)} photos, global.faiss holds {dense.ntotal}")
        vectors = dense.reconstruct_n(0, dense.ntotal) if dense.ntotal else np.zeros((0, dense.d), np.float32)
        local = {}
        if (current / "offsets.npy").is_file():
            # Read into memory: a file truncated on disk while it is mapped would kill the process (SIGBUS).
            # Only descriptors too large to hold are mapped (rebuilds write new files, never these).
            big = (current / "descriptors.npy").stat().st_size > MMAP_BYTES
            local = dict(keypoints=np.load(current / "keypoints.npy"),
                         descriptors=np.load(current / "descriptors.npy", mmap_mode="r" if big else None),
                         offsets=np.load(current / "offsets.npy"), shapes=np.load(current / "shapes.npy"))
            offsets = local["offsets"]
            if (len(offsets) != len(photos) + 1 or len(local["shapes"]) != len(photos)
                    or int(offsets[-1]) != len(local["keypoints"]) or int(offsets[-1]) != len(local["descriptors"])):
                raise ValueError("the local-feature files of the photo index disagree on their sizes")
        return cls(photos, vectors, manifest=manifest, **local)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "default"


def photo_index_folder(index_root: Path, tour: Tour, recognizer: str) -> Path:
    """Where a tour's photo index lives: index_root/_photos/<tour>/<recognizer>/.

    Not inside index_root/<tour>/: the text index's save() clears every other folder there.
    """
    return Path(index_root) / PHOTO_INDEX_DIR / tour.id / _slug(recognizer)


def _photos_hash(embedder: ImageEmbedder, features: str, entries: list[tuple[str, Path, str]]) -> str:
    h = hashlib.sha256(f"{FORMAT_VERSION}\0{embedder.name}\0{embedder.dim}\0{features}".encode())
    for attraction, path, sha in entries:
        h.update(f"\0{attraction}/{path.name}\0{sha}".encode())
    return h.hexdigest()


def _versions() -> dict:
    import faiss

    from . import __version__

    out = {"guide": __version__, "faiss": faiss.__version__, "numpy": np.__version__}
    try:
        import cv2

        out["opencv"] = cv2.__version__
    except ImportError:
        pass
    return out


def _features_for(images_or_paths, embedder: ImageEmbedder, options: VisionOptions, local: bool,
                  progress: bool, desc: str):
    """Global vectors and local features of photos; unreadable ones are skipped (index list returned)."""
    kept, vectors, feats = [], [], []
    for n, item in enumerate(tqdm(images_or_paths, desc=desc, unit="photo", disable=not progress)):
        try:
            image = load_image(item)
        except GuideError as e:
            log.warning("reference photo %s skipped: %s", item, e)
            continue
        vectors.append(embedder.embed_images([image])[0])
        feats.append(_extract_features(image, options) if local else None)
        kept.append(n)
    vectors = np.stack(vectors) if vectors else np.zeros((0, embedder.dim), np.float32)
    return kept, vectors, (feats if local else None)


def ensure_photo_index(tour: Tour, embedder: ImageEmbedder, index_root: Path, *, recognizer: str,
                       options: VisionOptions, local: bool = True, progress: bool = True) -> PhotoIndex:
    """Load the tour's photo index, rebuilding it when photos, model or features changed."""
    folder = photo_index_folder(index_root, tour, recognizer)
    photos = list_photos(tour)
    entries = [(a, p, sha256_file(p)) for a, p in photos]
    features = _features_key(options, local)
    content_hash = _photos_hash(embedder, features, entries)
    manifest = read_current_manifest(folder)
    if manifest and manifest.get("content_hash") == content_hash:
        try:
            return PhotoIndex.load(folder)
        except Exception as e:  # a damaged build is rebuilt, not fatal
            log.warning("photo index %s unreadable (%s); rebuilding", folder, e)
    elif manifest:
        log.info("photo index %s is stale (photos, model or features changed); rebuilding", folder)
    t0 = time.perf_counter()
    kept, vectors, feats = _features_for([p for _, p, _ in entries], embedder, options, local, progress,
                                         f"indexing {tour.id} photos")
    refs = []
    for n in kept:
        a, p, sha = entries[n]
        try:
            rel = str(p.relative_to(tour.folder))
        except ValueError:
            rel = str(p)
        refs.append(ReferencePhoto(a, rel, sha))
    manifest = {
        "tour": tour.id,
        "recognizer": recognizer,
        "model": embedder.name,
        "dim": embedder.dim,
        "local_features": features,
        "content_hash": content_hash,
        "format_version": FORMAT_VERSION,
        "n_photos": len(refs),
        "photos_per_attraction": dict(Counter(r.attraction for r in refs)),
        "skipped": [str(entries[n][1]) for n in range(len(entries)) if n not in set(kept)],
        "versions": _versions(),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    index = PhotoIndex.from_features(refs, vectors, feats, manifest)
    index.save(folder)
    log.info("indexed %d reference photos of tour %s in %.1f s", len(refs), tour.id, time.perf_counter() - t0)
    return index


# ----------------------------------------------------------------------------------------------
# Adding reference photos

_KEEP_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}


def add_photos(tour: Tour, attraction_id: str, paths: list[Path]) -> list[Path]:
    """Copy photos into tours/<tour>/photos/<attraction>/, skipping any whose content is already there.

    JPEG, PNG and WebP files are copied byte for byte; other formats (HEIC, TIFF, BMP...) are
    stored as JPEG. Returns the paths of the photos added. Unreadable files raise GuideError.
    """
    from PIL import Image

    known = [a.id for a in tour.attractions]
    if attraction_id not in known:
        raise GuideError(f"tour {tour.id!r} has no attraction {attraction_id!r}; attractions: {', '.join(known)}")
    folder = tour.photos_dir(attraction_id)
    existing = {}
    for a, p in list_photos(tour):
        existing.setdefault(sha256_file(p), (a, p))
    added: list[Path] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise GuideError(f"{path}: no such file")
        data = path.read_bytes()
        try:
            load_image(data)  # readable, not truncated, big enough
        except GuideError as e:
            raise GuideError(f"{path}: {e}") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest in existing:
            a, p = existing[digest]
            if a == attraction_id:
                log.info("%s is already a reference photo (%s); skipped", path, p.name)
            else:
                log.warning("%s is already a reference photo of %s (%s); not added to %s", path, a, p.name,
                            attraction_id)
            continue
        fmt = Image.open(io.BytesIO(data)).format
        suffix = _KEEP_FORMATS.get(fmt, ".jpg")
        if fmt not in _KEEP_FORMATS:
            buffer = io.BytesIO()
            Image.fromarray(load_image(data, max_side=4096)).save(buffer, "JPEG", quality=92)
            data = buffer.getvalue()
        stem = re.sub(r"[^A-Za-z0-9_-]+", "-", path.stem).strip("-")[:40] or "photo"
        target = folder / f"{stem}-{digest[:10]}{suffix}"
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".add-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        existing[digest] = (attraction_id, target)
        added.append(target)
        log.info("added %s as %s", path, target.relative_to(tour.folder))
    return added
