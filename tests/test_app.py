"""The Gradio app's callbacks, called directly with the tiny profile (no browser, no weights)."""

import importlib
import shutil
import sys
import threading
import types
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from guide.dialogue import DialogueState
from guide.tts import Speech

from .conftest import HERE

QUESTION = "How tall is the Eiffel Tower?"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """app.py over the test tour with weightless models; Gradio's uploads go to a private folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GUIDE_PROFILE", "tiny")
        mp.setenv("GUIDE_TOURS_DIR", str(HERE / "data"))
        mp.setenv("GUIDE_DEFAULT_TOUR", "minitour")
        mp.setenv("GUIDE_INDEX_DIR", str(tmp_path_factory.mktemp("indexes")))
        mp.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio")))
        import app as module

        module.get_guide.cache_clear()
        yield module
        module.get_guide.cache_clear()


def ask(app, text=None, *, image=None, audio=None, tour="minitour", language="auto", speak=False, chat=None,
        state=None):
    """Every Outputs respond yields for one turn."""
    return list(app.respond(text, image, audio, tour, language, speak, chat or [], state or DialogueState()))


def upload(app, name: str, data: bytes):
    """A file where Gradio keeps a visitor's upload: <upload folder>/<hash>/<name>."""
    from gradio.utils import get_upload_folder

    folder = get_upload_folder()
    path = Path(folder) / "0123abcd" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_typed_question_gets_the_fact_and_its_sources(app):
    outs = ask(app, QUESTION)
    first, last = outs[0], outs[-1]
    assert first.chat[-2] == {"role": "user", "content": QUESTION} and first.text == ""  # composer emptied at once
    assert last.chat[-1]["role"] == "assistant" and "330" in last.chat[-1]["content"]
    assert "[1]" in last.sources and "Eiffel Tower" in last.sources and "minitour/tour.yaml" in last.sources
    assert "Eiffel Tower" in last.card and "Louvre" in last.card  # the card names the place and what is nearby
    assert last.notice == "" and last.last_active > 0
    assert len(last.state.history) == 2


def test_follow_up_keeps_the_conversation(app):
    state, chat = DialogueState(), []
    chat = ask(app, "Erzähl mir vom Eiffelturm.", chat=chat, state=state)[-1].chat
    last = ask(app, "Wie hoch ist er?", chat=chat, state=state)[-1]
    assert len(last.chat) == 4 and "330" in last.chat[-1]["content"] and "Meter" in last.chat[-1]["content"]


def test_spoken_answer_is_one_clip_and_also_text(app):
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (make setup installs it)")
    outs = ask(app, QUESTION, speak=True)
    last = outs[-1]
    rate, samples = last.speech
    assert rate > 8000 and samples.dtype == np.int16 and len(samples) > rate  # over a second of speech
    assert "330" in last.chat[-1]["content"]  # what is spoken is on screen too
    # the streaming player got the same audio, sentence by sentence, and the replay player only at the end
    chunks = [o.live for o in outs if isinstance(o.live, tuple)]
    assert chunks and all(r == rate for r, _ in chunks)
    assert np.array_equal(np.concatenate([c for _, c in chunks]), samples)
    assert all(o.speech == gr.skip() for o in outs[1:-1])


def test_speech_plays_while_the_answer_is_written(app, monkeypatch):
    from .test_speech_stream import FIRST, FakeVoices, ScriptedLLM

    guide = app.get_guide()
    played = threading.Event()
    # the model writes a sentence and a half, then waits until the player has the first sentence's audio
    llm = ScriptedLLM([FIRST, "It was built", " by the company of Gustave Eiffel [1]."], gates={2: played})
    monkeypatch.setattr(guide, "llm", llm)
    monkeypatch.setattr(guide, "_tts", FakeVoices(llm))
    outs, shown = [], []  # the chat is updated in place: what it showed at each step
    for out in app.respond("Tell me about the Eiffel Tower.", None, None, "minitour", "auto", True, [],
                           DialogueState()):
        outs.append(out)
        shown.append(out.chat[-1]["content"])
        if isinstance(out.live, tuple):
            played.set()
    assert llm.waited == {2: True}, "the first sentence did not reach the player while the answer was written"
    first = next(i for i, o in enumerate(outs) if isinstance(o.live, tuple))
    assert "Gustave" not in shown[first] and outs[first].speech == gr.skip()
    chunks = [o.live[1] for o in outs if isinstance(o.live, tuple)]
    rate, replay = outs[-1].speech  # the whole answer, to play again
    assert len(chunks) == 2 and np.array_equal(np.concatenate(chunks), replay)
    assert "Gustave" in outs[-1].chat[-1]["content"]


def test_speech_of_mixed_voices_is_joined_at_one_rate(app):
    from guide.pipeline import Turn

    turn = Turn(speech=[Speech(np.ones(16000, np.float32) * 0.5, 16000, "a"), Speech(np.ones(8000, np.float32), 8000,
                                                                                     "b")])
    rate, samples = app._speech_audio(turn)
    assert rate == 16000 and len(samples) == 16000 + 16000 + 2 * 4000 and samples.max() == 32767
    assert app._speech_audio(Turn()) is None


def test_guide_error_becomes_a_friendly_notice(app):
    last = ask(app, "hello", tour="atlantis")[-1]
    assert "tour 'atlantis' is not available" in last.chat[-1]["content"]
    assert "atlantis" in last.notice and 'role="status"' in last.notice and "Traceback" not in last.notice
    assert last.text == "hello"  # the visitor's question stays in the box to try again


def test_empty_question_is_a_notice_not_an_error(app):
    last = ask(app, "   ")[-1]
    assert "ask me" in last.notice.lower() and "ask me" in last.chat[-1]["content"].lower()
    assert not last.state.history


def test_corrupt_recording_is_a_notice_and_the_upload_is_deleted(app):
    path = upload(app, "broken.ogg", b"OggS" + bytes(range(256)) * 4)
    outs = ask(app, audio=str(path))
    first, last = outs[0], outs[-1]
    assert first.audio is None and first.image is None  # the composer empties
    assert last.chat[-2]["content"].startswith("🎤")
    assert "audio file" in last.notice and "Traceback" not in last.notice and not last.sources
    assert not path.exists() and not path.parent.exists()  # nothing the visitor sent stays on disk


def test_files_outside_the_upload_folder_are_never_deleted(app, tmp_path):
    path = tmp_path / "broken.ogg"
    path.write_bytes(b"not audio")
    ask(app, audio=str(path))
    assert path.exists()


def test_unexpected_failure_is_contained_and_the_next_turn_works(app, monkeypatch, caplog):
    guide = app.get_guide()
    method = "stream_prompt" if hasattr(guide.llm, "stream_prompt") else "stream"  # what AnswerStream calls
    real = getattr(guide.llm, method)
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        yield from real(*args, **kwargs)

    monkeypatch.setattr(guide.llm, method, flaky)
    failed = ask(app, QUESTION)[-1]
    assert failed.chat[-1]["content"] == app.SORRY and app.SORRY in failed.notice
    assert "boom" not in failed.notice and "Traceback" not in failed.notice
    assert failed.text == QUESTION
    assert "turn failed" in caplog.text and "boom" in caplog.text  # logged for the operator
    fine = ask(app, QUESTION)[-1]  # the next visitor (or the same one, again) gets an answer
    assert "330" in fine.chat[-1]["content"] and fine.notice == ""


def test_new_conversation_clears_everything_and_deletes_uploads(app):
    photo = upload(app, "photo.jpg", b"\xff\xd8 not really a jpeg")
    out = app.reset(str(photo), None)
    assert out.chat == [] and out.sources == "" and out.text == "" and out.image is None and out.audio is None
    assert isinstance(out.state, DialogueState) and not out.state.history and out.last_active == 0
    assert not photo.exists()


def test_kiosk_resets_only_after_idle_time(app):
    idle = 120
    assert not app.is_idle(0.0, idle, now=10_000)  # nothing happened since the last reset
    assert not app.is_idle(1000.0, idle, now=1000.0 + idle - 1)  # active a moment ago
    assert app.is_idle(1000.0, idle, now=1000.0 + idle)
    skip = app.idle_tick(None, None, 1000.0, idle_s=idle, now=1050.0)
    assert all(v == gr.skip() for v in skip)  # a tick changes nothing
    reset = app.idle_tick(None, None, 1000.0, idle_s=idle, now=1000.0 + idle + 5)
    assert reset.chat == [] and reset.last_active == 0 and isinstance(reset.state, DialogueState)
    # a turn counts as activity: its last_active is "now", so the next tick leaves the conversation alone
    last = ask(app, QUESTION)[-1]
    assert not app.is_idle(last.last_active, idle)


def test_both_layouts_build(app):
    assert isinstance(app.build_ui(), gr.Blocks)
    kiosk = app.build_ui(kiosk=True, idle_reset_s=30)
    assert any(isinstance(b, gr.Timer) for b in kiosk.blocks.values())
    assert not any(isinstance(b, gr.Timer) for b in app.build_ui().blocks.values())


def test_every_control_is_labelled(app):
    demo = app.build_ui()
    for block in demo.blocks.values():
        if isinstance(block, gr.Textbox | gr.Dropdown | gr.Checkbox | gr.Image | gr.Audio | gr.Chatbot):
            assert block.label, f"{type(block).__name__} without a label"
        if isinstance(block, gr.Button):
            assert block.value


def test_examples_per_language_come_from_the_tour_file(app):
    assert app._examples("minitour") == [["English", "How tall is the Eiffel Tower?"],
                                         ["Deutsch", "Wann wurde der Eiffelturm gebaut?"],
                                         ["Deutsch", "Was ist der Pont Neuf?"]]
    assert app._examples("no-such-tour") == []


def test_the_project_tours_offer_examples_in_each_of_their_languages():
    from guide.tours import load_tour

    for tour_id in ("paris", "rome"):
        tour = load_tour(HERE.parent / "tours" / tour_id)
        assert list(tour.examples) == tour.languages, tour_id


def test_bind_address(app, monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert app.server_name(kiosk=False, host="127.0.0.1") == "127.0.0.1"
    assert app.server_name(kiosk=True, host="0.0.0.0") == "127.0.0.1"
    monkeypatch.setenv("SPACE_ID", "someone/tour-guide")
    assert app.server_name(kiosk=False, host="127.0.0.1") == "0.0.0.0"
    assert app.server_name(kiosk=True, host="127.0.0.1") == "127.0.0.1"


def test_kiosk_private_temp_dir(app, monkeypatch):
    registered = []
    monkeypatch.setattr(app.atexit, "register", lambda fn, *a, **k: registered.append((fn, a, k)))
    monkeypatch.setenv("GRADIO_TEMP_DIR", "/somewhere/else")
    path = app.private_temp_dir()
    try:
        assert app.get_upload_folder() == str(path) and (path.stat().st_mode & 0o077) == 0
        fn, args, kwargs = registered[0]
        fn(*args, **kwargs)  # what runs at exit
        assert not path.exists()
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_kiosk_browser_needs_a_display(app, monkeypatch, tmp_path, caplog):
    started = []
    monkeypatch.setattr(app.subprocess, "Popen", lambda args, **kw: started.append(args) or "proc")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    caplog.set_level("INFO", logger="guide.app")
    assert app.open_kiosk_browser("http://127.0.0.1:7860/", tmp_path) is None
    assert "http://127.0.0.1:7860/" in caplog.text and not started
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setattr(app, "CHROMIUM", str(fake))
    monkeypatch.setenv("DISPLAY", ":0")
    assert app.open_kiosk_browser("http://127.0.0.1:7860/", tmp_path / "profile") == "proc"
    assert started[0][0] == str(fake) and "--kiosk" in started[0] and "http://127.0.0.1:7860/" in started[0]
    assert f"--user-data-dir={tmp_path / 'profile'}" in started[0]


def test_spaces_gpu_decorator_wraps_the_turn(app, monkeypatch):
    wrapped = []

    def gpu(duration=None):
        def decorate(fn):
            wrapped.append((fn.__name__, duration))
            return fn
        return decorate

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    try:
        importlib.reload(app)
        assert wrapped == [("_turns", app.TURN_SECONDS)]
        app.get_guide.cache_clear()
        assert "330" in ask(app, QUESTION)[-1].chat[-1]["content"]
    finally:
        monkeypatch.delitem(sys.modules, "spaces")
        importlib.reload(app)
        app.get_guide.cache_clear()
    assert app.spaces is None
