import pytest

from guide.cli import main

from .conftest import HERE, MINITOUR


@pytest.fixture
def tiny_env(monkeypatch, tmp_path):
    monkeypatch.setenv("GUIDE_PROFILE", "tiny")
    monkeypatch.setenv("GUIDE_TOURS_DIR", str(HERE / "data"))
    monkeypatch.setenv("GUIDE_INDEX_DIR", str(tmp_path / "idx"))
    monkeypatch.setenv("GUIDE_CACHE_DIR", str(tmp_path / "cache"))


def test_ask_prints_answer_and_sources(tiny_env, capsys):
    assert main(["ask", "Where is the Mona Lisa?", "--tour", "minitour"]) == 0
    out = capsys.readouterr().out
    assert "Mona Lisa" in out and "*[1] Louvre" in out and "tour.yaml#louvre" in out


def test_unknown_tour_is_an_error_message_not_a_traceback(tiny_env, capsys):
    assert main(["ask", "hello", "--tour", "atlantis"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: tour 'atlantis' is not available") and "Traceback" not in err


def test_validate_reports_problems(tiny_env, tmp_path, capsys):
    assert main(["validate", str(MINITOUR)]) == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tour.yaml").write_text("id: bad\nlanguages: [en]\nattractions: [{id: x, names: {en: [X]}}]\n")
    assert main(["validate", str(bad)]) == 1
    assert "attractions[0].descriptions.en: missing" in capsys.readouterr().err


# The self-check child with a stand-in for its ASR stage: loading Whisper base in a child and decoding
# took 7 of this test's 8 s; that child is test_selfcheck's slow test. The TTS stage is the real one.
SELFCHECK_FAKE_ASR = """
import runpy, sys
if sys.argv[1] == "asr":
    print("decoded 1 s (stand-in)")
    raise SystemExit(0)
runpy.run_module("guide.selfcheck", run_name="__main__", alter_sys=True)
"""


def test_index_and_doctor(tiny_env, tmp_path, capsys, monkeypatch):
    import sys

    from guide import selfcheck

    monkeypatch.setattr(selfcheck, "CHILD", [sys.executable, "-c", SELFCHECK_FAKE_ASR])
    assert main(["index", str(MINITOUR)]) == 0
    assert (tmp_path / "idx" / "minitour" / "CURRENT").is_file()
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "profile: tiny" in out and "minitour: 3 attractions" in out and "index fresh" in out
    assert "asr:  ok (whisper-base on faster-whisper: decoded 1 s (stand-in)" in out
    assert "tts:  ok (" in out and "espeak-ng" in out.split("tts:  ok (")[1].split("\n")[0]


def test_missing_llm_keeps_the_guide_serving(tiny_config, monkeypatch):
    from guide.dialogue import DialogueState
    from guide.pipeline import Guide, answer_turn

    guide = Guide.load(tiny_config.replace(llm="/nowhere/model.gguf"), progress=False)
    turn = answer_turn(guide, DialogueState(), text="Where is the Mona Lisa?", tour="minitour")
    assert "Mona Lisa" in turn.answer and "not installed" in turn.notice


def test_ask_speaks_the_answer_into_a_wav(tiny_env, tmp_path, capsys):
    import shutil
    import wave

    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (make setup installs it)")
    out = tmp_path / "answer.wav"
    assert main(["ask", "How tall is the Eiffel Tower?", "--tour", "minitour", "--speak", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "330" in printed and f"spoken answer: {out}" in printed and "first_audio" in printed
    with wave.open(str(out)) as w:
        assert w.getnframes() / w.getframerate() > 1.0  # the sentence, spoken
