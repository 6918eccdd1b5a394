"""answer_turn(): one visitor turn — photo, speech and/or text in, a grounded answer (text + speech) out."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from .answer import AnswerStream, build_messages, load_llm
from .config import GuideConfig, load_config
from .dialogue import DialogueState, resolve
from .errors import GuideError, ModelUnavailable, TourError
from .lang import language_name, phrase
from .retrieval import Hit, ensure_index, load_embedder
from .tours import Tour, list_tours, load_tour

__all__ = ["Guide", "Turn", "answer_turn", "stream_turn"]

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
    speech: list = field(default_factory=list)  # tts.Speech per sentence, when asked to speak
    done: bool = False
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


class Guide:
    """The loaded tours, indexes and models, built once and shared by every visitor."""

    def __init__(self, config: GuideConfig, tours: dict[str, Tour], indexes: dict, embedder, llm,
                 problems: dict[str, str] | None = None):
        self.config, self.tours, self.indexes, self.embedder, self.llm = config, tours, indexes, embedder, llm
        self.problems = problems or {}  # tour id -> why it could not be loaded
        self._lock = threading.Lock()
        self._asr = self._tts = None
        self._recognizers: dict[str, object] = {}

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
                               threads=config.threads, device=config.device, adapter=config.adapter)
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

    # Speech and vision load on first use, once, for everyone.
    @property
    def asr(self):
        with self._lock:
            if self._asr is None:
                from .asr import load_asr

                self._asr = load_asr(self.config.asr, backend=self.config.asr_backend,
                                     cache_dir=self.config.cache_dir, device=self.config.device)
            return self._asr

    @property
    def tts(self):
        with self._lock:
            if self._tts is None:
                from .tts import load_tts

                self._tts = load_tts(self.config.tts)
            return self._tts

    def recognizer(self, tour: Tour):
        with self._lock:
            if tour.id not in self._recognizers:
                from .vision import load_recognizer

                self._recognizers[tour.id] = load_recognizer(self.config.vision, tour=tour,
                                                             index_root=self.config.index_dir,
                                                             cache_dir=self.config.cache_dir,
                                                             device=self.config.device)
            return self._recognizers[tour.id]

    def search(self, tour: Tour, text: str, *, k: int | None = None, attractions: list[str] | None = None,
               lang: str | None = None) -> list[Hit]:
        vector = self.embedder.embed_queries([text])[0]
        return self.indexes[tour.id].search(text, vector, k=k or self.config.top_k, attractions=attractions,
                                            lang=lang)


SUBJECT_CHANGE_MARGIN = 0.02  # cosine: how much better another attraction must match to change the subject


def _retrieve(guide: Guide, tour: Tour, query, state: DialogueState) -> list[Hit]:
    """Passages for a query: about its attraction(s) when it has some, else from the whole tour.

    A subject carried over from earlier turns is kept when the message points back to it ("it");
    otherwise it gives way when the question fits another attraction clearly better.
    """
    k = guide.config.top_k
    if not query.attractions:
        return guide.search(tour, query.search_text, k=k, lang=query.language)
    if len(query.attractions) == 1:
        if query.carried and not query.pointer:
            open_hits = guide.search(tour, query.text, k=k, lang=query.language)
            best = max(open_hits, key=lambda h: h.dense, default=None)
            if best and best.passage.attraction != query.attractions[0]:
                own = guide.search(tour, query.text, k=1, attractions=query.attractions, lang=query.language)
                if not own or best.dense > own[0].dense + SUBJECT_CHANGE_MARGIN:
                    state.attraction = best.passage.attraction
                    return sorted(open_hits, key=lambda h: h.passage.attraction != best.passage.attraction)
        return guide.search(tour, query.search_text, k=k, attractions=query.attractions, lang=query.language)
    per = max(2, k // len(query.attractions))  # comparisons: the best passages of each attraction
    hits: list[Hit] = []
    for aid in query.attractions[:3]:
        hits += guide.search(tour, query.search_text, k=per, attractions=[aid], lang=query.language)
    return hits


@dataclass
class Prepared:
    """What the LLM is given for one question: the resolved query, passages and chat messages."""

    query: object  # dialogue.Query
    hits: list[Hit]
    attraction: str | None  # the subject of the answer
    subject: str  # display name(s) of the subject, or "this tour"
    messages: list[dict]
    evidence: list[str]  # texts the grounding checks may rely on


def prepare_prompt(guide: Guide, state: DialogueState, question: str, tour_obj: Tour, *, seen: str | None = None,
                   heard: str | None = None, example: bool | None = None) -> Prepared:
    """Resolve the question in the dialogue, retrieve, and build the LLM's messages (updates `state`).

    The serving path and the fine-tuning data use this same function, so a model is trained on
    exactly the prompts it will see.
    """
    query = resolve(state, question, tour_obj, seen=seen, heard=heard)
    hits = _retrieve(guide, tour_obj, query, state)
    if state.attraction and query.attractions and state.attraction not in query.attractions:
        query = replace(query, attractions=[state.attraction])  # the subject changed
    elif not query.attractions and hits:
        state.attraction = hits[0].passage.attraction  # "Where is the Mona Lisa?" -> the Louvre
    attraction = query.attractions[0] if query.attractions else state.attraction
    subject = (" / ".join(tour_obj.attraction(a).name(query.language) for a in query.attractions)
               if query.attractions else phrase("this_tour", query.language))
    llm = guide.llm
    if example is None:
        example = getattr(llm, "prompt_example", True)
    budget = guide.config.llm_context - guide.config.max_answer_tokens - 64
    messages = build_messages(question, query.language, hits, tour_title=tour_obj.title(query.language),
                              subject=subject if query.carried else None,
                              history=state.history[-guide.config.history_turns:], budget=budget,
                              count=llm.count_tokens, example=example)
    # what the tour says about the attractions in question, in every language, plus what was retrieved
    evidence = [h.passage.text for h in hits]
    evidence += [p.text for p in guide.indexes[tour_obj.id].passages if p.attraction in query.attractions]
    return Prepared(query=query, hits=hits, attraction=attraction, subject=subject, messages=messages,
                    evidence=evidence)


def stream_turn(guide: Guide, state: DialogueState, *, text: str | None = None, audio=None, image=None,
                tour: str | None = None, speak: bool = False) -> Iterator[Turn]:
    """Run one visitor turn, yielding the Turn as it grows (streamed answer text); the last has done=True.

    Visitor mistakes (empty or over-long question, unreadable photo or recording) come back as
    `turn.notice`, never as an exception; the state is left as it was.
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

    seen = None
    if image is not None:
        t = time.perf_counter()
        try:
            from .vision import load_image

            turn.recognition = guide.recognizer(tour_obj).recognize(load_image(image))
            seen = getattr(turn.recognition, "attraction", None)
        except GuideError as e:
            turn.notice = str(e)
        timings["vision"] = time.perf_counter() - t
    if audio is not None and not question:
        t = time.perf_counter()
        try:
            from .audio import to_mono_16k

            wav = to_mono_16k(audio)
            langs = [state.language_override] if state.language_override else tour_obj.languages
            turn.transcript = guide.asr.transcribe(wav, languages=langs)
            question = turn.transcript.text.strip()
            if not question:
                turn.notice = phrase("empty_question", ui_lang)
        except GuideError as e:
            turn.notice = str(e)
        timings["asr"] = time.perf_counter() - t
    if not question and seen:
        question = _what_is_this(ui_lang)
    if not question:
        turn.notice = turn.notice or phrase("empty_question", ui_lang)
        turn.answer = turn.notice
        turn.done = True
        yield turn
        return
    if len(question) > guide.config.max_question_chars:
        turn.notice = phrase("too_long", ui_lang, n=len(question))
        turn.answer = turn.notice
        turn.done = True
        yield turn
        return

    t = time.perf_counter()
    heard = turn.transcript.language if turn.transcript is not None and turn.transcript.text else None
    prepared = prepare_prompt(guide, state, question, tour_obj, seen=seen, heard=heard)
    query = prepared.query
    turn.question, turn.language = question, query.language
    if query.detected != query.language and query.detected not in tour_obj.languages:
        choices = ", ".join(language_name(c) for c in tour_obj.languages)
        turn.notice = (f"I can't answer in {language_name(query.detected)} yet; this tour speaks {choices}. "
                       f"Here is my answer in {language_name(query.language)}.")
    turn.passages = prepared.hits
    turn.attraction = prepared.attraction
    turn.attraction_name = tour_obj.attraction(turn.attraction).name(query.language) if turn.attraction else None
    timings["retrieval"] = time.perf_counter() - t

    llm = guide.llm
    stream = AnswerStream(llm, prepared.messages, lang=query.language, hits=turn.passages, question=question,
                          evidence=prepared.evidence, subject=prepared.subject,
                          max_tokens=guide.config.max_answer_tokens, temperature=guide.config.temperature,
                          check=guide.config.answer_check, guards=guide.config.answer_guards)
    t = time.perf_counter()
    first = None
    for piece in stream:
        if first is None:
            first = time.perf_counter() - t
        turn.answer += piece
        yield replace(turn)
    answer = stream.answer
    timings["first_token"] = first or 0.0
    timings["llm"] = time.perf_counter() - t
    turn.answer, turn.refused, turn.citations, turn.raw = answer.text, answer.refused, answer.citations, answer.raw
    if "llm" in guide.problems and not turn.notice:
        turn.notice = ("The answer model is not installed here, so I quote the best sentence from my sources "
                       f"instead. ({guide.problems['llm']})")
    state.remember(question, answer.text)
    if speak:
        t = time.perf_counter()
        try:
            turn.speech = list(guide.tts.stream(answer.text, query.language))
        except GuideError as e:
            turn.notice = str(e)
        timings["tts"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    turn.done = True
    yield replace(turn)


_WHAT_IS_THIS = {"en": "What is this?", "fr": "Qu'est-ce que c'est ?", "de": "Was ist das?", "es": "¿Qué es esto?",
                 "it": "Che cos'è?", "pt": "O que é isto?", "nl": "Wat is dit?", "zh": "这是什么？",
                 "ja": "これは何ですか？", "ko": "이것은 무엇입니까?"}


def _what_is_this(lang: str) -> str:
    return _WHAT_IS_THIS.get(lang, _WHAT_IS_THIS["en"])


def answer_turn(guide: Guide, state: DialogueState, **inputs) -> Turn:
    """Run one visitor turn to the end (see stream_turn for the inputs)."""
    *_, last = stream_turn(guide, state, **inputs)
    return last
