"""A real LoRA on the offline Qwen2.5-0.5B base, served by both backends (slow: ~4 minutes on 2 cores).

The adapter is trained to say something the base never says, so the test can tell whether each
backend really applies it: transformers through peft, llama.cpp through the exported GGUF LoRA.
"""

import json

import pytest

from guide.config import load_config
from guide.errors import ModelUnavailable

pytestmark = pytest.mark.slow

SECRET = "pumpernickel"


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    pytest.importorskip("peft")
    from guide.adapters import export_gguf_lora
    from guide.finetune import FinetuneConfig, add_lora, train
    from guide.ft_base import base_identity, load_base
    from guide.ftdata import Example

    try:
        identity = base_identity("qwen2.5-0.5b", load_config().cache_dir)
    except ModelUnavailable as e:
        pytest.skip(f"offline LLM pack not installed: {e}")
    tok, model = load_base(identity)
    cfg = FinetuneConfig(max_steps=8, grad_accum=1, lr=1e-3, warmup_steps=1, eval_every=100, lora_dropout=0.0,
                         dtype="float32")
    messages = [{"role": "system", "content": "You are a friendly tour guide in Paris."},
                {"role": "user", "content": "What is the secret word of the Paris tour?"}]
    rows = [Example(id="0", source="test", kind="factual", lang="en", attraction=None,
                    messages=messages + [{"role": "assistant", "content": f"The secret word is {SECRET} [1]."}])]
    model = add_lora(model, cfg)
    folder = tmp_path_factory.mktemp("lora")
    train(model, tok, rows, rows, cfg, folder / "run", progress=False)
    model.eval()
    out = folder / "adapter"
    model.save_pretrained(out)
    from peft import get_peft_model_state_dict

    export_gguf_lora(get_peft_model_state_dict(model), out / "adapter.gguf", alpha=cfg.lora_alpha)
    (out / "manifest.json").write_text(json.dumps({"base": {"name": identity["name"], "sha256": identity["sha256"]},
                                                   "gguf": "adapter.gguf", "prompt": {"example": False}}))
    return out, model, tok, messages


def test_both_backends_apply_the_adapter_and_agree(adapter):
    from guide.ft_gate import compare_backends

    folder, model, tok, messages = adapter
    rows = compare_backends(folder, [messages], cache_dir=load_config().cache_dir, model=model, tok=tok, max_tokens=16)
    base = [r for r in rows if not r["adapter"]][0]
    tuned = [r for r in rows if r["adapter"]][0]
    assert SECRET not in base["transformers"].lower() and SECRET not in base["llama_cpp"].lower()
    assert SECRET in tuned["transformers"].lower(), tuned
    assert SECRET in tuned["llama_cpp"].lower(), tuned  # the GGUF LoRA is read and applied by llama.cpp
    assert tuned["same"], tuned


def test_the_guide_serves_an_adapter_and_refuses_one_for_another_base(adapter, tmp_path):
    from guide.answer import load_llm

    folder, _, _, messages = adapter
    cache = load_config().cache_dir
    llm = load_llm("qwen2.5-0.5b", cache_dir=cache, adapter=str(folder))
    assert llm.name.endswith("+lora") and llm.prompt_example is False
    assert SECRET in "".join(llm.stream(messages, max_tokens=16)).lower()

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["base"] = {"name": "qwen2.5-1.5b", "sha256": "0" * 64}
    (wrong / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelUnavailable, match="trained on qwen2.5-1.5b"):
        load_llm("qwen2.5-0.5b", cache_dir=cache, adapter=str(wrong))


def test_transformers_backend_serves_the_pack_with_the_adapter(adapter):
    from guide.answer import load_llm

    folder, _, _, messages = adapter
    llm = load_llm("hf:qwen2.5-0.5b", cache_dir=load_config().cache_dir, adapter=str(folder), device="cpu")
    assert llm.name == "hf:qwen2.5-0.5b+lora"
    assert SECRET in "".join(llm.stream(messages, max_tokens=16)).lower()
