"""Local features for photo recognition: RootSIFT keypoints, matching and geometric verification.

Pure functions over uint8 RGB arrays and numpy feature arrays; cv2 is imported here only. The
recognizer (vision.py) stores `LocalFeatures` in its photo index, verifies a visitor's photo
against shortlisted reference photos with `verify_pair`, adds up the evidence per attraction
with `attraction_support` and names an attraction with `decide`.

What makes another photo of the same building verifiable:

- the grey image is contrast-equalised (CLAHE) before SIFT, so a dark evening photo or a washed-out
  one yields keypoints where the reference has them;
- matches are RootSIFT nearest neighbours that pass Lowe's ratio test and are mutual;
- they are verified twice, by a fundamental matrix (any rigid 3-D scene: another viewpoint of a
  non-planar building) and by a homography (a facade, a crop, a zoom), both fitted with MAGSAC
  (cv2.USAC_MAGSAC); with `union_models` the matches either model verifies count (between two real
  viewpoints the true matches split: some on a facade fit the homography but miss the 2-px epipolar
  band, those in depth fit only the fundamental matrix), else the larger model's set;
- of those inliers only the ones whose SIFT rotation and scale change agree with their median are
  counted (one median over both models' inliers in the union): a random epipolar fit gathers a dozen
  inliers between unrelated photos, but their rotations disagree;
- the inliers' convex hull must cover a minimum of both images (rejects a logo or a line of text).

The options argument is a `vision.VisionOptions` (or `FeatureOptions`, the same fields).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .errors import ModelUnavailable

__all__ = [
    "FeatureOptions",
    "LocalFeatures",
    "Verification",
    "Decision",
    "extract_features",
    "root_sift",
    "putative_matches",
    "verify_pair",
    "attraction_support",
    "decide",
    "features_key",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureOptions:
    """Feature, verification and decision settings (vision.VisionOptions carries the same fields)."""

    max_features: int = 4000  # SIFT keypoints kept per photo
    feature_side: int = 1024  # pixels: photos are resized to this longest side for SIFT...
    max_upscale: float = 2.0  # ...but enlarged at most this much
    contrast_threshold: float = 0.02  # SIFT detector (OpenCV default 0.04; lower finds more on small photos)
    clahe: float = 2.0  # CLAHE clip limit on the grey image before SIFT; 0 = off
    ratio: float = 0.85  # Lowe's ratio test on RootSIFT distances
    ransac_px: float = 1.0  # pixels: fundamental-matrix inlier threshold (MAGSAC)
    homography_px: float = 4.0  # pixels: homography inlier threshold (MAGSAC); 0 = no homography
    union_models: bool = True  # count the union of both models' consistent inliers (False: the larger set)
    angle_tol: float = 20.0  # degrees: SIFT rotation must agree with the pair's median within this
    scale_tol: float = 0.5  # octaves: SIFT scale ratio must agree with the pair's median within this
    min_spread: float = 0.01  # fraction of both images the inliers' hull must cover (rejects logos, text)
    support_photos: int = 2  # an attraction's evidence: its best verified photo plus the next ones', up to this many
    support_weight: float = 0.5  # ... each further photo's inliers counted at this weight
    min_inliers: int = 12  # verified matches needed to name an attraction
    margin: float = 2.0  # ... and at least this many times the runner-up attraction's


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise ModelUnavailable("photo recognition needs `pip install opencv-python-headless`") from e
    return cv2


@dataclass(frozen=True)
class LocalFeatures:
    keypoints: np.ndarray  # float32 (n, 4): x, y (pixels of the resized image), angle (degrees), size
    descriptors: np.ndarray  # uint8 (n, 128): SIFT (integer-valued in OpenCV, so uint8 is lossless)
    shape: tuple[int, int]  # (height, width) of the image the keypoints refer to

    def __len__(self) -> int:
        return len(self.keypoints)


@dataclass(frozen=True)
class Verification:
    inliers: int  # matches that fit one geometry and agree in SIFT rotation and scale
    matches: int  # putative matches (ratio test + mutual nearest neighbours)
    spread: float  # fraction of the smaller image area covered by the inliers' convex hull
    model: str = ""  # "fundamental", "homography", or "fundamental+homography" (both added inliers)

    def effective(self, options) -> int:
        return self.inliers if self.spread >= options.min_spread else 0


def features_key(options) -> str:
    """What the stored reference features depend on (a photo index is rebuilt when it changes)."""
    o = options
    key = f"sift{o.max_features}@{o.feature_side}x{o.max_upscale}/ct{o.contrast_threshold}"
    return key + (f"/clahe{o.clahe}" if getattr(o, "clahe", 0) else "")


def _grey(image: np.ndarray, options) -> np.ndarray:
    cv2 = _cv2()
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    s = min(options.feature_side / max(h, w), options.max_upscale)
    if abs(s - 1) > 1e-3:
        size = (max(1, round(w * s)), max(1, round(h * s)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    clip = getattr(options, "clahe", 0)
    if clip:
        tiles = max(2, round(max(grey.shape) / 128))  # ~128-pixel tiles whatever the photo's size
        grey = cv2.createCLAHE(clipLimit=float(clip), tileGridSize=(tiles, tiles)).apply(grey)
    return grey


def extract_features(image: np.ndarray, options=None) -> LocalFeatures:
    """SIFT keypoints of a uint8 HxWx3 RGB image, resized to options.feature_side (CLAHE-equalised)."""
    opts = options or FeatureOptions()
    cv2 = _cv2()
    grey = _grey(image, opts)
    sift = cv2.SIFT_create(nfeatures=opts.max_features, contrastThreshold=opts.contrast_threshold)
    kps, desc = sift.detectAndCompute(grey, None)
    if desc is None or not kps:
        return LocalFeatures(np.zeros((0, 4), np.float32), np.zeros((0, 128), np.uint8), grey.shape[:2])
    kp = np.array([(k.pt[0], k.pt[1], k.angle, k.size) for k in kps], dtype=np.float32)
    return LocalFeatures(kp, np.clip(desc, 0, 255).astype(np.uint8), grey.shape[:2])


def root_sift(desc: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelović & Zisserman): L1-normalise, square root; unit L2 norm, float32."""
    d = np.asarray(desc, dtype=np.float32)
    d = d / np.maximum(d.sum(axis=1, keepdims=True), 1e-7)
    return np.ascontiguousarray(np.sqrt(d))


def putative_matches(a: np.ndarray, b: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i, j) of RootSIFT matches a[i] ~ b[j]: Lowe's ratio test and mutual nearest neighbours."""
    if len(a) < 2 or len(b) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    sim = a @ b.T  # cosine of unit RootSIFT vectors; squared distance = 2 - 2 cos
    rows = np.arange(len(a))
    j = sim.argmax(axis=1)
    back = sim.argmax(axis=0)  # for the mutual check
    s1 = sim[rows, j].copy()
    sim[rows, j] = -1.0
    s2 = sim.max(axis=1)
    ok = (2 - 2 * s1) < (ratio**2) * (2 - 2 * s2)
    ok &= back[j] == rows
    return rows[ok], j[ok]


def _hull_fraction(points: np.ndarray, shape: tuple[int, int]) -> float:
    cv2 = _cv2()
    if len(points) < 3:
        return 0.0
    return float(cv2.contourArea(cv2.convexHull(points.astype(np.float32)))) / float(shape[0] * shape[1])


def _consistent(qk: np.ndarray, rk: np.ndarray, options) -> np.ndarray:
    """Which matches agree with the pair's median SIFT rotation and scale change."""
    turn = (rk[:, 2] - qk[:, 2] + 180) % 360 - 180
    zoom = np.log2(np.maximum(rk[:, 3], 1e-3) / np.maximum(qk[:, 3], 1e-3))
    # a circular median: the angles relative to their circular mean, so a turn near ±180° works too
    t = np.radians(turn)
    mean = np.degrees(np.arctan2(np.sin(t).mean(), np.cos(t).mean()))
    rel = (turn - mean + 180) % 360 - 180
    turn_dev = np.abs(rel - np.median(rel))
    return (turn_dev < options.angle_tol) & (np.abs(zoom - np.median(zoom)) < options.scale_tol)


def _fit(kind: str, pa: np.ndarray, pb: np.ndarray, px: float) -> np.ndarray | None:
    cv2 = _cv2()
    try:
        if kind == "fundamental":
            _, mask = cv2.findFundamentalMat(pa, pb, cv2.USAC_MAGSAC, px, 0.999, 10000)
        else:
            _, mask = cv2.findHomography(pa, pb, cv2.USAC_MAGSAC, px, maxIters=10000, confidence=0.999)
    except cv2.error:  # degenerate configurations make some OpenCV builds assert
        return None
    return None if mask is None else mask.ravel().astype(bool)


def verify_pair(query: LocalFeatures, reference: LocalFeatures, options=None, *,
                query_root: np.ndarray | None = None, reference_root: np.ndarray | None = None) -> Verification:
    """Geometrically verified matches between two photos (module docstring): the inliers of a
    fundamental matrix and a homography (with `union_models` either model's, else the larger
    model's set) that agree with their median SIFT rotation and scale change."""
    opts = options or FeatureOptions()
    if len(query) < 8 or len(reference) < 8:
        return Verification(0, 0, 0.0)
    a = query_root if query_root is not None else root_sift(query.descriptors)
    b = reference_root if reference_root is not None else root_sift(reference.descriptors)
    i, j = putative_matches(a, b, opts.ratio)
    if len(i) < 8:
        return Verification(0, int(len(i)), 0.0)
    qk_all = np.asarray(query.keypoints[i], dtype=np.float32)
    rk_all = np.asarray(reference.keypoints[j], dtype=np.float32)
    pa, pb = qk_all[:, :2], rk_all[:, :2]
    models = [("fundamental", opts.ransac_px)]
    if getattr(opts, "homography_px", 0):
        models.append(("homography", opts.homography_px))
    fits: list[tuple[str, np.ndarray]] = []  # per model: which putative matches fit it
    for kind, px in models:
        keep = _fit(kind, pa, pb, px)
        if keep is not None and keep.sum() >= 4:
            fits.append((kind, keep))
    if not fits:
        return Verification(0, int(len(i)), 0.0)

    def consistent(mask: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(mask)
        ok = np.zeros(len(mask), bool)
        ok[idx[_consistent(qk_all[idx], rk_all[idx], opts)]] = True
        return ok

    if getattr(opts, "union_models", False):
        # one rotation / scale filter over both models' inliers: the true matches of a pair share one
        # rotation and zoom whichever model verifies them; each model's chance inliers have their own
        ok = consistent(np.logical_or.reduce([m for _, m in fits]))
        adds = []  # named after the models that verified matches the other one did not
        for n, (k, m) in enumerate(fits):
            others = [x for e, (_, x) in enumerate(fits) if e != n]
            if (ok & m & ~np.logical_or.reduce(others) if others else ok & m).any():
                adds.append(k)
        kind = "+".join(adds) or fits[0][0]
    else:
        kind, ok = max(((k, consistent(m)) for k, m in fits), key=lambda km: int(km[1].sum()))  # a tie: the first
    if not ok.any():
        return Verification(0, int(len(i)), 0.0)
    spread = min(_hull_fraction(pa[ok], query.shape), _hull_fraction(pb[ok], reference.shape))
    return Verification(int(ok.sum()), int(len(i)), spread, kind)


def attraction_support(photo_inliers: list[tuple[str, int]], options=None) -> dict[str, float]:
    """Evidence per attraction from its verified reference photos: the best photo's inliers, plus
    support_weight times each next best photo's, up to support_photos photos.

    Several reference photos of one attraction that each line up with the visitor's photo are
    stronger evidence than one; a photo that does not line up costs nothing.
    """
    opts = options or FeatureOptions()
    per: dict[str, list[int]] = {}
    for attraction, n in photo_inliers:
        per.setdefault(attraction, []).append(int(n))
    k = max(1, int(getattr(opts, "support_photos", 1)))
    w = float(getattr(opts, "support_weight", 0.0))
    out = {}
    for attraction, ns in per.items():
        ns = sorted(ns, reverse=True)[:k]
        out[attraction] = float(ns[0] + w * sum(ns[1:]))
    return out


@dataclass(frozen=True)
class Decision:
    attraction: str | None  # named attraction, or None
    score: float  # confidence in [0, 1]; >= 0.5 exactly when an attraction is named
    top: str | None  # the best-supported attraction, named or not
    support: float  # its evidence
    runner: str | None  # the next attraction
    runner_support: float
    candidates: list[tuple[str, float]]  # (attraction, score), best first


def decide(support: dict[str, float], options=None) -> Decision:
    """Name the best-supported attraction when its evidence reaches min_inliers and `margin` times
    the runner-up's; the score is support / (support + max(min_inliers, margin * runner-up))."""
    opts = options or FeatureOptions()
    if not support:
        return Decision(None, 0.0, None, 0.0, None, 0.0, [])
    ranked = sorted(support.items(), key=lambda kv: (-kv[1], kv[0]))

    def score(a: str, n: float) -> float:
        rival = max((m for b, m in support.items() if b != a), default=0.0)
        return n / (n + max(opts.min_inliers, opts.margin * rival)) if n > 0 else 0.0

    candidates = [(a, round(score(a, n), 4)) for a, n in ranked]
    top, n = ranked[0]
    runner, rn = ranked[1] if len(ranked) > 1 else (None, 0.0)
    s = score(top, n)
    named = top if n >= opts.min_inliers and s >= 0.5 else None
    return Decision(named, s, top, n, runner, rn, candidates)
