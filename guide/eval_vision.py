"""Photo recognition on a labelled image folder: accuracy, open-set rejection, latency.

The folder is laid out like shared/data/dev/images: one subfolder per landmark and a labels.csv
(`file,label,...`, file relative to the folder).

`evaluate_vision` (leave-one-out, the old development number): landmarks with two or more photos
are "known": each of their photos in turn is the query, and every other photo of the known
landmarks is a reference. Landmarks with one photo are "unknown": queried against all the known
landmarks' photos, the right answer is "I don't recognise this place".

`evaluate_hard` (`python -m guide.eval_vision DIR --hard`): splits where query and reference
photos differ, as a visitor's photo differs from the tour's reference photos. Every photo of the
folder is a reference; the queries are made from them by cropping, scaling, rotation, a change of
viewpoint (perspective), colour and exposure changes, night-like darkening, partial occlusion and
mixtures of these (fixed seeds), and, in the `multiview` split, the landmarks that have several
photos give one as the reference and the others as queries. Each query is asked twice: with its
landmark among the references (it must be named) and with all its landmark's photos left out (it
must be rejected). A third of the one-photo landmarks (chosen by the seed) form the calibration
part: their queries are never reported, and `calibrate` sets the decision thresholds on them alone.
"""

from __future__ import annotations

import argparse
import csv
import logging
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .tours import Attraction, Tour
from .vision import (
    PhotoIndex,
    PhotoRecognizer,
    Query,
    ReferencePhoto,
    VisionOptions,
    extract_local_features,
    load_image,
)

__all__ = ["evaluate_vision", "evaluate_hard", "calibrate", "hard_query", "HARD_SPLITS", "bench_vision",
           "format_table", "dev_images_dir", "main"]

log = logging.getLogger(__name__)


def dev_images_dir() -> Path:
    """The shared dev images: $GUIDE_DEV_DATA/images, else ../shared/data/dev/images next to the project."""
    from .config import dev_data_dir

    return dev_data_dir() / "images"


def _read_photos(images_dir: Path) -> list[tuple[Path, str, str]]:
    """(path, landmark folder, label) per photo, from labels.csv or else from the subfolders."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"{images_dir}: no such folder (expected one subfolder per landmark)")
    labels = images_dir / "labels.csv"
    out = []
    if labels.is_file():
        with open(labels, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                path = images_dir / row["file"]
                if path.is_file():
                    out.append((path, Path(row["file"]).parts[0], row.get("label") or path.parent.name))
                else:
                    log.warning("%s: listed in labels.csv but missing", path)
    else:
        for folder in sorted(p for p in images_dir.iterdir() if p.is_dir()):
            out += [(p, folder.name, folder.name.replace("_", " ")) for p in sorted(folder.iterdir())
                    if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")]
    return sorted(out)


def _attraction_id(folder: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in folder.lower()).split()) or "x"


def _tour(images_dir: Path, photos: list[tuple[Path, str, str]]) -> Tour:
    """A stand-in tour whose attractions are the folder's landmarks (named by their labels)."""
    labels = {}
    for _, folder, label in photos:
        labels.setdefault(_attraction_id(folder), label)
    attractions = [Attraction(id=a, names={"en": [label]}, descriptions={"en": label}) for a, label in labels.items()]
    return Tour(id="eval-images", name={"en": "evaluation images"}, languages=["en"], attractions=attractions,
                path=Path(images_dir) / "tour.yaml", content_hash="")


def _embedder(recognizer: str, cache_dir: Path, device: str | None, options: VisionOptions):
    from .vision import EfficientNetLite0Embedder, _spec, load_clip

    spec = _spec(recognizer)
    if spec.clip is None:
        return EfficientNetLite0Embedder(cache_dir=cache_dir, device=device, side=options.global_side), spec, None
    clip = load_clip(spec.clip, device=device, cache_dir=cache_dir)
    return clip, spec, clip


def _default_cache() -> Path:
    from .config import load_config

    return load_config().cache_dir


def evaluate_vision(images_dir: str | Path, *, recognizer: str = "local-features", cache_dir: Path | None = None,
                    device: str | None = None, options: VisionOptions | None = None, details: list | None = None,
                    progress: bool = True) -> list[dict]:
    """Leave-one-out top-1 accuracy on known landmarks and rejection rate on unknown ones.

    Returns summary rows ({metric, value, n, target}) for format_table; per-query results are
    appended to `details` when a list is given.
    """
    options = options or VisionOptions()
    photos = _read_photos(Path(images_dir))
    counts = Counter(folder for _, folder, _ in photos)
    known = [i for i, (_, folder, _) in enumerate(photos) if counts[folder] >= 2]
    unknown = [i for i, (_, folder, _) in enumerate(photos) if counts[folder] == 1]
    if not known:
        raise ValueError(f"{images_dir}: no landmark has two or more photos; nothing to use as references")
    tour = _tour(Path(images_dir), photos)
    embedder, spec, text_model = _embedder(recognizer, Path(cache_dir or _default_cache()), device, options)

    # features once per photo: each is a query once and a reference in the other folds
    queries: list[Query] = []
    extract_s: list[float] = []
    for path, _, _ in tqdm(photos, desc="photo features", unit="photo", disable=not progress):
        t = time.perf_counter()
        image = load_image(path)
        vector = embedder.embed_images([image])[0]
        local = extract_local_features(image, options) if spec.local else None
        extract_s.append(time.perf_counter() - t)
        queries.append(Query(image, vector, local))
    refs = [ReferencePhoto(_attraction_id(photos[i][1]), str(photos[i][0]), "") for i in range(len(photos))]

    def recognizer_for(ref_ids: list[int]) -> PhotoRecognizer:
        local = [queries[i].local for i in ref_ids] if spec.local else None
        index = PhotoIndex.from_features([refs[i] for i in ref_ids], np.stack([queries[i].vector for i in ref_ids]),
                                         local)
        return PhotoRecognizer(recognizer, tour, embedder, index, options=options, local=spec.local,
                               text_model=text_model)

    results = []
    everyone = recognizer_for(known)
    for i in tqdm(known + unknown, desc="recognising", unit="photo", disable=not progress):
        is_known = counts[photos[i][1]] >= 2
        rec = recognizer_for([k for k in known if k != i]) if is_known else everyone
        t = time.perf_counter()
        ev = rec.evidence(queries[i])
        result = rec.decide(queries[i], ev)
        seconds = extract_s[i] + time.perf_counter() - t
        truth = refs[i].attraction
        inliers_true = ev.verified.get(truth, (None,))[0] if is_known else None
        others = [n for a, (n, _, _) in ev.verified.items() if a != truth]
        row = {
            "query": str(Path(photos[i][0]).relative_to(images_dir)),
            "truth": truth,
            "known": is_known,
            "predicted": result.attraction,
            "ranked_first": result.candidates[0][0] if result.candidates else None,
            "score": round(result.score, 3),
            "correct": (result.attraction == truth) if is_known else result.attraction is None,
            "inliers_true": inliers_true,
            "inliers_best_other": max(others, default=0),
            "seconds": round(seconds, 3),
            "why": result.why,
        }
        results.append(row)
        log.info("%s %s -> %s (%.2f) %s", "known  " if is_known else "unknown", row["query"], result.attraction,
                 result.score, result.why)
    if details is not None:
        details.extend(results)

    k_rows = [r for r in results if r["known"]]
    u_rows = [r for r in results if not r["known"]]
    true_inliers = [r["inliers_true"] for r in k_rows if r["inliers_true"] is not None]
    impostor = [r["inliers_best_other"] for r in results]
    latency = [r["seconds"] for r in results]
    rows = [
        {"metric": "top-1 accuracy, known landmarks (leave-one-out)", "value": _mean([r["correct"] for r in k_rows]),
         "n": len(k_rows), "target": ">= 0.90"},
        {"metric": "top-1 of the ranking alone (rejections ignored)",
         "value": _mean([r["ranked_first"] == r["truth"] for r in k_rows]), "n": len(k_rows), "target": ""},
        {"metric": "known landmark named wrongly", "value": sum(r["predicted"] not in (None, r["truth"])
                                                                 for r in k_rows), "n": len(k_rows), "target": "0"},
        {"metric": "rejection rate, landmarks without reference photos", "value": _mean([r["correct"] for r in u_rows]),
         "n": len(u_rows), "target": ">= 0.90"},
    ]
    if spec.local:
        rows += [
            {"metric": "verified inliers, weakest correct reference", "value": min(true_inliers, default=0),
             "n": len(true_inliers), "target": f">= min_inliers ({options.min_inliers})"},
            {"metric": "verified inliers, strongest wrong attraction", "value": max(impostor, default=0),
             "n": len(impostor), "target": f"< min_inliers ({options.min_inliers})"},
        ]
    rows += [
        {"metric": "latency per photo, mean s", "value": _mean(latency), "n": len(latency), "target": ""},
        {"metric": "latency per photo, max s", "value": max(latency, default=0.0), "n": len(latency), "target": ""},
    ]
    return rows


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else 0.0


def _augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible other photo of the same view: a crop, maybe mirrored, with changed light and colour."""
    from PIL import Image, ImageEnhance

    h, w = image.shape[:2]
    area = rng.uniform(0.55, 1.0)
    aspect = rng.uniform(0.8, 1.25)
    ch = int(min(h, round(h * np.sqrt(area * aspect))))
    cw = int(min(w, round(w * np.sqrt(area / aspect))))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    im = Image.fromarray(image[y : y + ch, x : x + cw])
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.7, 1.3))
    im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.7, 1.3))
    im = ImageEnhance.Color(im).enhance(rng.uniform(0.6, 1.4))
    a = np.asarray(im, dtype=np.float32) * rng.uniform(0.9, 1.1, size=3)  # white balance
    return np.clip(a, 0, 255).astype(np.uint8)


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def bench_vision(images_dir: str | Path | None = None, *, sizes: tuple[int, ...] = (10, 100, 1000),
                 queries: int = 10, recognizer: str = "local-features", cache_dir: Path | None = None,
                 device: str | None = None, options: VisionOptions | None = None, seed: int = 0,
                 progress: bool = True) -> list[dict]:
    """Recognition latency per photo against 10, 100 and 1,000 reference photos.

    References beyond the real photos are synthesised by augmenting them (crops, mirror images,
    brightness / contrast / colour changes); the query photos and their augmentations are never
    among the references. The index is saved and reloaded (memory-mapped) as in the app.
    """
    options = options or VisionOptions()
    images_dir = Path(images_dir) if images_dir else dev_images_dir()
    photos = _read_photos(images_dir)
    if len(photos) <= queries:
        raise ValueError(f"{images_dir}: need more than {queries} photos")
    step = len(photos) / queries
    query_ids = sorted({int(i * step) for i in range(queries)})
    pool = [i for i in range(len(photos)) if i not in query_ids]
    tour = _tour(images_dir, photos)
    embedder, spec, text_model = _embedder(recognizer, Path(cache_dir or _default_cache()), device, options)
    rng = np.random.default_rng(seed)
    pool_images = {i: load_image(photos[i][0]) for i in pool}

    refs, vectors, local, build_s = [], [], [], []
    for n in tqdm(range(max(sizes)), desc="reference photos", unit="photo", disable=not progress):
        src = pool[n % len(pool)]
        image = pool_images[src] if n < len(pool) else _augment(pool_images[src], rng)
        t = time.perf_counter()
        vectors.append(embedder.embed_images([image])[0])
        local.append(extract_local_features(image, options) if spec.local else None)
        build_s.append(time.perf_counter() - t)
        refs.append(ReferencePhoto(_attraction_id(photos[src][1]), f"synthetic/{n:04d}.jpg", ""))

    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench-vision-"))
    try:
        for size in sizes:
            index = PhotoIndex.from_features(refs[:size], np.stack(vectors[:size]),
                                             local[:size] if spec.local else None, {"content_hash": f"bench{size}"})
            index.save(work / str(size))
            index = PhotoIndex.load(work / str(size))
            rec = PhotoRecognizer(recognizer, tour, embedder, index, options=options, local=spec.local,
                                  text_model=text_model)
            rec.recognize(photos[query_ids[0]][0])  # warm-up
            times = []
            for q in tqdm(query_ids, desc=f"{size} references", unit="query", disable=not progress):
                t = time.perf_counter()
                rec.recognize(photos[q][0])
                times.append(time.perf_counter() - t)
            ms = np.array(times) * 1000
            rows.append({
                "reference photos": size,
                "indexing ms/photo": round(float(np.mean(build_s[:size])) * 1000, 1),
                "index MB": round(_folder_mb(work / str(size)), 1),
                "recognition ms, mean": round(float(ms.mean()), 1),
                "p50": round(float(np.percentile(ms, 50)), 1),
                "p95": round(float(np.percentile(ms, 95)), 1),
                "queries": len(times),
            })
            log.info("vision bench: %s", rows[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


# ----------------------------------------------------------------------------------------------
# Hard splits: queries that differ from the reference photos

HARD_SPLITS = ("crop", "scale", "rotation", "perspective", "colour", "night", "occlusion", "mixed", "multiview")
SYNTHETIC_SPLITS = HARD_SPLITS[:-1]
CALIBRATION_SHARE = 1 / 3  # of the one-photo landmarks: their queries calibrate, and are never reported


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    size = (max(16, round(w * scale)), max(16, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def _to_linear(image: np.ndarray) -> np.ndarray:
    return (np.asarray(image, dtype=np.float32) / 255.0) ** 2.2


def _from_linear(a: np.ndarray) -> np.ndarray:
    return (np.clip(a, 0, 1) ** (1 / 2.2) * 255 + 0.5).astype(np.uint8)


def _t_crop(image, rng, area=(0.2, 0.4)):
    """A part of the view around its middle (a visitor closer, or zoomed in)."""
    h, w = image.shape[:2]
    a, aspect = rng.uniform(*area), rng.uniform(0.75, 1.33)
    ch, cw = min(h, round(h * np.sqrt(a * aspect))), min(w, round(w * np.sqrt(a / aspect)))
    y = int(round((h - ch) / 2 + rng.uniform(-0.5, 0.5) * (h - ch)))
    x = int(round((w - cw) / 2 + rng.uniform(-0.5, 0.5) * (w - cw)))
    return image[y : y + ch, x : x + cw]


def _t_scale(image, rng, factor=(0.25, 0.45), min_side=128):
    """A smaller, softer photo (taken from farther away, or sent downsized)."""
    s = max(rng.uniform(*factor), min_side / max(image.shape[:2]))
    return _resize(image, min(s, 1.0))


def _t_rotation(image, rng, degrees=(15, 40)):
    """The camera tilted: rotated and zoomed just enough that no empty corner shows."""
    import cv2

    h, w = image.shape[:2]
    angle = rng.uniform(*degrees) * rng.choice([-1, 1])
    t = np.radians(abs(angle))
    zoom = np.cos(t) + np.sin(t) * max(w / h, h / w)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, zoom)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def _t_perspective(image, rng, amount=(0.18, 0.32)):
    """Another viewpoint, as far as one photo allows: a strong keystone to the left or right, foreshortened."""
    import cv2

    h, w = image.shape[:2]
    k, v = rng.uniform(*amount), rng.uniform(0, 0.1)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    if rng.random() < 0.5:  # the left edge farther away
        dst = np.float32([[0, k * h], [w, 0], [w, h], [0, h * (1 - k)]])
    else:
        dst = np.float32([[0, 0], [w, k * h], [w, h * (1 - k)], [0, h]])
    dst[:2, 1] += v * h  # tilted up
    dst[:, 0] = w / 2 + (dst[:, 0] - w / 2) * rng.uniform(0.6, 0.85)  # seen at an angle: narrower
    m = cv2.getPerspectiveTransform(src, dst)
    out = cv2.warpPerspective(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    x0, x1 = int(dst[:, 0].min()), int(np.ceil(dst[:, 0].max()))
    inset = int(round(k * h / 2))  # cut off most of the stretched border
    return out[inset : h - inset, x0:x1]


def _t_colour(image, rng):
    """Other light and another camera: exposure, white balance, saturation and contrast changed."""
    import cv2

    a = _to_linear(image) * 2 ** (rng.choice([-1, 1]) * rng.uniform(1.0, 2.0))  # exposure, EV
    a *= rng.uniform(0.65, 1.35, size=3)  # white balance
    out = _from_linear(a)
    hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-15, 15)) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.2, 1.8), 0, 255)
    out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    c = rng.uniform(0.5, 1.5)  # contrast around the mean
    return np.clip((out - out.mean()) * c + out.mean(), 0, 255).astype(np.uint8)


def _t_night(image, rng):
    """Dusk or night: 3.5-5.5 EV darker, bluish, sensor noise, a little blur."""
    import cv2

    a = _to_linear(image) * 2 ** -rng.uniform(3.5, 5.5)
    a *= np.array([0.75, 0.9, 1.15], np.float32) * rng.uniform(0.9, 1.1, size=3)
    out = _from_linear(a).astype(np.float32)
    out += rng.normal(0, rng.uniform(3.0, 6.0), out.shape).astype(np.float32)
    out = cv2.GaussianBlur(np.clip(out, 0, 255).astype(np.uint8), (0, 0), rng.uniform(0.6, 1.2))
    return out


def _occluder_texture(h: int, w: int, rng) -> np.ndarray:
    import cv2

    noise = rng.random((max(2, h // 6), max(2, w // 6), 1)) * 160  # dim, mostly grey: clothes, leaves
    colour = rng.uniform(20, 120, size=3)
    texture = np.clip(noise * 0.7 + colour * 0.6 + rng.normal(0, 12, (*noise.shape[:2], 3)), 0, 255)
    return cv2.resize(texture.astype(np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)


def _t_occlusion(image, rng, cover=(0.4, 0.6)):
    """People, a tree or a bus in front: textured blobs hide 40-60% of the photo, mostly low down."""
    import cv2

    h, w = image.shape[:2]
    out = image.copy()
    mask = np.zeros((h, w), np.uint8)
    target = rng.uniform(*cover)
    for _ in range(30):
        if mask.mean() / 255 >= target:
            break
        bw, bh = int(rng.uniform(0.15, 0.45) * w), int(rng.uniform(0.25, 0.6) * h)
        cx = int(rng.uniform(0, w))
        cy = int(h - rng.uniform(0, 0.6) * h)  # from the bottom up
        if rng.random() < 0.5:
            cv2.ellipse(mask, (cx, cy), (bw // 2, bh // 2), 0, 0, 360, 255, -1)
        else:
            cv2.rectangle(mask, (cx - bw // 2, cy - bh // 2), (cx + bw // 2, cy + bh // 2), 255, -1)
    m = mask.astype(bool)
    out[m] = _occluder_texture(h, w, rng)[m]
    return out


def _other_camera(image, rng):
    """What every visitor photo has, whatever else differs: another lens (radial distortion), a
    slightly other standpoint (a smooth displacement of up to ~1% of the photo: parallax the
    photo cannot show), other framing, softer focus and sensor noise."""
    import cv2

    h, w = image.shape[:2]
    # framing: 75-95% of the view
    image = _t_crop(image, rng, area=(0.75, 0.95))
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy, r = w / 2, h / 2, max(w, h) / 2
    nx, ny = (xs - cx) / r, (ys - cy) / r
    k1 = rng.uniform(-0.12, 0.12)  # barrel or pincushion
    f = 1 + k1 * (nx**2 + ny**2)
    amp = rng.uniform(0.004, 0.01) * max(w, h)
    field = [cv2.resize(rng.normal(0, 1, (4, 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
             for _ in range(2)]
    map_x = cx + nx * f * r + amp * field[0]
    map_y = cy + ny * f * r + amp * field[1]
    out = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.1)).astype(np.float32)
    out += rng.normal(0, rng.uniform(1.5, 4.0), out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


_TRANSFORMS = {"crop": _t_crop, "scale": _t_scale, "rotation": _t_rotation, "perspective": _t_perspective,
               "colour": _t_colour, "night": _t_night, "occlusion": _t_occlusion}
# a mixture applies two or three of these, in this order (geometry first, light last)
_MIX_ORDER = ("crop", "perspective", "rotation", "occlusion", "colour", "night", "scale")


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    import cv2

    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) if ok else image


def hard_query(image: np.ndarray, split: str, seed: int | tuple = 0) -> np.ndarray:
    """A visitor-like query made from a reference photo for one synthetic split (deterministic in seed).

    Every query first goes through `_other_camera` (lens, standpoint, framing, focus, noise), then
    the split's own change, and is stored as a phone would (JPEG, quality 70-88).
    """
    rng = np.random.default_rng(seed)
    if split == "mixed":
        names = list(rng.choice([n for n in _MIX_ORDER if n != "night"], size=int(rng.integers(2, 4)),
                                replace=False))
        if rng.random() < 0.25:  # dusk, seldom
            names[-1] = "night"
        steps = [n for n in _MIX_ORDER if n in names]
    elif split in _TRANSFORMS:
        steps = [split]
    else:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SYNTHETIC_SPLITS)}")
    out = _other_camera(np.ascontiguousarray(image), rng)
    for name in steps:
        if split == "mixed" and name == "crop":
            out = _t_crop(out, rng, area=(0.4, 0.7))  # milder when combined
        elif split == "mixed" and name == "scale":
            out = _t_scale(out, rng, factor=(0.4, 0.6))
        else:
            out = _TRANSFORMS[name](out, rng)
        out = np.ascontiguousarray(out)
    return _jpeg(out, int(rng.integers(70, 89)))


def calibration_landmarks(photos: list[tuple[Path, str, str]], seed: int = 0) -> set[str]:
    """The one-photo landmarks whose queries are kept for calibration (a third, chosen by the seed)."""
    counts = Counter(_attraction_id(folder) for _, folder, _ in photos)
    singles = sorted(a for a, n in counts.items() if n == 1)
    rng = np.random.default_rng(seed)
    k = int(round(len(singles) * CALIBRATION_SHARE))
    return set(rng.choice(singles, size=k, replace=False).tolist()) if k else set()


class _Pool:
    """Reference photos (all of the folder) and recognizers over subsets of them, built once each."""

    def __init__(self, photos, tour, embedder, spec, text_model, recognizer, options, progress):
        self.photos = photos
        self.tour, self.embedder, self.spec, self.text_model = tour, embedder, spec, text_model
        self.recognizer, self.options = recognizer, options
        self.attraction = [_attraction_id(folder) for _, folder, _ in photos]
        self.images, self.vectors, self.local = [], [], []
        for path, _, _ in tqdm(photos, desc="reference features", unit="photo", disable=not progress):
            image = load_image(path)
            self.images.append(image)
            self.vectors.append(embedder.embed_images([image])[0])
            self.local.append(extract_local_features(image, options) if spec.local else None)
        self.refs = [ReferencePhoto(a, str(p), "") for a, (p, _, _) in zip(self.attraction, photos)]
        self._cache: dict[tuple[int, ...], PhotoRecognizer] = {}

    def recognizer_for(self, ref_ids) -> PhotoRecognizer:
        key = tuple(sorted(ref_ids))
        if key not in self._cache:
            index = PhotoIndex.from_features([self.refs[i] for i in key], np.stack([self.vectors[i] for i in key]),
                                             [self.local[i] for i in key] if self.spec.local else None)
            self._cache[key] = PhotoRecognizer(self.recognizer, self.tour, self.embedder, index, options=self.options,
                                               local=self.spec.local, text_model=self.text_model)
        return self._cache[key]

    def without(self, attraction: str, keep: int | None = None) -> list[int]:
        """Every reference photo but those of one attraction (keeping photo `keep`, if given)."""
        return [i for i, a in enumerate(self.attraction) if a != attraction or i == keep]


def _support(ev) -> dict[str, float]:
    support = getattr(ev, "support", None)
    return dict(support) if support else {a: float(v[0]) for a, v in ev.verified.items()}


def _run(rec: PhotoRecognizer, q: Query) -> tuple:
    t = time.perf_counter()
    ev = rec.evidence(q)
    result = rec.decide(q, ev)
    return result, ev, time.perf_counter() - t


def _hard_runs(pool: _Pool, split: str, query_ids: list[int], seed: int, progress: bool) -> list[dict]:
    """One row per query: the known run (its landmark referenced) and the unknown run (left out)."""
    rows = []
    everyone = list(range(len(pool.photos)))
    rec0 = pool.recognizer_for(everyone)
    counts = Counter(pool.attraction)
    jobs = []  # (query photo, reference photo kept for its landmark or None)
    for i in query_ids:
        if split == "multiview":
            jobs += [(i, r) for r in everyone if r != i and pool.attraction[r] == pool.attraction[i]]
        else:
            jobs.append((i, None))
    embedded: dict[int, tuple[Query, float]] = {}
    split_no = HARD_SPLITS.index(split)
    for i, keep in tqdm(jobs, desc=f"hard split {split}", unit="query", disable=not progress):
        truth = pool.attraction[i]
        if i not in embedded:
            image = pool.images[i] if split == "multiview" else hard_query(pool.images[i], split, (seed, split_no, i))
            t = time.perf_counter()
            q = rec0.embed(image)
            embedded[i] = (q, time.perf_counter() - t)
        q, extract_s = embedded[i]
        if split == "multiview":
            known_refs = [r for r in pool.without(truth) if r != i] + [keep]
        else:
            known_refs = everyone
        known, ev, known_s = _run(pool.recognizer_for(known_refs), q)
        unknown, ev_u, _ = _run(pool.recognizer_for(pool.without(truth)), q)
        rows.append({
            "split": split,
            "query": str(Path(pool.photos[i][0]).relative_to(Path(pool.photos[i][0]).parents[1])),
            "reference": Path(pool.photos[keep][0]).name if keep is not None else "",
            "truth": truth,
            "several_photos": counts[truth] > 1,
            "predicted": known.attraction,
            "ranked_first": known.candidates[0][0] if known.candidates else None,
            "inliers_true": ev.verified.get(truth, (0,))[0],
            "inliers_best_other": max((n for a, (n, *_) in ev.verified.items() if a != truth), default=0),
            "inliers": _support(ev),  # the evidence the decision weighs, per attraction
            "predicted_unknown": unknown.attraction,
            "inliers_unknown": _support(ev_u),
            "ms": round((extract_s + known_s) * 1000, 1),
            "why": known.why,
            "why_unknown": unknown.why,
        })
        log.info("%s %s%s -> %s | left out -> %s", split, rows[-1]["query"],
                 f" (ref {rows[-1]['reference']})" if keep is not None else "", known.attraction, unknown.attraction)
    return rows


def summarize_hard(rows: list[dict]) -> list[dict]:
    """Per split and over all: recall of known landmarks, wrong names, rejection of unknown ones, ms p50/p95."""
    out = []
    splits = list(dict.fromkeys(r["split"] for r in rows))
    for split in splits + (["all"] if len(splits) > 1 else []):
        rs = [r for r in rows if split in ("all", r["split"])]
        ms = np.array([r["ms"] for r in rs], dtype=float)
        wrong_known = sum(r["predicted"] not in (None, r["truth"]) for r in rs)
        wrong_unknown = sum(r["predicted_unknown"] is not None for r in rs)
        out.append({
            "split": split,
            "queries": len(rs),
            "recall": round(_mean(r["predicted"] == r["truth"] for r in rs), 3),
            "ranked first": round(_mean(r["ranked_first"] == r["truth"] for r in rs), 3),
            "wrong names": wrong_known + wrong_unknown,
            "unknown rejected": round(_mean(r["predicted_unknown"] is None for r in rs), 3),
            "ms p50": round(float(np.percentile(ms, 50)), 0) if len(ms) else 0.0,
            "ms p95": round(float(np.percentile(ms, 95)), 0) if len(ms) else 0.0,
        })
    return out


def evaluate_hard(images_dir: str | Path, *, recognizer: str = "local-features", cache_dir: Path | None = None,
                  device: str | None = None, options: VisionOptions | None = None, seed: int = 0,
                  splits: tuple[str, ...] = HARD_SPLITS, part: str = "test", limit: int | None = None,
                  details: list | None = None, progress: bool = True) -> list[dict]:
    """The hard splits (module docstring): summary rows per split for format_table.

    part="test" queries the landmarks outside the calibration part (what is reported);
    part="calibration" only the calibration part (what `calibrate` fits thresholds on). The
    multiview split has no calibration part: its landmarks are always test landmarks. `limit`
    keeps the first n queries of each split (quick checks). Per-query rows go to `details`.
    """
    if part not in ("test", "calibration"):
        raise ValueError(f"part must be 'test' or 'calibration', not {part!r}")
    unknown_splits = [s for s in splits if s not in HARD_SPLITS]
    if unknown_splits:
        raise ValueError(f"unknown split(s) {', '.join(unknown_splits)}; choose from {', '.join(HARD_SPLITS)}")
    options = options or VisionOptions()
    images_dir = Path(images_dir)
    photos = _read_photos(images_dir)
    if not photos:
        raise ValueError(f"{images_dir}: no photos")
    calibration = calibration_landmarks(photos, seed)
    tour = _tour(images_dir, photos)
    embedder, spec, text_model = _embedder(recognizer, Path(cache_dir or _default_cache()), device, options)
    pool = _Pool(photos, tour, embedder, spec, text_model, recognizer, options, progress)
    counts = Counter(pool.attraction)
    rows = []
    for split in splits:
        if split == "multiview":
            ids = [i for i, a in enumerate(pool.attraction) if counts[a] > 1] if part == "test" else []
        else:
            ids = [i for i, a in enumerate(pool.attraction) if (a in calibration) == (part == "calibration")]
        rows += _hard_runs(pool, split, ids[:limit] if limit else ids, seed, progress)
    if details is not None:
        details.extend(rows)
    return summarize_hard(rows)


def _decide(inliers: dict[str, int], min_inliers: int, margin: float) -> str | None:
    """The local-feature decision rule on verified inliers per attraction (as PhotoRecognizer applies it)."""
    if not inliers:
        return None
    top = max(inliers, key=lambda a: inliers[a])
    rival = max((n for a, n in inliers.items() if a != top), default=0)
    return top if inliers[top] >= max(min_inliers, margin * rival) else None


def calibrate(rows: list[dict], *, min_inliers: range = range(4, 31), margins=(1.5, 2.0, 2.5, 3.0),
              max_wrong: int = 0, min_rejection: float = 0.95, safety: int = 2,
              default_margin: float = VisionOptions.margin) -> dict:
    """Decision thresholds from calibration-part rows (evaluate_hard(part="calibration", details=...)).

    The smallest min_inliers with at most `max_wrong` wrong names and at least `min_rejection` of
    the unknown queries rejected, plus `safety` inliers for photos unlike the calibration ones; the
    margin of the best calibration recall there (`default_margin` when it is one of them, else the
    largest). Returns the chosen values, the clean margins, and the calibration recall they give.
    """
    if not rows:
        raise ValueError("no calibration rows")
    grid = []
    for m in min_inliers:
        for g in margins:
            named = [_decide(r["inliers"], m, g) for r in rows]
            named_u = [_decide(r["inliers_unknown"], m, g) for r in rows]
            wrong = sum(p not in (None, r["truth"]) for p, r in zip(named, rows)) + sum(p is not None for p in named_u)
            rejection = _mean(p is None for p in named_u)
            recall = _mean(p == r["truth"] for p, r in zip(named, rows))
            grid.append((m, g, wrong, rejection, recall))
    ok = [x for x in grid if x[2] <= max_wrong and x[3] >= min_rejection]
    if not ok:
        raise ValueError("no threshold meets the calibration targets; the features need work")
    m = min(x[0] for x in ok)  # the lowest clean threshold; of its margins those of the best recall...
    at_m = [x for x in ok if x[0] == m]
    best = [x for x in at_m if x[4] == max(y[4] for y in at_m)]
    # ... keeping the current margin when the calibration part cannot tell them apart, else the largest
    g = default_margin if any(x[1] == default_margin for x in best) else max(x[1] for x in best)
    m_safe = m + safety
    named = [_decide(r["inliers"], m_safe, g) for r in rows]
    named_u = [_decide(r["inliers_unknown"], m_safe, g) for r in rows]
    return {"min_inliers": m_safe, "margin": g, "lowest_clean_min_inliers": m,
            "clean margins": ", ".join(f"{x[1]:g}" for x in at_m), "queries": len(rows),
            "recall": round(_mean(p == r["truth"] for p, r in zip(named, rows)), 3),
            "unknown_rejected": round(_mean(p is None for p in named_u), 3),
            "wrong": sum(p not in (None, r["truth"]) for p, r in zip(named, rows)) + sum(p is not None for p in named_u)}


def _cell(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return "" if v is None else str(v).replace("|", "\\|")


def format_table(rows: list[dict]) -> str:
    """Rows of dicts as a markdown table (columns in first-seen order)."""
    if not rows:
        return "(no results)"
    columns = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m guide.eval_vision DIR [--hard] [--calibrate]`: the tables, written to stdout."""
    import json

    p = argparse.ArgumentParser(prog="python -m guide.eval_vision", description=__doc__.split("\n\n")[0])
    p.add_argument("images", type=Path, nargs="?", help="images folder with labels.csv (default: the dev images)")
    p.add_argument("--hard", action="store_true", help="the hard splits (transformed and other-view queries)")
    p.add_argument("--calibrate", action="store_true", help="fit the decision thresholds on the calibration part")
    p.add_argument("--splits", help=f"comma-separated, of {','.join(HARD_SPLITS)}")
    p.add_argument("--limit", type=int, help="first n queries of each split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recognizer", default="local-features")
    p.add_argument("--json", type=Path, help="write the per-query rows here")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    images = args.images or dev_images_dir()
    details: list[dict] = []
    if args.calibrate:
        splits = tuple(args.splits.split(",")) if args.splits else SYNTHETIC_SPLITS
        evaluate_hard(images, recognizer=args.recognizer, seed=args.seed, splits=splits, part="calibration",
                      limit=args.limit, details=details)
        table = format_table([calibrate(details)])
    elif args.hard:
        splits = tuple(args.splits.split(",")) if args.splits else HARD_SPLITS
        table = format_table(evaluate_hard(images, recognizer=args.recognizer, seed=args.seed, splits=splits,
                                           limit=args.limit, details=details))
    else:
        table = format_table(evaluate_vision(images, recognizer=args.recognizer, details=details))
    sys.stdout.write(table + "\n")
    if args.json:
        args.json.write_text(json.dumps(details, indent=1, ensure_ascii=False, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
