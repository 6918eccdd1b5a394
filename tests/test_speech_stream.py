"""Speaking while the answer is written, not answering what was not heard, and an answer model that dies
mid-answer: stream_turn with scripted (fake) models, so every ordering is decided by events, not timing."""

import logging
import threading
import types

import numpy as np
import pytest

from guide.asr import Segment, Transcript, doubt_about
from guide.dialogue import DialogueState
from guide.errors import GuideError
from guide.lang import LANGUAGES, phrase
from guide.pipeline import answer_turn, stream_turn
from guide.speech_stream import SpeechStream
from guide.tts import Speech, clean_for_speech, split_sentences
from guide.tts_text import split_clauses

QUESTION = "Tell me about the Eiffel Tower."
FIRST = "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars [1]. "
SECOND = "It was built by the company of Gustave Eiffel [1]."


class ScriptedLLM:
    """An answer model that writes the given pieces in order. `gates[i]`: an event it waits for (up to
    `patience` seconds) before writing piece i, `waited[i]` says whether it came; an Exception among the
    pieces is raised there, as a supervised model process that dies mid-answer makes its backend do."""

    name = "scripted"
    can_judge = False

    def __init__(self, pieces, gates=None, patience: float = 5.0):
        self.pieces, self.gates, self.patience = list(pieces), dict(gates or {}), patience
        self.waited: dict[int, bool] = {}
        self.calls = 0
        self.finished = threading.Event()  # set once the last piece was written

    def stream(self, messages, *, max_tokens, temperature=0.0, stop=None):
        self.calls += 1
        for i, piece in enumerate(self.pieces):
            if i in self.gates:
                self.waited[i] = self.gates[i].wait(self.patience)
            if isinstance(piece, Exception):
                raise piece
            yield piece
        self.finished.set()

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 3)


def said_aloud(text: str) -> list[str]:
    """What a voice is given for an answer: its sentences, clause by clause (SpeechStream)."""
    return [c for s in split_sentences(clean_for_speech(text)) for c in split_clauses(s)]


class FakeVoices:
    """tts.Voices stand-in: a sentence becomes 0.1 s of signal per 10 characters; `said` records every
    text it was asked to speak, `spoke` is set once it has spoken, `while_writing` says whether the
    answer model had finished by then."""

    def __init__(self, llm: ScriptedLLM | None = None):
        self.llm = llm
        self.said: list[str] = []
        self.spoke = threading.Event()
        self.while_writing: bool | None = None
        self._counts: dict[int, threading.Event] = {}

    def said_at_least(self, n: int) -> threading.Event:
        """An event set once `n` sentences have been spoken."""
        return self._counts.setdefault(n, threading.Event())

    def synthesize(self, text: str, lang: str) -> Speech:
        if self.while_writing is None and self.llm is not None:
            self.while_writing = not self.llm.finished.is_set()
        self.said.append(text)
        self.spoke.set()
        for n, event in self._counts.items():
            if len(self.said) >= n:
                event.set()
        return Speech(np.full(1600 * max(1, len(text) // 10), 0.1, np.float32), 16000, f"fake:{lang}")

    def stream(self, text: str, lang: str):
        for sentence in split_sentences(clean_for_speech(text)):
            yield self.synthesize(sentence, lang)


def scripted(guide, pieces, gates=None, voices=None, patience: float = 5.0):
    """Put a scripted LLM (and fake voices) into a loaded guide."""
    guide.llm = ScriptedLLM(pieces, gates, patience)
    guide._tts = voices or FakeVoices(guide.llm)
    return guide.llm, guide._tts


# --- audio while the answer is written ------------------------------------------------------------


def listen(guide, state=None, gate: threading.Event | None = None, **inputs):
    """Every Turn of one spoken turn; `gate` is set as soon as a Turn still being written carries speech."""
    turns = []
    for turn in stream_turn(guide, state or DialogueState(), tour="minitour", speak=True, **inputs):
        turns.append(turn)
        if gate is not None and turn.speech and not turn.done:
            gate.set()
    return turns


def test_first_sentence_is_heard_before_the_answer_is_finished(tiny_guide):
    heard = threading.Event()
    # the model writes the first sentence and the start of the second, then waits until the visitor has
    # the first sentence's audio (a Turn carrying it has reached the caller) before it writes the rest
    llm, voices = scripted(tiny_guide, [FIRST, "It was built", " by the company of Gustave Eiffel [1]."],
                           gates={2: heard})
    turns = listen(tiny_guide, gate=heard, text=QUESTION)
    assert llm.waited == {2: True}, "no speech reached the visitor while the answer was being written"
    assert voices.while_writing is True
    during = [t for t in turns if t.speech and not t.done]
    assert "Gustave" not in during[0].answer and len(during[0].speech) == 1
    last = turns[-1]
    assert last.done and last.answer == (FIRST + SECOND).strip()
    # what is heard is exactly what is shown, once, in order, without the [1] markers
    assert voices.said == said_aloud(last.answer) and not last.speech_replaced
    assert "[1]" not in " ".join(voices.said) and len(last.speech) == 2
    t = last.timings
    assert 0 < t["first_token"] <= t["first_sentence"] <= t["llm"]
    assert 0 < t["first_audio"] <= t["total"] and {"retrieval", "prompt", "tts_first", "tts"} <= set(t)


def test_the_turn_carries_speech_as_it_grows(tiny_guide):
    heard = threading.Event()
    third = " Visitors can take lifts or the stairs to its three levels [1]."
    scripted(tiny_guide, [FIRST, SECOND, " Visitors", third[len(" Visitors"):]], gates={3: heard})
    turns = listen(tiny_guide, gate=heard, text=QUESTION)
    counts = [len(t.speech) for t in turns]
    assert counts == sorted(counts) and counts[-1] == 3 and 0 < min(c for c in counts if c) < 3
    assert turns[0].speech is not turns[-1].speech  # each Turn yielded keeps what it had


def test_a_refusal_found_late_is_not_spoken_before_it(tiny_guide):
    # "nicht beschrieben" (the first sentence declines) is past AnswerStream's first look (24 characters):
    # the start streams, then the guide's own refusal takes its place
    voices = FakeVoices()
    # before its last piece the model waits a moment for speech: had the first sentence gone to the
    # voice, it would have been spoken by then
    llm, _ = scripted(tiny_guide, ["Der Eiffelturm im Marsfeld ", "ist leider nicht beschrieben. ",
                                   "Mehr weiß ich nicht.", " Tut mir leid."], gates={3: voices.spoke}, voices=voices,
                      patience=1.0)
    last = listen(tiny_guide, text="Erzähl mir vom Eiffelturm.")[-1]
    assert last.refused and last.answer.startswith("Das tut mir leid") and llm.waited == {3: False}
    assert voices.said == said_aloud(last.answer)  # only the guide's own refusal
    assert not last.speech_replaced


def test_a_polite_opening_is_spoken_once_its_sentence_shows_an_answer(tiny_guide):
    # "Unfortunately," opens a refusal as often as an answer: held until its sentence ends, then it is
    # an answer, spoken while the model is still writing, and never replaced
    voices = FakeVoices()
    opening = "Unfortunately, the Eiffel Tower was only meant to stand for twenty years [1]. "
    pieces = ["Unfortunately, the Eiffel ", opening[len("Unfortunately, the Eiffel "):], "It was built",
              SECOND[len("It was built"):]]
    llm, _ = scripted(tiny_guide, pieces, gates={3: voices.spoke}, voices=voices)
    last = listen(tiny_guide, text=QUESTION)[-1]
    assert not last.refused and last.answer == (opening + SECOND).strip()
    assert llm.waited == {3: True}  # the first sentence was heard before the model finished the second
    assert voices.said == said_aloud(last.answer) and not last.speech_replaced


def test_an_answer_with_an_invented_number_is_not_spoken_on(tiny_guide, caplog):
    heard, voices = threading.Event(), FakeVoices()
    # the first sentence is heard; then the model invents a number, and the guide withdraws the answer.
    # Before its last piece the model waits a moment for a second sentence to be spoken: had the one
    # with the number gone to the voice, it would have been spoken by then.
    llm, _ = scripted(tiny_guide, [FIRST, "It has", " 1710 steps to the top [1]. ", "Come early.", " Bye."],
                      gates={2: heard, 4: voices.said_at_least(2)}, voices=voices, patience=1.0)
    caplog.set_level(logging.INFO, logger="guide.pipeline")
    last = listen(tiny_guide, gate=heard, text=QUESTION)[-1]
    assert llm.waited == {2: True, 4: False} and last.refused and "1710" not in last.answer
    assert not any("1710" in s or "Come early" in s for s in voices.said)  # never spoken
    refusal = said_aloud(last.answer)
    assert voices.said[0] == clean_for_speech(FIRST) and voices.said[1:] == refusal
    # the first sentence was already heard: the answer's speech restarts with what the visitor reads
    assert last.speech_replaced and len(last.speech) == len(refusal)
    assert "changed after it was partly spoken" in caplog.text


def test_a_long_sentence_is_heard_clause_by_clause():
    """The first clause's audio is taken while the voice still makes the second; the sentence counts
    as spoken once its last clause is."""
    release = threading.Event()

    class SlowSecond(FakeVoices):
        def synthesize(self, text, lang):
            if self.said:  # the second clause waits until the first has been taken
                assert release.wait(5)
            return super().synthesize(text, lang)

    voices = SlowSecond()
    long = "The tower was built for the World's Fair of 1889, and it stayed the tallest structure until 1930."
    stream = SpeechStream(voices, "en", question=QUESTION, guards=False)
    try:
        stream.finish(long)
        first = stream.take(wait=True)
        assert len(first) == 1 and stream.spoken == [] and stream.pending == 1
        release.set()
        rest = []
        while stream.pending:
            rest += stream.take(wait=True)
    finally:
        stream.close()
    assert voices.said == ["The tower was built for the World's Fair of 1889,",
                           "and it stayed the tallest structure until 1930."]
    assert len(rest) == 1 and stream.spoken == [long] and stream.first_audio_at is not None


def test_speech_of_an_unchanged_answer_is_not_replaced():
    voices = FakeVoices()
    stream = SpeechStream(voices, "en", question=QUESTION)
    try:
        stream.feed(FIRST + "It")
        assert stream.queued == [clean_for_speech(FIRST)]
        while stream.pending:
            stream.take(wait=True)
        stream.finish(FIRST + SECOND + " [2]")  # a citation cleaned up: the same words
        while stream.pending:
            stream.take(wait=True)
    finally:
        stream.close()
    assert voices.said == [clean_for_speech(FIRST), clean_for_speech(SECOND)] and not stream.replaced


def test_speech_waits_while_the_answer_only_repeats_the_question():
    voices = FakeVoices()
    source = types.SimpleNamespace(passage=types.SimpleNamespace(text="The tower is 330 metres tall."))
    stream = SpeechStream(voices, "en", question="How tall is the Eiffel Tower exactly, please?", hits=[source])
    try:
        stream.feed("How tall is the Eiffel Tower exactly? Please")  # an echo: it would be asked again
        assert stream.queued == []
        stream.feed("How tall is the Eiffel Tower exactly? It is 330 metres tall [1]. It")
        assert len(stream.queued) == 2  # no longer an echo: both sentences go
    finally:
        stream.close()


def test_a_voice_that_fails_leaves_the_answer_on_screen(tiny_guide):
    class Mute(FakeVoices):
        def synthesize(self, text, lang):
            raise GuideError(f"I have no voice for the language {lang!r}.")

    scripted(tiny_guide, [FIRST, SECOND], voices=Mute())
    last = answer_turn(tiny_guide, DialogueState(), text=QUESTION, tour="minitour", speak=True)
    assert last.done and "Gustave" in last.answer and not last.speech and "no voice" in last.notice


# --- not answering what was not heard -------------------------------------------------------------


class FakeASR:
    """Hands back a given Transcript for any recording."""

    name = "fake"

    def __init__(self, transcript: Transcript):
        self.transcript = transcript

    def transcribe(self, wav, languages=None, language=None):
        return self.transcript


def heard(text: str, lang: str, *, logprob: float = -0.3, detected: str | None = None, confidence: float = 0.95):
    return Transcript(text, lang, 0.9, (Segment(0.0, 2.0, text, logprob, 0.02, 1.1),), detected or lang, confidence)


RECORDING = (16000, (0.1 * np.sin(np.arange(32000) / 5)).astype(np.float32))


def test_an_unsure_transcript_is_not_answered_but_repeated_back_in_the_visitors_language(tiny_guide):
    llm, voices = scripted(tiny_guide, [FIRST, SECOND])
    state = DialogueState()
    answer_turn(tiny_guide, state, text="Wie hoch ist der Eiffelturm?", tour="minitour")  # a German visitor
    calls = llm.calls
    tiny_guide._asr = FakeASR(heard("Wie fach ist der Eifelwurm", "de", logprob=-1.3))
    turn = answer_turn(tiny_guide, state, audio=RECORDING, tour="minitour", speak=True)
    assert turn.done and llm.calls == calls and not turn.passages  # not answered
    assert turn.answer == turn.notice == phrase("heard_unsure", "de", heard="Wie fach ist der Eifelwurm")
    assert turn.language == "de" and len(state.history) == 2  # the conversation is as it was
    assert voices.said and voices.said == said_aloud(turn.answer)  # said aloud too
    assert "first_audio" in turn.timings


def test_a_sure_transcript_is_answered(tiny_guide):
    llm, _ = scripted(tiny_guide, [FIRST, SECOND])
    tiny_guide._asr = FakeASR(heard("Tell me about the Eiffel Tower.", "en"))
    turn = answer_turn(tiny_guide, DialogueState(), audio=RECORDING, tour="minitour")
    assert llm.calls == 1 and "Gustave" in turn.answer and turn.question == "Tell me about the Eiffel Tower."


def test_a_language_the_tour_does_not_speak_is_named_in_that_language(tiny_guide):
    llm, _ = scripted(tiny_guide, [FIRST])
    tiny_guide._asr = FakeASR(heard("Who is the tower?", "en", logprob=-0.9, detected="ko", confidence=0.99))
    turn = answer_turn(tiny_guide, DialogueState(), audio=RECORDING, tour="minitour")
    assert llm.calls == 0 and turn.language == "ko"
    assert turn.notice == phrase("heard_other_language", "ko", language="한국어", choices="English, Deutsch")


def test_a_recording_with_no_words_asks_again(tiny_guide):
    scripted(tiny_guide, [FIRST])
    tiny_guide._asr = FakeASR(Transcript("", "en", 0.0, (), "en", 0.3,
                                         (Segment(0, 2, "Thanks for watching!", -0.4, 0.9, 1.0),)))
    turn = answer_turn(tiny_guide, DialogueState(), audio=RECORDING, tour="minitour")
    assert turn.notice == phrase("not_heard", "en") and not turn.passages


@pytest.mark.parametrize("transcript, why", [
    (heard("How tall is it?", "en"), None),
    (heard("How tall is it?", "en", logprob=-0.79), None),
    (heard("How tall is it?", "en", logprob=-0.81), "unclear"),
    (heard("How tall is it?", "en", confidence=0.39), "unclear"),
    (heard("How tall is it?", "en", detected="it", confidence=0.97), "language"),
    (heard("How tall is it?", "en", detected="it", confidence=0.6), None),  # not sure it is Italian, words clear
    (Transcript("", "en", 0.0), None),  # silence: nothing to doubt
])
def test_doubt_limits(transcript, why):
    assert doubt_about(transcript, ["en", "de"]) == why


def test_every_new_phrase_is_in_every_language():
    for key in ("heard_unsure", "not_heard", "heard_other_language", "llm_failed", "speech_failed"):
        texts = {lang: phrase(key, lang, heard="x", language="y", choices="z") for lang in LANGUAGES}
        assert len(set(texts.values())) == len(LANGUAGES), key  # none falls back to English


# --- an answer model that dies mid-answer -------------------------------------------------------


def test_a_model_that_dies_mid_answer_ends_the_turn_cleanly(tiny_guide):
    llm, voices = scripted(tiny_guide, [FIRST, SECOND])
    state = DialogueState()
    answer_turn(tiny_guide, state, text="Wie hoch ist der Eiffelturm?", tour="minitour")
    before = (list(state.history), state.attraction, state.language, state.tour)
    assert state.attraction == "eiffel-tower"
    scripted(tiny_guide, ["Der Louvre wurde ", GuideError("the answer model's process died (SIGSEGV)")],
             voices=voices)
    turns = list(stream_turn(tiny_guide, state, text="Wann wurde der Louvre eröffnet?", tour="minitour", speak=True))
    last = turns[-1]
    assert last.done and sum(t.done for t in turns) == 1
    assert last.answer == last.notice == phrase("llm_failed", "de") and not last.citations
    assert (list(state.history), state.attraction, state.language, state.tour) == before  # not corrupted
    assert voices.said[-len(said_aloud(last.answer)):] == said_aloud(last.answer)  # the message is spoken too
    scripted(tiny_guide, ["Er wurde von der Firma von Gustave Eiffel gebaut [1]."])
    again = answer_turn(tiny_guide, state, text="Wer hat ihn gebaut?", tour="minitour")
    assert "Gustave Eiffel" in again.answer and len(state.history) == 4  # the next turn carries on


# --- the first-audio benchmark ------------------------------------------------------------------


def test_first_audio_benchmark_times_every_stage(tiny_guide, tiny_config):
    from guide.bench import FIRST_AUDIO_STAGES, bench_first_audio

    llm, voices = scripted(tiny_guide, [FIRST, SECOND])
    tiny_guide._asr = FakeASR(heard("Tell me about the Eiffel Tower.", "en"))
    report = bench_first_audio(tiny_config.replace(default_tour="minitour"), turns=3, guide=tiny_guide,
                               progress=False)
    assert report.startswith("3 turns on tour `minitour`; LLM `scripted`") and "en 0.8 s (fake:en)" in report
    rows = {line.split(" | ")[0].strip("| "): line for line in report.splitlines() if line.startswith("| ")}
    assert set(FIRST_AUDIO_STAGES) <= set(rows)
    assert tiny_guide.llm is llm and llm.calls == 4  # the warm-up and three turns; the guide's LLM is back
