"""Whole turns through answer_turn with the real offline models: spoken and photographed questions."""

import shutil
import subprocess

import numpy as np
import pytest

from guide.dialogue import DialogueState
from guide.pipeline import answer_turn

pytestmark = pytest.mark.slow


def _espeak_wav(text: str, voice: str, path) -> str:
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (make setup installs it)")
    subprocess.run(["espeak-ng", "-v", voice, "-s", "130", "-w", str(path), text], check=True)
    return str(path)


def test_spoken_german_question_gets_german_text_with_the_fact_and_german_speech(offline_guide, tmp_path):
    # espeak-ng's German is robotic; Whisper base hears "Eiferturm", which the guide still understands
    wav = _espeak_wav("Guten Tag, ich habe eine Frage zum Eiffelturm in Paris. Wie hoch ist der Turm?", "de",
                      tmp_path / "frage.wav")
    state = DialogueState()
    turn = answer_turn(offline_guide, state, audio=wav, tour="paris", speak=True)
    assert turn.transcript is not None and turn.transcript.language == "de"
    assert "paris" in turn.transcript.text.lower()
    assert turn.attraction == "eiffel-tower" and turn.language == "de" and not turn.refused
    assert "330" in turn.answer
    from guide.lang import detect_language

    assert detect_language(turn.answer, ["en", "fr", "de", "es"])[0] == "de"
    assert turn.speech and all(s.voice for s in turn.speech)
    seconds = sum(len(s.samples) / s.sample_rate for s in turn.speech)
    assert seconds > 1.0 and max(float(np.abs(s.samples).max()) for s in turn.speech) > 0.05
    assert {"asr", "retrieval", "llm", "tts"} <= set(turn.timings)


def test_silence_asks_the_visitor_to_speak_again(offline_guide, tmp_path):
    import wave

    path = tmp_path / "silence.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(16000 * 3, dtype=np.int16).tobytes())
    state = DialogueState()
    turn = answer_turn(offline_guide, state, audio=str(path), tour="paris")
    assert turn.notice and not turn.passages and not state.history


def test_corrupt_recording_is_a_friendly_notice(offline_guide, tmp_path):
    path = tmp_path / "broken.ogg"
    path.write_bytes(b"OggS" + bytes(range(256)) * 4)
    turn = answer_turn(offline_guide, DialogueState(), audio=str(path), tour="paris")
    assert turn.notice and "Traceback" not in turn.notice and not turn.passages
