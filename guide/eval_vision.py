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

from .eval_vision_splits import (  # noqa: F401 (the transforms and _decide: re-exported for callers and tests)
    CALIBRATION_SHARE,
    HARD_SPLITS,
    SYNTHETIC_SPLITS,
    _attraction_id,
    _decide,
    _mean,
    _t_occlusion,
    calibrate,
    calibration_landmarks,
    hard_query,
    summarize_hard,
)
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

__all__ = ["evaluate_vision", "evaluate_hard", "calibrate", "hard_query", "HARD_SPLITS", "SYNTHETIC_SPLITS",
           "calibration_landmarks", "summarize_hard", "bench_vision", "format_table", "dev_images_dir", "main"]

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
# Hard splits (eval_vision_splits.py: the queries, the calibration part, the summary)


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
