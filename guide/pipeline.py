"""answer_turn(): one visitor turn — photo, speech and/or text in, a grounded answer (text + speech) out."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from .answer import AnswerStream, load_llm
from .config import GuideConfig, load_config
from .dialogue import DialogueState, find_attractions, question_language
from .errors import GuideError, ModelUnavailable, TourError
from .lang import language_name, phrase
from .messages import message as say
from .prepare import Prepared, prepare_prompt
from .replies import not_heard, not_recognised, what_is_this
from .retrieval import Hit, ensure_index, load_embedder
from .speech_stream import SpeechStream
from .tours import Tour, list_tours, load_tour

__all__ = ["Guide", "Turn", "SpeechStream", "answer_turn", "stream_turn"]

log = logging.getLogger(__name__)


@dataclass
class Turn:
    """Everything one visitor turn produced, as plain data for the UI, the CLI and the evaluation."""

    question: str = ""
    language: str = "en"
    attraction: str | None = None  # id of the attraction the answer is about
    attraction_name: str | None = None
    passages: list[Hit] = field(default_factory=list)
    answer: str = ""
    refused: bool = False  # the guide said its sources do not answer this
    citations: list[int] = field(default_factory=list)
    raw: str = ""  # what the model said, before the guide's post-processing
    notice: str | None = None  # a visitor-facing message about the input (too long, unsupported language...)
    transcript: object | None = None  # asr.Transcript when the visitor spoke
    recognition: object | None = None  # vision.Recognition when the visitor showed a photo
    speech: list = field(default_factory=list)  # tts.Speech per sentence, when asked to speak; grows while streaming
    preface: str = ""  # said before the answer (the subject's name, "Eiffelturm."), while the answer is written
    preface_speech: list = field(default_factory=list)  # its tts.Speech; played before `speech`
    speech_replaced: bool = False  # the answer changed after part of it was spoken: `speech` restarted with it
    done: bool = False
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


class Guide:
    """The loaded tours, indexes and models, built once and shared by every visitor."""

    def __init__(self, config: GuideConfig, tours: dict[str, Tour], indexes: dict, embedder, llm,
                 problems: dict[str, str] | None = None):
        self.config, self.tours, self.indexes, self.embedder, self.llm = config, tours, indexes, embedder, llm
        self.problems = problems or {}  # tour id (or a stage) -> why it could not be loaded
        self.health: dict[str, str] = {}  # stage -> its start-up self-check (doctor, the app's status line)
        if llm is not None:
            self.health["llm"] = getattr(llm, "self_check", None) or f"{llm.name} in this process"
        # one lock per resource: building one tour's photo index must not hold up every visitor's speech
        self._locks = {"asr": threading.Lock(), "tts": threading.Lock(), "vision": threading.Lock()}
        self._asr = self._tts = None
        self._recognizers: dict[str, object] = {}
        # the audio of the guide's own short phrases (a place's name said first, "I could not hear you"):
        # a few hundred of them in all, each made once, when first said (Kokoro takes 0.3-1.4 s for a name
        # on two cores). Not all at start-up: ~130 names took the first minute's two cores (a first
        # visitor's first token came after 35 s, and the kiosk's own browser stalled)
        self._phrases: OrderedDict[tuple[str, str], list] = OrderedDict()
        self._phrases_lock = threading.Lock()

    PHRASES_KEPT = 256  # phrases whose audio is kept, the most recently said

    def phrase_speech(self, text: str, lang: str) -> list:
        """The speech of one of the guide's own short phrases, made once and then reused."""
        key = (text, lang)
        with self._phrases_lock:
            if key in self._phrases:
                self._phrases.move_to_end(key)
                return list(self._phrases[key])
        speech = list(self.tts.stream(text, lang))
        with self._phrases_lock:
            self._phrases[key] = speech
            while len(self._phrases) > self.PHRASES_KEPT:
                self._phrases.popitem(last=False)
        return list(speech)

    @classmethod
    def load(cls, config: GuideConfig | None = None, *, tours: list[str] | None = None, llm=None,
             progress: bool = True) -> Guide:
        """Load tours (a broken one is reported and skipped), build stale indexes, load the embedder and LLM."""
        config = config or load_config()
        available = list_tours(config.tours_dir)
        unknown = [t for t in tours or [] if t not in available]
        if unknown:
            raise GuideError(f"tour {unknown[0]!r} is not available (no such tour); tours: {', '.join(available)}")
        embedder = load_embedder(config.embedder, threads=config.threads, device=config.device)
        loaded, indexes, problems = {}, {}, {}
        for tour_id in tours or available:
            try:
                tour = load_tour(Path(config.tours_dir) / tour_id)
            except TourError as e:
                log.error("tour %s skipped:\n%s", tour_id, e)
                problems[tour_id] = str(e)
                continue
            loaded[tour.id] = tour
            indexes[tour.id] = ensure_index(tour, embedder, config.index_dir, progress=progress)
        if not loaded:
            raise GuideError(f"no usable tour in {config.tours_dir}" + "".join(f"\n{p}" for p in problems.values()))
        if llm is None:
            try:
                llm = load_llm(config.llm, cache_dir=config.cache_dir, n_ctx=config.llm_context,
                               threads=config.threads, device=config.device, adapter=config.adapter,
                               isolate=config.llm_isolated)
            except ModelUnavailable as e:
                # keep serving: quote the best source sentence instead, and say why on every answer
                log.error("LLM %s unavailable (%s); answering with quotes from the sources", config.llm, e)
                problems["llm"] = str(e)
                llm = load_llm("extractive", cache_dir=config.cache_dir)
        return cls(config, loaded, indexes, embedder, llm, problems)

    def tour(self, tour_id: str | None) -> Tour:
        tour_id = tour_id or (self.config.default_tour if self.config.default_tour in self.tours else None)
        tour_id = tour_id or next(iter(self.tours))
        if tour_id not in self.tours:
            why = self.problems.get(tour_id)
            known = ", ".join(self.tours)
            raise GuideError(f"tour {tour_id!r} is not available ({why or 'unknown tour'}); tours: {known}")
        return self.tours[tour_id]

    def languages(self) -> list[str]:
        return sorted({lang for tour in self.tours.values() for lang in tour.languages})

    # Speech and vision load on first use (or at start-up, `warm`), once, for everyone. The native
    # ones are self-checked in a child process first (guide.selfcheck): a crash there means a fallback,
    # not a dead server.
    @property
    def asr(self):
        with self._locks["asr"]:
            if self._asr is None:
                from .asr import load_asr

                backend = self.config.asr_backend
                if self.config.self_check and backend == "faster-whisper":
                    from .selfcheck import check_asr

                    check = check_asr(self.config)
                    self.health["asr"] = check.line()
                    if check.status in ("crashed", "hung"):
                        log.error("faster-whisper %s in its self-check (%s); using openai-whisper", check.status,
                                  check.detail)
                        self.problems["asr"] = (f"speech recognition on CTranslate2 {check.status} in its "
                                                f"self-check ({check.detail}); openai-whisper is used instead")
                        backend = "openai-whisper"
                self._asr = load_asr(self.config.asr, backend=backend, cache_dir=self.config.cache_dir,
                                     device=self.config.device, beam_size=self.config.asr_beam)
            return self._asr

    @property
    def tts(self):
        with self._locks["tts"]:
            if self._tts is None:
                from .tts import load_tts

                name = self.config.tts
                broken: list[str] = []
                if self.config.self_check:
                    from .selfcheck import check_tts

                    check = check_tts(self.config, self.languages())
                    self.health["tts"] = check.line()
                    if check.status in ("crashed", "hung"):
                        self.problems["tts"] = f"a voice failed its self-check: {check.detail}"
                        log.error("TTS self-check: %s", check.detail)
                        broken = check.broken or ["*"]
                if broken == ["*"]:  # loading the voices itself failed: espeak-ng only
                    name = "espeak-ng"
                self._tts = load_tts(name)
                for lang in broken if broken != ["*"] else []:
                    self._tts.routes.pop(lang, None)  # espeak-ng, the fallback, speaks it
            return self._tts

    def warm(self) -> threading.Thread:
        """Load (and self-check) speech, each tour language's voice and each tour's photo recognizer now,
        in the background, instead of at the first visitor who needs one (a Kokoro voice or a photo
        index is hundreds of MB and seconds to load)."""

        def load():
            for stage in ("asr", "tts"):
                try:
                    getattr(self, stage)
                except Exception:  # noqa: BLE001 - reported again, to the visitor, when the stage is used
                    log.exception("could not load %s at start-up", stage)
            languages = dict.fromkeys(lang for tour in self.tours.values() for lang in tour.languages)
            for lang in languages:
                try:
                    self.tts.synthesize(phrase("sources", lang), lang)
                except Exception:  # noqa: BLE001 - a language without a voice is told so when it speaks
                    log.warning("no voice warmed for %s", lang, exc_info=True)
            for tour in self.tours.values():
                try:
                    self.recognizer(tour)
                except Exception:  # noqa: BLE001 - the visitor who shows a photo is told
                    log.warning("photo recognition not warmed for %s", tour.id, exc_info=True)

        thread = threading.Thread(target=load, name="guide-warm", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Stop the answer model's process, if it has one."""
        close = getattr(self.llm, "close", None)
        if close is not None:
            close()

    def recognizer(self, tour: Tour):
        with self._locks["vision"]:
            if tour.id not in self._recognizers:
                from .vision import load_recognizer

                self._recognizers[tour.id] = load_recognizer(self.config.vision, tour=tour,
                                                             index_root=self.config.index_dir,
                                                             cache_dir=self.config.cache_dir,
                                                             device=self.config.device)
            return self._recognizers[tour.id]

    def search(self, tour: Tour, text: str, *, k: int | None = None, attractions: list[str] | None = None,
               lang: str | None = None) -> list[Hit]:
        """One search outside a turn (the evaluation's retrieval probe); a turn uses its own prepare.Searcher."""
        from .prepare import Searcher

        return Searcher(self, tour)(text, k=k, attractions=attractions, lang=lang)


def preface_text(name: str | None, lang: str) -> str:
    """What is said first of an answer about one place: its name, as a sentence ("Eiffelturm.")."""
    return name + ("。" if lang in ("zh", "ja") else ".") if name else ""


def _spoken(guide: Guide, text: str, lang: str) -> tuple[list, str | None]:
    """Speech of a short message from the guide itself, and a notice if it could not be spoken."""
    try:
        return guide.phrase_speech(text, lang), None
    except GuideError as e:
        log.warning("no speech for %r: %s", text, e)
        return [], e.visitor(lang)


def _finish_early(turn: Turn, guide: Guide, message: str, lang: str, *, speak: bool, t_start: float) -> Turn:
    """A turn that ends before any answer: `message` is the notice and the reply (spoken when asked)."""
    turn.notice = turn.answer = message
    turn.language = lang
    if speak:
        t = time.perf_counter()
        turn.speech, problem = _spoken(guide, message, lang)
        turn.timings["tts"] = time.perf_counter() - t
        if turn.speech:
            turn.timings["first_audio"] = time.perf_counter() - t_start
        if problem:
            turn.notice = f"{message}\n{problem}"
    turn.timings["total"] = time.perf_counter() - t_start
    turn.done = True
    return turn


def stream_turn(guide: Guide, state: DialogueState, *, text: str | None = None, audio=None, image=None,
                tour: str | None = None, speak: bool = False) -> Iterator[Turn]:
    """Run one visitor turn, yielding the Turn as it grows; the last has done=True.

    The answer text streams as the LLM writes it. With `speak`, each finished sentence is synthesised
    in a worker thread while the next is written (SpeechStream): `turn.speech` grows sentence by
    sentence, and on the last Turn it is the speech of exactly the text shown. `timings` holds the
    seconds per stage (decode, asr, retrieval, prompt, first_token, first_sentence and llm from the
    start of generation, tts_first, tts) and first_audio / total from the start of the turn. With
    `config.spoken_preface`, a turn about one attraction first says its name (`turn.preface_speech`, at
    timings preface_audio) while the model reads its prompt.

    Visitor mistakes (empty or over-long question, unreadable photo or recording) come back as
    `turn.notice`, never as an exception, and so does a recording the guide is not sure it understood
    (it says what it heard and asks again): the state is left as it was. So is an answer model that
    fails in the middle of an answer (a GuideError from its stream): the visitor is asked to try again.
    """
    t_start = time.perf_counter()
    tour_obj = guide.tour(tour or state.tour)
    if state.tour != tour_obj.id:
        state.reset()
        state.tour = tour_obj.id
    ui_lang = state.language_override or state.language or tour_obj.languages[0]
    turn = Turn(language=ui_lang)
    timings = turn.timings
    question = (text or "").strip()
    if not any(c.isalnum() for c in question):  # emoji or punctuation only: nothing to search for
        question = ""
    if image is not None and question and not state.language_override and \
            len(question) <= guide.config.max_question_chars:
        # a typed question beside a photo says the visitor's language: problems with the photo are told in
        # it (only then: resolve detects the question's language anyway, once per turn is enough otherwise)
        typed = question_language(question, tour_obj, state.language)[0]
        ui_lang = typed if typed in tour_obj.languages else ui_lang

    seen = None
    if image is not None:
        t = time.perf_counter()
        try:
            from .vision import load_image

            photo = load_image(image)
            try:
                recognizer = guide.recognizer(tour_obj)
            except ModelUnavailable as e:  # for the operator (log, doctor); the visitor is asked to use words
                log.warning("photo recognition unavailable: %s", e)
                guide.problems["vision"] = str(e)
                raise GuideError(phrase("photo_unavailable", ui_lang)) from e
            turn.recognition = recognizer.recognize(photo)
            seen = getattr(turn.recognition, "attraction", None)
        except GuideError as e:
            turn.notice = e.visitor(ui_lang)
        timings["vision"] = time.perf_counter() - t
    if audio is not None and not question:
        doubt = None
        try:
            from .asr import doubt_about
            from .audio import to_mono_16k

            t = time.perf_counter()
            wav = to_mono_16k(audio)
            timings["decode"] = time.perf_counter() - t
            t = time.perf_counter()
            langs = [state.language_override] if state.language_override else tour_obj.languages
            turn.transcript = guide.asr.transcribe(wav, languages=langs)
            timings["asr"] = time.perf_counter() - t
            question = turn.transcript.text.strip()
            doubt = doubt_about(turn.transcript, tour_obj.languages)
            if not question and not seen:
                doubt = doubt or "nothing"
        except GuideError as e:
            turn.notice = e.visitor(ui_lang)
        if doubt:
            log.info("not answering a recording (%s): heard %r in %s", doubt, question, turn.transcript.language)
            message, lang = not_heard(turn.transcript, doubt, tour_obj, state)
            yield _finish_early(turn, guide, message, lang, speak=speak, t_start=t_start)
            return
    rec = turn.recognition
    if rec is not None and not seen and not find_attractions(question, tour_obj):
        # a photo it does not recognise, and nothing in words says which place is meant: answering
        # "when was it built?" would be about some other place, so it asks instead
        lang = state.language_override or (
            turn.transcript.language if turn.transcript is not None and turn.transcript.text
            else question_language(question, tour_obj, state.language)[0] if question else ui_lang)
        yield _finish_early(turn, guide, not_recognised(rec, tour_obj, lang), lang, speak=speak,
                            t_start=t_start)
        return
    if not question and seen:
        question = what_is_this(ui_lang)
    if not question:
        yield _finish_early(turn, guide, turn.notice or phrase("empty_question", ui_lang), ui_lang, speak=False,
                            t_start=t_start)
        return
    if len(question) > guide.config.max_question_chars:
        yield _finish_early(turn, guide, phrase("too_long", ui_lang, n=len(question)), ui_lang, speak=False,
                            t_start=t_start)
        return

    heard = turn.transcript.language if turn.transcript is not None and turn.transcript.text else None
    prepared = prepare_prompt(guide, state, question, tour_obj, seen=seen, heard=heard, timings=timings)
    query = prepared.query
    turn.question, turn.language = question, query.language
    if query.detected != query.language and query.detected not in tour_obj.languages:
        turn.notice = say("unsupported_language", query.language, language=language_name(query.detected),
                              choices=", ".join(language_name(c) for c in tour_obj.languages),
                              answer=language_name(query.language))
    turn.passages = prepared.hits
    turn.attraction = prepared.attraction
    turn.attraction_name = tour_obj.attraction(turn.attraction).name(query.language) if turn.attraction else None

    voice = None
    if speak:
        try:
            voice = SpeechStream(guide.tts, query.language, question=question, hits=turn.passages,
                                 guards=guide.config.answer_guards)
        except GuideError as e:  # no voice installed at all
            turn.notice = e.visitor(query.language)
    try:
        yield from _answer(guide, state, turn, prepared, voice, t_start)
    finally:
        if voice is not None:
            voice.close()


def _answer(guide: Guide, state: DialogueState, turn: Turn, prepared: Prepared,
            voice: SpeechStream | None, t_start: float) -> Iterator[Turn]:
    """The LLM's answer to a prepared question, streamed, and spoken sentence by sentence by `voice`."""
    timings, lang, question = turn.timings, prepared.query.language, turn.question
    llm = guide.llm
    stream = AnswerStream(llm, prepared.prompt, max_tokens=guide.config.max_answer_tokens,
                          temperature=guide.config.temperature, check=guide.config.answer_check,
                          guards=guide.config.answer_guards)

    def heard_so_far():
        if voice is not None:
            voice.take()
            turn.speech, turn.speech_replaced = voice.speech, voice.replaced
        return replace(turn, speech=list(turn.speech))

    # The model writes in a thread of its own, so a sentence's audio reaches the visitor as soon as it
    # is made, not at the model's next piece (or after a long pause, such as an echo asked again).
    events: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()
    if voice is not None:
        voice.notify = lambda: events.put(("audio", None))

    def write():
        try:
            for piece in stream:
                if stop.is_set():  # the visitor went away: the model stops at its next piece
                    break
                events.put(("piece", piece))
            events.put(("end", None))
        except BaseException as e:  # handed to the turn, which decides
            events.put(("error", e))

    first = None
    failure = None
    if voice is not None and guide.config.spoken_preface and len(prepared.query.attractions) == 1:
        # the visitor hears that they were understood (the subject's name) before the model reads its prompt:
        # said first, it costs the answer a few tens of ms; said beside the model's start, the pre-checks'
        # Python (the GIL) held it up by 1-2 s on a loaded machine
        turn.preface = preface_text(turn.attraction_name, lang)
        if turn.preface:
            t_preface = time.perf_counter()
            turn.preface_speech, _ = _spoken(guide, turn.preface, lang)
            timings["preface_tts"] = time.perf_counter() - t_preface
            if turn.preface_speech:
                timings["preface_audio"] = time.perf_counter() - t_start
                yield replace(turn, speech=list(turn.speech))
    t = time.perf_counter()
    writer = threading.Thread(target=write, name="llm-answer", daemon=True)
    writer.start()
    try:
        while True:
            kind, value = events.get()
            if kind == "piece":
                if first is None:
                    first = time.perf_counter() - t
                turn.answer += value
                if voice is not None:
                    voice.feed(turn.answer)
                yield heard_so_far()
            elif kind == "audio":
                if voice is not None and voice.take():
                    yield heard_so_far()
            elif kind == "error":
                if not isinstance(value, GuideError):
                    raise value
                failure = value  # the answer model stopped (its process died, its server went away)
                break
            else:
                break
    finally:
        stop.set()
    timings["first_token"] = first if first is not None else time.perf_counter() - t
    timings["llm"] = time.perf_counter() - t
    if failure is not None:
        log.error("the answer model failed during an answer, the visitor is asked again: %s", failure)
        turn.answer = turn.notice = phrase("llm_failed", lang)
        turn.refused, turn.citations, turn.raw = False, [], ""
    else:
        answer = stream.answer
        turn.answer, turn.refused, turn.citations, turn.raw = (answer.text, answer.refused, answer.citations,
                                                               answer.raw)
        if "llm" in guide.problems and not turn.notice:
            turn.notice = f"{say('llm_missing', lang)} ({guide.problems['llm']})"
        state.apply(prepared.change, question, answer.text)  # the turn's one write to the conversation
    if voice is not None:
        voice.finish(turn.answer)
        while voice.pending:
            voice.take(wait=True)
            yield heard_so_far()
        heard_so_far()
        if voice.error is not None and not turn.notice:
            error = voice.error
            turn.notice = error.visitor(lang) if isinstance(error, GuideError) else phrase("speech_failed", lang)
        if voice.first_sentence_at is not None:
            timings["first_sentence"] = voice.first_sentence_at - t
        if voice.first_audio_at is not None:
            timings["tts_first"] = voice.first_tts_s
            timings["first_audio"] = voice.first_audio_at - t_start
        timings["tts"] = voice.tts_s
    # a stage this turn used runs on its fallback since its self-check failed: say so (doctor has the detail)
    used = [stage for stage, on in (("asr", turn.transcript is not None), ("tts", voice is not None)) if on]
    fallbacks = [guide.problems[stage] for stage in used if stage in guide.problems]
    if fallbacks and not turn.notice:
        turn.notice = say("fallback", turn.language, detail="; ".join(fallbacks))
    timings["total"] = time.perf_counter() - t_start
    turn.done = True
    yield replace(turn, speech=list(turn.speech))


def answer_turn(guide: Guide, state: DialogueState, **inputs) -> Turn:
    """Run one visitor turn to the end (see stream_turn for the inputs)."""
    *_, last = stream_turn(guide, state, **inputs)
    return last
