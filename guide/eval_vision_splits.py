"""The hard splits of the photo-recognition evaluation (eval_vision.py runs them): how their queries
are made from the reference photos (crops, scale, rotation, perspective, colour, night, occlusion,
mixtures, each after "another camera"; fixed seeds), which landmarks form the calibration part, and
the bookkeeping over their per-query rows: the summary table and the threshold calibration.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from .vision import VisionOptions

__all__ = ["HARD_SPLITS", "SYNTHETIC_SPLITS", "CALIBRATION_SHARE", "hard_query", "calibration_landmarks",
           "summarize_hard", "calibrate"]

HARD_SPLITS = ("crop", "scale", "rotation", "perspective", "colour", "night", "occlusion", "mixed", "multiview")
SYNTHETIC_SPLITS = HARD_SPLITS[:-1]
CALIBRATION_SHARE = 1 / 3  # of the one-photo landmarks: their queries calibrate, and are never reported


def _attraction_id(folder: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in folder.lower()).split()) or "x"


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else 0.0


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
