"""LoRA adapters for the answer LLM: manifests, base checks, GGUF export for llama.cpp, and publishing.

An adapter folder holds the peft adapter (for transformers), `adapter.gguf` (the same LoRA for
llama.cpp) and `manifest.json`: the base model it was trained on (name and sha256), the data hash,
the training config and the before/after metrics. An adapter is only ever applied to the base it
was trained on; anything else is refused with a message that says what to do.

A published adapter (`adapters/<base>/`) is what the guide serves by default for that base.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from .config import ROOT
from .errors import ModelUnavailable

__all__ = ["ADAPTERS_DIR", "read_manifest", "check_base", "published", "resolve_adapter", "publish",
           "export_gguf_lora", "GGUF_NAMES"]

log = logging.getLogger(__name__)

ADAPTERS_DIR = ROOT / "adapters"
MANIFEST = "manifest.json"

# transformers module names -> llama.cpp tensor names (qwen2 / llama-style blocks)
GGUF_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelUnavailable(f"{folder} is not a usable adapter (no readable {MANIFEST}: {e})") from None


def check_base(manifest: dict, *, base_name: str, base_sha256: str | None, folder: Path | str = "") -> None:
    """Refuse an adapter trained on another base model (different weights, or a different model)."""
    want = manifest.get("base", {})
    if base_sha256 and want.get("sha256") and want["sha256"] != base_sha256:
        raise ModelUnavailable(
            f"the adapter {folder} was trained on {want.get('name')} (sha256 {want['sha256'][:12]}…), not on "
            f"{base_name} (sha256 {base_sha256[:12]}…); a LoRA only fits the weights it was trained on. Retrain it "
            f"with `python -m guide finetune`, or set GUIDE_ADAPTER=none")
    if not want.get("sha256") and want.get("name") != base_name:
        raise ModelUnavailable(f"the adapter {folder} was trained on {want.get('name')!r}, not on {base_name!r}; "
                               f"retrain it or set GUIDE_ADAPTER=none")


def published(base_name: str, root: Path = ADAPTERS_DIR) -> Path | None:
    folder = Path(root) / base_name
    return folder if (folder / MANIFEST).is_file() else None


def resolve_adapter(setting: str | None, *, base_name: str, base_sha256: str | None,
                    root: Path = ADAPTERS_DIR) -> tuple[Path | None, dict | None]:
    """The adapter to serve with a base: ('auto' = the published one, 'none', or a folder).

    With 'auto', a published adapter for another base is skipped with a warning; a folder named
    explicitly must fit, or loading fails with the reason.
    """
    if not setting or setting == "none":
        return None, None
    if setting == "auto":
        folder = published(base_name, root)
        if folder is None:
            return None, None
        manifest = read_manifest(folder)
        try:
            check_base(manifest, base_name=base_name, base_sha256=base_sha256, folder=folder)
        except ModelUnavailable as e:
            log.warning("published adapter not used: %s", e)
            return None, None
        return folder, manifest
    folder = Path(setting)
    manifest = read_manifest(folder)
    check_base(manifest, base_name=base_name, base_sha256=base_sha256, folder=folder)
    return folder, manifest


def publish(adapter_dir: Path, base_name: str, root: Path = ADAPTERS_DIR) -> Path:
    """Copy an adapter to adapters/<base>/, atomically replacing the previous one."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / base_name
    tmp = root / f".{base_name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(adapter_dir, tmp)
    old = root / f".{base_name}.old"
    if target.exists():
        if old.exists():
            shutil.rmtree(old)
        target.rename(old)
    tmp.rename(target)
    if old.exists():
        shutil.rmtree(old)
    log.info("published adapter %s -> %s", adapter_dir, target)
    return target


def export_gguf_lora(state_dict: dict, out_path: str | Path, *, alpha: float, arch: str = "qwen2") -> int:
    """Write a peft LoRA state dict as a llama.cpp GGUF LoRA adapter; returns the number of tensors.

    peft's lora_A is (r, in) and lora_B is (out, r); GGUF stores them as `blk.N.<name>.weight.lora_a/b`
    with the same row-major data, which llama.cpp applies as scale * B(A(x)) with scale = alpha / r.
    """
    import gguf
    import numpy as np

    if arch not in ("qwen2",):
        # llama-arch GGUFs permute q/k rows at conversion, so a LoRA on them would need the same permutation
        raise ModelUnavailable(f"GGUF LoRA export supports qwen2 bases, not {arch}")
    tensors = {}
    for key, value in state_dict.items():
        if "lora_" not in key:
            continue
        # base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight
        parts = key.split(".")
        try:
            layer = int(parts[parts.index("layers") + 1])
        except (ValueError, IndexError):
            raise ModelUnavailable(f"cannot map adapter tensor {key} to llama.cpp") from None
        module = ".".join(parts[parts.index("layers") + 2:parts.index("layers") + 4])
        if module not in GGUF_NAMES:
            raise ModelUnavailable(f"cannot map adapter module {module} to llama.cpp")
        ab = "lora_a" if ".lora_A." in key else "lora_b"
        tensors[f"blk.{layer}.{GGUF_NAMES[module]}.weight.{ab}"] = value.detach().float().cpu().numpy()
    out_path = Path(out_path)
    tmp = out_path.with_suffix(".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch=arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(alpha))
    for name in sorted(tensors):
        writer.add_tensor(name, np.ascontiguousarray(tensors[name], dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out_path)
    return len(tensors)
