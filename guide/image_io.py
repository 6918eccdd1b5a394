"""Photos at the boundary: any upload (path, bytes, file object, PIL image, numpy array) as an
upright uint8 HxWx3 RGB array, or a GuideError with a sentence for the visitor.

Decompression bombs, truncated files, odd colour modes and EXIF orientation are handled here;
PIL is imported only inside the functions.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np

from .errors import GuideError

__all__ = ["load_image", "MAX_SIDE", "MIN_SIDE", "MAX_PIXELS", "MAX_FILE_BYTES"]

log = logging.getLogger(__name__)

MAX_SIDE = 1024  # pixels: load_image downscales larger photos (recognition needs no more)
MIN_SIDE = 16  # pixels: smaller pictures hold nothing to recognise
# Pixels decoded at most (after a JPEG's reduced-size decoding): 80 MP, 240 MB as RGB, covers any
# camera's full-size PNG or WebP; more is a decompression bomb. Big JPEGs decode at 1/2..1/8 scale.
MAX_PIXELS = 80_000_000
MAX_FILE_BYTES = 200 * 1024 * 1024  # a photo file larger than this is not read at all

# what the visitor is told (guide/messages.py: in their language)
_EMPTY_PHOTO, _TOO_LARGE, _NOT_A_PHOTO, _DAMAGED = "photo_empty", "photo_too_large", "photo_not_a_photo", "photo_damaged"


def _open_pil(source):
    """A lazily decoded PIL image (only its header read) from a path, bytes or a file object."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise GuideError.say(_EMPTY_PHOTO)
        if len(source) > MAX_FILE_BYTES:
            raise GuideError.say(_TOO_LARGE)
        stream = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise GuideError.say("photo_missing", name=path.name)
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise GuideError.say(_TOO_LARGE)
            stream = io.BytesIO(path.read_bytes())
        except OSError as e:
            log.warning("photo %s unreadable: %s", path, e)
            raise GuideError.say("photo_unreadable", name=path.name) from None
        if not size:
            raise GuideError.say(_EMPTY_PHOTO)
    elif hasattr(source, "read"):
        data = source.read(MAX_FILE_BYTES + 1)
        if not data:
            raise GuideError.say(_EMPTY_PHOTO)
        if len(data) > MAX_FILE_BYTES:
            raise GuideError.say(_TOO_LARGE)
        stream = io.BytesIO(data)
    else:
        raise TypeError(f"load_image takes a path, bytes, a PIL image or a numpy array, not {type(source).__name__}")
    try:
        with warnings.catch_warnings():  # the size is checked by load_image, after a JPEG's draft mode
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(stream)
    except Image.DecompressionBombError:
        raise GuideError.say(_TOO_LARGE) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise GuideError.say(_NOT_A_PHOTO) from None


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
            raise GuideError.say(_DAMAGED) from None
        if im is not source and im.width * im.height > MAX_PIXELS:  # before a single pixel is decoded
            log.info("photo refused: %dx%d pixels (%s)", im.width, im.height, im.format)
            raise GuideError.say(_TOO_LARGE)
        try:
            im.load()  # the first frame of an animation
        except Exception:  # PIL raises OSError, SyntaxError, ValueError... for damaged files
            raise GuideError.say(_DAMAGED) from None
        try:
            im = ImageOps.exif_transpose(im)
        except Exception as e:  # a malformed EXIF block must not lose the photo
            log.debug("EXIF orientation ignored: %s", e)
        try:
            a = np.asarray(_to_rgb(im))
        except (OSError, ValueError) as e:  # a colour mode PIL cannot turn into RGB (LAB, HSV TIFFs...)
            log.info("photo refused: mode %s (%s)", im.mode, e)
            raise GuideError.say(_NOT_A_PHOTO) from None
    if min(a.shape[:2]) < MIN_SIDE:
        raise GuideError.say("photo_too_small")
    return np.ascontiguousarray(_downscale(a, max_side), dtype=np.uint8)
