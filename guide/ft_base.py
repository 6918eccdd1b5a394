"""The base model of a fine-tuning run: which one (name, sha256, where to load it from), loading it,
and the tiny random Qwen2 the tests and the `tiny` preset train.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["tiny_base", "base_identity", "load_base"]


def tiny_base(folder: Path, texts: list[str], *, seed: int = 0) -> Path:
    """A tiny random Qwen2 model with a byte-level BPE tokenizer trained on `texts` (for tests)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=True, initializer_range=0.2, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    model = Qwen2ForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def base_identity(base: str, cache_dir: Path) -> dict:
    """Name, sha256 and where to load a base model from (the GGUF pack's file, a folder or a hub id)."""
    from .models import PACKS, assemble_pack

    if base in PACKS:
        path = assemble_pack(base, cache_dir)
        return {"name": base, "sha256": PACKS[base].sha256, "path": str(path.parent), "gguf_file": path.name,
                "arch": "qwen2"}
    folder = Path(base)
    if folder.is_dir():
        from .models import sha256_file

        weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
        sha = sha256_file(weights[0]) if weights else None
        arch = json.loads((folder / "config.json").read_text()).get("model_type") if (folder / "config.json").is_file() else None
        return {"name": folder.name, "sha256": sha, "path": str(folder), "gguf_file": None, "arch": arch}
    return {"name": base, "sha256": None, "path": base, "gguf_file": None, "arch": None}


def load_base(identity: dict, *, dtype=None, device: str = "cpu"):
    """(tokenizer, model) of a base: GGUF packs are de-quantized by transformers (fp32 weights)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": identity["gguf_file"]} if identity.get("gguf_file") else {}
    tok = AutoTokenizer.from_pretrained(identity["path"], **kwargs)
    model = AutoModelForCausalLM.from_pretrained(identity["path"], dtype=dtype or torch.float32, **kwargs)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok, model.to(device)
