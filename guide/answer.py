"""Prompt fusion and the streamed, grounded answer.

A `Prompt` holds what one answer is made from (the question, its language, the retrieved hits, the
subject, the history) and renders the chat messages only for the backend; `AnswerStream` streams the
model's answer and applies the guards of guide.grounding to it. The LLM backends are in guide.llm;
both modules' names are re-exported here (`from guide.answer import load_llm` keeps working).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .grounding import (
    _CITATION,
    _DECLINE,
    GUARDS,
    _numbers,
    guard_set,
    is_bare,
    is_dump,
    is_echo,
    is_refusal,
    missing_concepts,
    missing_content,
    refusal_decided,
    unsupported_claims,
)
from .lang import LANGUAGES, detect_language, fold, phrase
from .llm import (
    LLM,
    LLMS,
    ExtractiveLLM,
    LlamaCppLLM,
    Message,
    OpenAICompatibleLLM,
    TransformersLLM,
    _llama,
    load_llm,
)
from .retrieval import Hit

__all__ = [
    "LLM",
    "LLMS",
    "load_llm",
    "LlamaCppLLM",
    "TransformersLLM",
    "OpenAICompatibleLLM",
    "ExtractiveLLM",
    "Answer",
    "Prompt",
    "build_messages",
    "format_sources",
    "sources_answer",
    "AnswerStream",
    "GUARDS",
    "is_refusal",
    "unsupported_claims",
    "is_dump",
    "is_bare",
    "is_echo",
]

# names kept importable from here for the modules that import them so (re-exports, not used below)
_REEXPORTED = (_DECLINE, _numbers, _llama, LlamaCppLLM, TransformersLLM, OpenAICompatibleLLM, LLMS, load_llm)

log = logging.getLogger(__name__)


@dataclass
class Answer:
    text: str
    language: str
    refused: bool
    citations: list[int] = field(default_factory=list)  # 1-based numbers of the sources cited
    hits: list[Hit] = field(default_factory=list)
    raw: str = ""  # what the model said before post-processing


def format_sources(hits: list[Hit], lang: str) -> str:
    lines = []
    for i, h in enumerate(hits, 1):
        text = " ".join(h.passage.text.split()) if h.passage.kind != "facts" else "; ".join(h.passage.text.splitlines())
        lines.append(f"[{i}] {h.passage.title}: {text}")
    return f"{phrase('sources', lang)}:\n" + "\n".join(lines)


def build_messages(question: str, lang: str, hits: list[Hit], *, tour_title: str, subject: str | None = None,
                   history: list[Message] | None = None, budget: int | None = None, count=None,
                   example: bool = True) -> list[Message]:
    """The chat messages for one answer: rules, the trimmed history, then sources and question.

    The fixed system part comes first so llama.cpp can reuse its cached prefix across turns.
    """
    system = phrase("system", lang, tour=tour_title)
    parts = [format_sources(hits, lang), ""]
    # a follow-up names its subject in brackets: "How tall is it? (Eiffel Tower)"
    parts.append(f"{phrase('question', lang)}: {question}" + (f" ({subject})" if subject else ""))
    parts.append(phrase("answer_in", lang))
    user = "\n".join(parts)
    messages = [{"role": "system", "content": system}]
    if example and lang in LANGUAGES:
        messages += [
            {"role": "user", "content": f"{phrase('sources', lang)}:\n{phrase('example_sources', lang)}\n\n"
                                        f"{phrase('question', lang)}: {phrase('example_question', lang)}\n"
                                        f"{phrase('answer_in', lang)}"},
            {"role": "assistant", "content": phrase("example_answer", lang)},
        ]
    kept: list[Message] = []
    if history:
        used = (count or len)(system + user)
        for m in reversed(history):
            cost = (count or len)(m["content"]) + 8
            if budget is not None and used + cost > budget:
                break
            kept.insert(0, m)
            used += cost
        while kept and kept[0]["role"] != "user":
            kept.pop(0)
    return messages + kept + [{"role": "user", "content": user}]


@dataclass
class Prompt:
    """What one answer is made from, as data; `messages()` renders it for the backend.

    `subject` is the display name(s) of what the question is about ("Eiffel Tower", "this tour"): the
    guide's refusal names it; with `carried` (a follow-up whose subject came from the dialogue) the
    question names it too, in brackets. `evidence`: the texts the grounding checks may rely on
    (default: the hits' texts); `names`: words that are names, not content (the attractions', the tour's).
    """

    question: str
    lang: str
    hits: list[Hit]
    tour_title: str = ""
    subject: str = ""
    carried: bool = False
    history: list[Message] = field(default_factory=list)
    budget: int | None = None
    count: Callable[[str], int] | None = None
    example: bool = True
    evidence: list[str] | None = None
    names: list[str] = field(default_factory=list)
    spoken: bool = False  # the question was heard (a transcript), not typed
    rendered: list[Message] | None = None  # messages already built (the old AnswerStream call)

    @property
    def asked(self) -> str:
        """The question as the model reads it: a carried subject in brackets."""
        return self.question + (f" ({self.subject})" if self.carried and self.subject else "")

    @property
    def texts(self) -> list[str]:
        return self.evidence if self.evidence is not None else [h.passage.text for h in self.hits]

    def messages(self) -> list[Message]:
        if self.rendered is not None:
            return self.rendered
        return build_messages(self.question, self.lang, self.hits, tour_title=self.tour_title,
                              subject=self.subject if self.carried else None, history=self.history,
                              budget=self.budget, count=self.count, example=self.example)

    def judge_messages(self) -> list[Message]:
        """The answer prompt asking, instead, whether the sources answer the question (no "answer in" line)."""
        messages = self.messages()
        user = (f"{format_sources(self.hits, self.lang)}\n\n{phrase('question', self.lang)}: {self.asked}\n"
                f"{JUDGE_QUESTION}")
        return messages[:-1] + [{"role": "user", "content": user}]

    def retry_messages(self) -> list[Message]:
        """The question first, then the sources: how an echoed question is asked again."""
        return [self.messages()[0], {"role": "user", "content": (
            f"{phrase('question', self.lang)}: {self.question}\n\n{format_sources(self.hits, self.lang)}\n\n"
            f"{phrase('answer_in', self.lang)}")}]


# Optionally asked before answering, sharing the answer prompt's cached prefix (~0.2 s on a CPU).
# Off by default: measured on the Paris eval, Qwen2.5-0.5B's verdict follows the language of the
# sources (always "no" for Spanish, always "yes" for French), not their content. Worth trying with
# larger models (`GUIDE_ANSWER_CHECK=1`).
JUDGE_QUESTION = "Do the sources above contain the information needed to answer this question? Reply only yes or no."


def sources_answer(llm: LLM, prompt: Prompt | list[Message]) -> bool:
    """Whether the model judges that the numbered sources answer the question (True when unsure)."""
    if isinstance(prompt, Prompt):
        probe = prompt.judge_messages()
    else:  # rendered messages: the user turn without its "answer in <language>" line
        user = prompt[-1]["content"].rsplit("\n", 1)[0]
        probe = prompt[:-1] + [{"role": "user", "content": f"{user}\n{JUDGE_QUESTION}"}]
    reply = fold("".join(llm.stream(probe, max_tokens=2)))
    return not reply.startswith("no")


def precheck(prompt: Prompt, guards=True) -> str | None:
    """Why the guide declines the question before the model is asked, or None (the guards named on)."""
    on = guard_set(guards)
    if not prompt.hits:
        return "no source was found"
    if "concepts" in on:
        missing = missing_concepts(prompt.question, prompt.texts)
        if missing:  # a kind of information the texts do not hold (a password, a phone number...)
            return f"asks for {', '.join(missing)}, which the sources do not hold"
    own = [h for h in prompt.hits if h.passage.lang == prompt.lang]
    if "content" in on and own:
        names = [*prompt.names, prompt.subject, prompt.tour_title, *(h.passage.title for h in prompt.hits)]
        # where the texts in the visitor's language are partly in another (facts written in English), a word
        # may be there translated: two absent nouns are needed, not one
        mixed = any(h.passage.kind == "facts" and _written_in(h.passage.text) not in (None, prompt.lang) for h in own)
        # a spoken question may hold a misheard word ("How tall is the rifle tower?"): that is no evidence
        # that the asked detail is absent, so a heard question, too, needs two absent nouns
        absent = missing_content(prompt.question, prompt.texts, names=names, lang=prompt.lang,
                                 at_least=2 if mixed or prompt.spoken else 1)
        if absent:  # what it asks about is in no text the guide holds on the subject
            return f"asks about {', '.join(absent)}, which no source mentions"
    return None


def _written_in(facts: str) -> str | None:
    """The language a facts passage's values are written in (its labels are the passage's own), or None."""
    values = " ".join(line.split(":", 1)[-1] for line in facts.splitlines())
    code, confidence = detect_language(values, list(LANGUAGES))
    return code if confidence > 0 else None


class AnswerStream:
    """Streams an answer's text; `.answer` holds the final Answer once iteration ends.

    `AnswerStream(llm, prompt)` with a Prompt; the older `AnswerStream(llm, messages, lang=, hits=,
    question=, subject=, evidence=)` (messages already rendered) still works.

    The first words are held back until it is clear whether the model is declining (at least
    HOLD_CHARS, and past a polite opening such as "Unfortunately," until its sentence ends), so a
    refusal is always the guide's own, polite sentence in the visitor's language.
    """

    HOLD_CHARS = 24

    def __init__(self, llm: LLM, prompt: Prompt | list[Message], *, lang: str | None = None,
                 hits: list[Hit] | None = None, question: str | None = None, subject: str | None = None,
                 max_tokens: int = 200, temperature: float = 0.0, check: bool = False,
                 evidence: list[str] | None = None, guards=True):
        if not isinstance(prompt, Prompt):
            carried = bool(subject) and bool(prompt) and f"({subject})" in prompt[-1]["content"]
            prompt = Prompt(question=question or "", lang=lang or "en", hits=list(hits or []),
                            subject=subject or "", carried=carried, evidence=evidence, rendered=prompt)
        elif evidence is not None:
            prompt.evidence = evidence
        self.llm, self.prompt = llm, prompt
        self.lang, self.hits, self.question = prompt.lang, prompt.hits, prompt.question
        self.subject = prompt.subject if subject is None else subject
        self.messages = prompt.messages()
        self.evidence = prompt.texts
        # guards (grounding.GUARDS): True for all, False for none, or a set of names. Off, the answer is
        # the model's own (how fine-tuning is evaluated); a refusal is always the guide's own sentence.
        self.guards = guard_set(guards)
        self.check = check and bool(self.guards) and getattr(llm, "can_judge", False)
        self.max_tokens, self.temperature = max_tokens, temperature
        self.answer: Answer | None = None

    def _stream(self, prompt_messages: list[Message] | None = None) -> Iterator[str]:
        if prompt_messages is None and hasattr(self.llm, "stream_prompt"):
            return self.llm.stream_prompt(self.prompt, max_tokens=self.max_tokens, temperature=self.temperature)
        return self.llm.stream(prompt_messages or self.messages, max_tokens=self.max_tokens,
                               temperature=self.temperature)

    def __iter__(self) -> Iterator[str]:
        why = precheck(self.prompt, self.guards)
        if why:
            log.info("declined: %r %s", self.question, why)
            yield from self._refuse("")
            return
        if self.check and not sources_answer(self.llm, self.prompt):
            log.info("declined: the sources do not answer %r", self.question)
            yield from self._refuse("")
            return
        raw, emitted = "", 0
        for piece in self._stream():
            raw += piece
            if emitted == 0 and (len(raw) < self.HOLD_CHARS or not refusal_decided(raw)):
                continue
            if emitted == 0 and is_refusal(raw):
                log.info("the model declined: %r", raw)
                yield from self._refuse(raw)
                return
            out = raw[emitted:]
            emitted = len(raw)
            yield out
        raw_stripped = raw.strip()
        if not raw_stripped or is_refusal(raw_stripped):
            log.info("the model declined: %r", raw)
            yield from self._refuse(raw)
            return
        if emitted < len(raw):
            yield raw[emitted:]
        text = raw_stripped
        if "echo" in self.guards and is_echo(text, self.question):
            # small models sometimes repeat the question; asked again with the question first, they
            # usually answer (measured: 2 of 3 echoes fixed). The visitor sees the answer replace it.
            again = "".join(self._stream(self.prompt.retry_messages())).strip()
            log.info("answer echoed the question; asked again: %r -> %r", text, again)
            if again and not is_echo(again, self.question) and not is_refusal(again) and not is_dump(again):
                text = raw = again
            else:  # still nothing usable: quote the source sentence that best fits the question
                text = raw = self._quote(self.question)
        elif "dump" in self.guards and is_dump(text):
            text = raw = self._quote(self.prompt.asked)
        if is_refusal(text):  # the fallbacks found nothing either ("I don't know."): the guide's own refusal
            log.info("declined: no answer after the fallback for %r", self.question)
            self.answer = Answer(text=phrase("refusal", self.lang, subject=self.subject), language=self.lang,
                                 refused=True, hits=self.hits, raw=raw)
            return
        invented = unsupported_claims(text, self.hits, self.question) if "numbers" in self.guards else []
        if invented:  # numbers no source gave: the model is guessing, so the guide declines instead
            log.info("answer withdrawn, unsupported numbers %s: %r", invented, text)
            self.answer = Answer(text=phrase("refusal", self.lang, subject=self.subject), language=self.lang,
                                 refused=True, hits=self.hits, raw=raw)
            return
        n = len(self.hits)
        cited = sorted({int(c) for c in _CITATION.findall(text) if 1 <= int(c) <= n})
        text = _CITATION.sub(lambda m: m.group() if 1 <= int(m.group(1)) <= n else "", text).strip()
        self.answer = Answer(text=text, language=self.lang, refused=False, citations=cited, hits=self.hits, raw=raw)

    def _quote(self, question: str) -> str:
        """The source sentence that best fits the question, or "I don't know." when none overlaps.

        Tried and not kept (Paris eval, docs/GROUNDING.md): quoting only a sentence that shares a word with
        the question beyond the subject's name (it declined 10 of 92 answerable questions whose echoed
        answer fell back here), and choosing the sentence with the subject's name taken out of the question."""
        return ExtractiveLLM().best_sentence(question, self.hits) or "I don't know."

    def _refuse(self, raw: str) -> Iterator[str]:
        text = phrase("refusal", self.lang, subject=self.subject)
        self.answer = Answer(text=text, language=self.lang, refused=True, hits=self.hits, raw=raw)
        yield text
