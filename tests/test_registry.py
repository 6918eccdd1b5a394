"""One backend registry for every stage: what load_* and doctor read."""

import pytest

from guide import registry
from guide.config import load_config


def test_the_offline_defaults_and_the_test_models_are_registered_backends():
    for profile in ("offline", "tiny"):
        config = load_config(profile)
        for kind, name in (("llm", config.llm), ("embedder", config.embedder), ("vision", config.vision),
                           ("asr", config.asr), ("tts", config.tts)):
            backend = registry.find(kind, name)
            assert backend.kind == kind and backend.description and callable(backend.factory), (profile, kind)


def test_exact_names_win_over_patterns_and_patterns_pick_the_right_backend():
    assert registry.find("llm", "hf:qwen2.5-0.5b").name == "hf:<pack>"
    assert registry.find("llm", "hf:Qwen/Qwen2.5-7B-Instruct").name == "hf:<hub id>"
    assert registry.find("llm", "openai:http://localhost:8000/v1#m").name.startswith("openai:")
    assert registry.find("llm", "/models/x.gguf").name == "<path>.gguf"
    assert registry.find("vision", "clip:ViT-B-32").name == "clip:ViT-B-32"  # registered, not the pattern
    assert registry.find("vision", "clip:ViT-L-14:openai").name == "clip:ARCH:PRETRAINED"
    assert registry.find("embedder", "intfloat/multilingual-e5-base").name == "<hub id or path>"
    assert registry.find("asr", "small").name == "<hub size>" and registry.find("asr", "whisper-base").name == "whisper-base"
    assert registry.find("tts", "coqui:tts_models/de/thorsten/vits").name == "coqui:<model>"
    assert registry.find("tts", "/voices/de_DE-thorsten-medium.onnx").name == "<voice>.onnx"
    assert {b.kind for kind in registry.KINDS for b in registry.backends(kind)} == set(registry.KINDS)


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown llm 'gpt-17'.*qwen2.5-0.5b.*extractive"):
        registry.find("llm", "gpt-17")
    with pytest.raises(ValueError, match="unknown kind"):
        registry.backends("printer")


def test_load_functions_go_through_the_registry(tmp_path):
    from guide.llm import ExtractiveLLM, load_llm
    from guide.retrieval import HashingEmbedder, load_embedder

    assert isinstance(load_llm("extractive", cache_dir=tmp_path), ExtractiveLLM)
    assert isinstance(load_embedder("hashing"), HashingEmbedder)
    seen = []
    original = registry.find("embedder", "hashing")
    registry.register(registry.Backend("embedder", "hashing", "counted", lambda name, **kw: seen.append(kw) or "x"))
    try:
        assert load_embedder("hashing", threads=3) == "x" and seen == [{"threads": 3, "device": None}]
    finally:
        registry.register(original)


def test_a_missing_requirement_is_named_with_what_pip_installs():
    backend = registry.Backend("vision", "t", "test", lambda name: None, requirements=("open_clip_does_not_exist",))
    assert backend.missing() == ["open_clip_does_not_exist"]
    registry.register(backend)
    try:
        assert any(line.startswith("t: test (MISSING: pip install open_clip_does_not_exist)")
                   for line in registry.describe("vision"))
    finally:
        registry._REGISTRY["vision"].remove(backend)


def test_doctor_lists_every_registered_backend_with_the_configured_one_marked():
    from guide.doctor import _backends

    lines = _backends(load_config("tiny"))
    assert any(line.split()[:3] == ["llm", "*", "extractive:"] for line in lines)
    assert any(line.split()[:3] == ["embedder", "*", "hashing:"] for line in lines)
    assert sum("*" in line.split()[1:2] for line in lines) >= 3
