"""SpeechStream: the answer spoken sentence by sentence while the LLM writes it."""

from __future__ import annotations

import logging
import queue
import re
import threading
import time

from .errors import GuideError
from .grounding import guard_set, is_echo, is_refusal, refusal_decided, unsupported_claims
from .lang import fold
from .retrieval import Hit
from .tts import clean_for_speech, split_sentences
from .tts_text import split_clauses

__all__ = ["SpeechStream"]

log = logging.getLogger(__name__)

# --- speaking while the answer is written ------------------------------------------------------------

# AnswerStream decides whether the model is declining from the first sentence of its text that says
# something, past a polite opening such as "Unfortunately," (grounding.is_refusal); nothing is spoken
# before that decision is settled, and never fewer than 40 folded characters.
_REFUSAL_WINDOW = 40
_TRAILING_NUMBER = re.compile(r"[\d\s.,\u202f\u00a0]+$")  # a number still being written: "built in 18"


def _key(text: str) -> str:
    """What two versions of a sentence must share to sound the same: letters and digits only."""
    return "".join(c for c in text.casefold() if c.isalnum())


def _after(spoken: list[str], final: list[str]) -> list[str] | None:
    """The sentences of `final` that follow the ones already `spoken`, or None when `final` does not
    begin with what was spoken (the answer changed)."""
    said, acc, i = "".join(_key(s) for s in spoken), "", 0
    while i < len(final) and len(acc) < len(said):
        acc += _key(final[i])
        i += 1
    return final[i:] if acc == said else None


class SpeechStream:
    """Speaks an answer while the LLM writes it.

    `feed(text)` is given the answer written so far; every sentence that is finished and will not be
    taken back goes to a worker thread that synthesises it, so the first sentence can be heard while
    the model writes the next. `take()` hands over the audio finished since the last call, in order.
    `finish(text)` is given the text the visitor finally reads: what was not spoken yet is spoken; if
    the answer changed after part of it was spoken (a withdrawn answer, an echo asked again, a
    refusal found late), the final answer is spoken from the start, `replaced` is set and it is logged.

    A sentence is held back while AnswerStream may still replace it: until its refusal check is
    settled, while the text so far only repeats the question (it would be asked again) or opens like a
    pasted list of sources; once the text holds a number no source gave, nothing more is spoken until
    the end (the answer will be withdrawn). Citations and markdown are never spoken (tts.clean_for_speech).
    """

    def __init__(self, tts, lang: str, *, question: str = "", hits: list[Hit] | None = None, guards=True):
        self.tts, self.lang, self.question, self.hits = tts, lang, question, hits or []
        self.guards = guard_set(guards)  # the answer guards that may still replace the text (grounding.GUARDS)
        self.speech: list = []  # tts.Speech of each sentence taken so far, in order
        self.spoken: list[str] = []  # the sentences whose audio has been taken (heard), in order
        self.queued: list[str] = []  # the sentences given to the voice, in order
        self.replaced = False  # the answer changed after part of it was heard; `speech` is the final one
        self.error: Exception | None = None  # why the voice stopped (a GuideError's message is for the visitor)
        self.first_sentence_at: float | None = None  # perf_counter() when the first sentence went to the voice
        self.first_audio_at: float | None = None  # perf_counter() when its audio was ready
        self.first_tts_s = 0.0  # seconds the voice took for the first sentence
        self.tts_s = 0.0  # seconds the voice spent, in all
        self._hold = False  # a number no source gave: nothing more until finish()
        self._closed = False
        self._epoch = 0  # sentences queued before a change of answer are dropped
        self._pending = 0
        self.notify = None  # called (from the worker thread) each time a sentence's audio is ready
        self._todo: queue.SimpleQueue = queue.SimpleQueue()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._work, name="tts", daemon=True)
        self._worker.start()

    @property
    def pending(self) -> int:
        """Sentences given to the voice whose audio has not been taken yet."""
        return self._pending

    def feed(self, text: str) -> None:
        """The answer written so far: give the voice each newly finished sentence that is safe to say."""
        if self._closed or self._hold or self.error is not None:
            return
        finished = split_sentences(clean_for_speech(text))[:-1]  # the last one may still grow
        if len(finished) <= len(self.queued) or not self._settled(text, finished):
            return
        for sentence in finished[len(self.queued):]:
            self._say(sentence)

    def _settled(self, text: str, finished: list[str]) -> bool:
        if len(fold(text)) < _REFUSAL_WINDOW or not refusal_decided(text) or is_refusal(text):
            return False  # AnswerStream may still put its own refusal in place of this
        if "dump" in self.guards and re.match(r"\s*\[\d+\]", text):
            return False  # a pasted source list: replaced at the end
        if "echo" in self.guards and is_echo(" ".join(finished), self.question):
            return False  # a repeated question: asked again at the end
        if "numbers" not in self.guards:
            return True
        invented = unsupported_claims(_TRAILING_NUMBER.sub("", text), self.hits, self.question)
        if invented:
            log.info("not speaking on: the answer has numbers no source gave (%s), it will be withdrawn",
                     ", ".join(invented))
            self._hold = True
            return False
        return True

    def finish(self, text: str) -> None:
        """The final answer text: speak what is left of it (all of it when it changed)."""
        if self._closed:
            return
        self._closed = True
        if self.error is not None:
            return
        final = split_sentences(clean_for_speech(text))
        rest = _after(self.queued, final)
        if rest is None:
            self._epoch += 1  # what was queued but not heard yet is dropped
            rest = _after(self.spoken, final)
            if rest is None:
                log.warning("the answer changed after it was partly spoken (%r, now %r); speaking the final answer",
                            " ".join(self.spoken), text)
                self.replaced, self.speech, self.spoken = True, [], []
                rest = final
            self.queued = list(self.spoken)
        for sentence in rest:
            self._say(sentence)

    def _say(self, sentence: str) -> None:
        if self.first_sentence_at is None:
            self.first_sentence_at = time.perf_counter()
        self.queued.append(sentence)
        self._pending += 1
        self._todo.put((self._epoch, sentence))

    def take(self, *, wait: bool = False) -> list:
        """The audio finished since the last call, in order; with `wait`, blocks until there is some
        (or nothing is pending)."""
        new = []
        while self._pending:
            try:
                epoch, sentence, speech, seconds, error, at = self._done.get(block=wait and not new)
            except queue.Empty:
                break
            self.tts_s += seconds
            if sentence is not None:  # the sentence's last clause (or none to say)
                self._pending -= 1
            if epoch != self._epoch or self.error is not None:
                continue  # a sentence of an answer that changed, or after the voice failed
            if error is not None:
                self.error = error
                if isinstance(error, GuideError):
                    log.warning("no speech for this answer: %s", error)
                else:
                    log.error("speech synthesis failed; the answer stays silent", exc_info=error)
                continue
            if self.first_audio_at is None:
                self.first_audio_at, self.first_tts_s = at, seconds
            if sentence is not None:
                self.spoken.append(sentence)
            if speech is not None and len(speech.samples):
                self.speech.append(speech)
                new.append(speech)
        return new

    def close(self) -> None:
        """Stop the worker (sentences not synthesised yet are dropped)."""
        self._epoch += 1
        self._closed = True
        self._todo.put(None)

    def _work(self) -> None:
        # a sentence is said clause by clause (tts_text.split_clauses): its first clause can be heard while
        # the voice makes the next; `take` counts the sentence as spoken with its last clause
        while (item := self._todo.get()) is not None:
            epoch, sentence = item
            if epoch != self._epoch:
                self._done.put((epoch, sentence, None, 0.0, None, 0.0))
                continue
            clauses = split_clauses(sentence)
            for i, clause in enumerate(clauses):
                t = time.perf_counter()
                speech = error = None
                try:
                    speech = self.tts.synthesize(clause, self.lang)
                except Exception as e:  # handed to the turn: the answer stays on screen, silent
                    error = e
                done = time.perf_counter()
                last = i == len(clauses) - 1 or error is not None or epoch != self._epoch
                self._done.put((epoch, sentence if last else None, speech, done - t, error, done))
                if self.notify is not None:
                    self.notify()
                if last:
                    break
