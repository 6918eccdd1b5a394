"""CTranslate2 -> openai-whisper: the offline Whisper pack (a CTranslate2 model.bin) as an
openai-whisper checkpoint, so the torch backend runs the same weights offline.

`read_ct2_model` reads a model.bin (binary format 6); `ct2_to_openai_checkpoint` renames its
tensors and splits the fused q/k/v projections; `openai_checkpoint` converts a folder once into
the cache.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import tempfile
from pathlib import Path

import numpy as np

from .errors import GuideError

__all__ = ["read_ct2_model", "ct2_to_openai_checkpoint", "openai_checkpoint"]

log = logging.getLogger(__name__)

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


def read_ct2_model(path: str | Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 model.bin (binary format 6), aliases resolved, as numpy arrays."""
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        (value,) = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def text() -> str:
        nonlocal pos
        n = take("H")
        value = data[pos:pos + n - 1].decode("utf-8")
        pos += n
        return value

    version = take("I")
    if version != 6:
        raise ValueError(f"{path}: CTranslate2 binary version {version} is not supported (expected 6)")
    spec, _revision = text(), take("I")
    if spec != "WhisperSpec":
        raise ValueError(f"{path} holds a {spec}, not a Whisper model")
    out: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        key = text()
        shape = [take("I") for _ in range(take("B"))]
        dtype, nbytes = _CT2_DTYPES[take("B")], take("I")
        raw = data[pos:pos + nbytes]
        pos += nbytes
        if dtype == "bfloat16":
            array = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, dtype)
        out[key] = array.reshape(tuple(shape))
    for _ in range(take("I")):
        alias, target = text(), text()
        out[alias] = out[target]
    return out


def _ct2_alignment_heads(folder: Path) -> list[tuple[int, int]]:
    try:
        return [tuple(h) for h in json.loads((Path(folder) / "config.json").read_text())["alignment_heads"]]
    except (OSError, KeyError, ValueError):
        return []


def ct2_to_openai_checkpoint(model_bin: str | Path, output: str | Path) -> Path:
    """Write an openai-whisper checkpoint ({"dims", "model_state_dict"}, fp32) with the tensors of a
    CTranslate2 Whisper model.bin: the same weights renamed, fused q/k/v projections split apart."""
    import torch

    v = read_ct2_model(model_bin)
    if "decoder/layer_0/ffn/linear_0/weight_scale" in v:
        raise ValueError(f"{model_bin} is quantized; convert a float16/float32 CTranslate2 model")

    def t(key: str) -> torch.Tensor:
        return torch.from_numpy(np.array(v[key], dtype=np.float32))

    def count(prefix: str) -> int:
        return len({k.split("/")[1] for k in v if re.match(prefix + r"/layer_\d+/", k)})

    n_audio_layer, n_text_layer = count("encoder"), count("decoder")
    dims = dict(n_mels=v["encoder/conv1/weight"].shape[1], n_audio_ctx=v["encoder/position_encodings/encodings"].shape[0],
                n_audio_state=v["encoder/conv1/weight"].shape[0], n_audio_head=int(v["encoder/num_heads"]),
                n_audio_layer=n_audio_layer, n_vocab=v["decoder/embeddings/weight"].shape[0],
                n_text_ctx=v["decoder/position_encodings/encodings"].shape[0],
                n_text_state=v["decoder/embeddings/weight"].shape[1], n_text_head=int(v["decoder/num_heads"]),
                n_text_layer=n_text_layer)
    sd: dict[str, torch.Tensor] = {}

    def linear(dst: str, src: str, bias: bool = True):
        sd[f"{dst}.weight"] = t(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = t(f"{src}/bias")

    def norm(dst: str, src: str):
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = t(f"{src}/gamma"), t(f"{src}/beta")

    def split_qkv(dst: str, src: str, parts: tuple[str, ...]):
        weights = t(f"{src}/weight").chunk(len(parts))
        biases = t(f"{src}/bias").chunk(len(parts))
        for part, w, b in zip(parts, weights, biases):
            sd[f"{dst}.{part}.weight"] = w.clone()
            if part != "key":  # Whisper's key projections have no bias (CTranslate2 stores zeros)
                sd[f"{dst}.{part}.bias"] = b.clone()

    def block(dst: str, src: str, cross: bool):
        split_qkv(f"{dst}.attn", f"{src}/self_attention/linear_0", ("query", "key", "value"))
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        if cross:
            linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
            split_qkv(f"{dst}.cross_attn", f"{src}/attention/linear_1", ("key", "value"))
            linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
            norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")
        norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")

    for conv in ("conv1", "conv2"):
        linear(f"encoder.{conv}", f"encoder/{conv}")
    sd["encoder.positional_embedding"] = t("encoder/position_encodings/encodings")
    for i in range(n_audio_layer):
        block(f"encoder.blocks.{i}", f"encoder/layer_{i}", cross=False)
    norm("encoder.ln_post", "encoder/layer_norm")
    sd["decoder.token_embedding.weight"] = t("decoder/embeddings/weight")
    sd["decoder.positional_embedding"] = t("decoder/position_encodings/encodings")
    for i in range(n_text_layer):
        block(f"decoder.blocks.{i}", f"decoder/layer_{i}", cross=True)
    norm("decoder.ln", "decoder/layer_norm")

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="convert-", suffix=".pt.tmp", dir=output.parent)
    os.close(fd)
    try:
        torch.save({"dims": dims, "model_state_dict": sd}, tmp)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("converted %s to the openai-whisper checkpoint %s", model_bin, output)
    return output


def openai_checkpoint(ct2_folder: str | Path, cache_dir: str | Path) -> Path:
    """An openai-whisper checkpoint of a CTranslate2 Whisper folder, converted once into the cache."""
    folder = Path(ct2_folder)
    model_bin = folder / "model.bin"
    if not model_bin.is_file():
        raise GuideError(f"{folder} is not a CTranslate2 Whisper model (no model.bin)")
    stat = model_bin.stat()
    # the pack's own folder is keyed by name; other folders by their file's size and time
    key = folder.name if folder.parent == Path(cache_dir) else f"{folder.name}-{stat.st_size}-{int(stat.st_mtime)}"
    target = Path(cache_dir) / "openai-whisper" / f"{key}.pt"
    if not target.is_file() or target.stat().st_mtime < stat.st_mtime:
        ct2_to_openai_checkpoint(model_bin, target)
    return target
