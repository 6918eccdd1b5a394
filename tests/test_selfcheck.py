"""Start-up self-checks: a native model that crashes or hangs is found in a child, and the stage falls back."""

import sys
import textwrap

import pytest

from guide import selfcheck
from guide.config import load_config

# a stand-in for `python -m guide.selfcheck`: the French voice crashes the process, the others speak
FAKE = textwrap.dedent("""
    import os, signal, sys, time
    stage, langs = sys.argv[1], sys.argv[2:]
    if stage == "asr":
        if os.environ.get("FAKE_ASR") == "hang":
            time.sleep(60)
        os.kill(os.getpid(), signal.SIGILL)
    for lang in langs:
        print("start", lang, flush=True)
        if lang == "fr":
            os.kill(os.getpid(), signal.SIGSEGV)
        print("ok", lang, "fake-voice", flush=True)
""")


@pytest.fixture
def fake_child(tmp_path, monkeypatch):
    script = tmp_path / "child.py"
    script.write_text(FAKE)
    monkeypatch.setattr(selfcheck, "CHILD", [sys.executable, str(script)])
    return load_config("tiny", cache_dir=tmp_path / "cache")


def test_a_voice_that_crashes_is_found_and_the_others_still_checked(fake_child):
    check = selfcheck.check_tts(fake_child, ["de", "fr", "ja", "en"])
    assert check.status == "crashed" and check.broken == ["fr"]
    assert "SIGSEGV" in check.detail and "espeak-ng" in check.detail


def test_a_crashing_asr_is_reported_with_its_signal(fake_child):
    check = selfcheck.check_asr(fake_child)
    assert check.status == "crashed" and "SIGILL" in check.detail


def test_a_hanging_check_is_cut_off(fake_child, monkeypatch):
    monkeypatch.setenv("FAKE_ASR", "hang")
    check = selfcheck.check_asr(fake_child, timeout=2)
    assert check.status == "hung"


def test_results_are_cached_per_machine_and_versions(fake_child, monkeypatch):
    first = selfcheck.check_asr(fake_child)
    monkeypatch.setattr(selfcheck, "CHILD", [sys.executable, "-c", "raise SystemExit(0)"])
    assert selfcheck.check_asr(fake_child) == first  # from the cache: the child did not run
    assert selfcheck.check_asr(fake_child, use_cache=False).status == "ok"


def test_the_real_child_speaks_with_espeak(tmp_path):
    pytest.importorskip("numpy")
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    check = selfcheck.check_tts(load_config("tiny", cache_dir=tmp_path), ["en", "de"], use_cache=False)
    assert check.ok, check.detail
    assert "en" in check.detail and "de" in check.detail


@pytest.mark.slow
def test_the_offline_whisper_decodes_in_a_child(tmp_path):
    check = selfcheck.check_asr(load_config("offline"), use_cache=False)
    assert check.ok, check.detail
    assert "decoded 1 s" in check.detail


def test_a_stage_on_its_fallback_is_named_in_the_notice_of_the_turns_that_use_it(tiny_guide):
    from guide.dialogue import DialogueState
    from guide.pipeline import answer_turn

    tiny_guide.problems["tts"] = "a voice failed its self-check: fr: crashed, killed by SIGSEGV"
    spoken = answer_turn(tiny_guide, DialogueState(), text="How tall is the tower?", speak=True)
    assert "SIGSEGV" in (spoken.notice or "")
    silent = answer_turn(tiny_guide, DialogueState(), text="How tall is the tower?", speak=False)
    assert "SIGSEGV" not in (silent.notice or "")
