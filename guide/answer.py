"""Prompt fusion, LLM backends (llama.cpp GGUF, transformers, OpenAI-compatible server, extractive), grounding."""

from __future__ import annotations

import json
import logging
import re
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .config import usable_cores
from .errors import GuideError, ModelUnavailable
from .grounding import missing_concepts
from .lang import LANGUAGES, fold, phrase
from .retrieval import Hit, tokenize

__all__ = [
    "LLM",
    "LLMS",
    "load_llm",
    "Answer",
    "build_messages",
    "AnswerStream",
    "is_refusal",
    "unsupported_claims",
]

log = logging.getLogger(__name__)

Message = dict[str, str]


class LLM(Protocol):
    name: str

    def stream(self, messages: list[Message], *, max_tokens: int, temperature: float = 0.0,
               stop: list[str] | None = None) -> Iterator[str]: ...

    def count_tokens(self, text: str) -> int: ...


class LlamaCppLLM:
    """A GGUF model run in-process by llama.cpp (CPU, or GPU layers when built with CUDA)."""

    can_judge = True  # may be asked whether the sources answer a question

    def __init__(self, path: str | Path, *, n_ctx: int = 2048, threads: int = 0, gpu_layers: int = 0,
                 name: str | None = None, lora_path: str | None = None):
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise ModelUnavailable("the GGUF backend needs `pip install llama-cpp-python`") from e
        self.name = name or Path(path).name
        self.path = Path(path)
        # 0 = every usable core: llama-cpp-python's own default generates on cpu_count // 2 threads, one
        # on a 2-core machine, where two give 22.0-23.5 tokens/s against 12.9-14.4 (README, Benchmarks)
        n = threads or usable_cores()
        kwargs = dict(model_path=str(path), n_ctx=n_ctx, n_threads=n, n_threads_batch=n, n_gpu_layers=gpu_layers,
                      verbose=False, seed=0)
        if lora_path:
            kwargs["lora_path"] = str(lora_path)
        self._llm = Llama(**kwargs)
        self._lock = threading.Lock()  # one llama.cpp context serves one generation at a time

    def stream(self, messages, *, max_tokens, temperature=0.0, stop=None):
        with self._lock:
            chunks = self._llm.create_chat_completion(messages=messages, max_tokens=max_tokens,
                                                      temperature=temperature, stop=stop, stream=True, seed=0)
            for chunk in chunks:
                delta = chunk["choices"][0]["delta"].get("content")
                if delta:
                    yield delta

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False))


class TransformersLLM:
    """Any causal LM with a chat template, by hub id or local path (GPU when available)."""

    can_judge = True

    def __init__(self, model_id: str, *, device: str | None = None, gguf_file: str | None = None,
                 adapter: str | None = None):
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:
            raise ModelUnavailable("the transformers backend needs `pip install torch transformers`") from e
        self.name = model_id
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self._tok = AutoTokenizer.from_pretrained(model_id, gguf_file=gguf_file)
        self._model = AutoModelForCausalLM.from_pretrained(model_id, gguf_file=gguf_file, dtype=dtype).to(device)
        if adapter:
            from peft import PeftModel

            self._model = PeftModel.from_pretrained(self._model, adapter)
        self._model.eval()
        self._device = device
        self._lock = threading.Lock()

    def stream(self, messages, *, max_tokens, temperature=0.0, stop=None):
        from transformers import TextIteratorStreamer

        ids = self._tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True).to(self._device)
        streamer = TextIteratorStreamer(self._tok, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(**ids, max_new_tokens=max_tokens, streamer=streamer, do_sample=temperature > 0,
                      pad_token_id=self._tok.pad_token_id or self._tok.eos_token_id)
        if temperature > 0:
            kwargs["temperature"] = temperature
        with self._lock:
            worker = threading.Thread(target=self._model.generate, kwargs=kwargs, daemon=True)
            worker.start()
            text = ""
            for piece in streamer:
                text += piece
                if stop and any(s in text for s in stop):
                    yield piece.split(next(s for s in stop if s in text))[0]
                    break
                yield piece
            worker.join()

    def count_tokens(self, text: str) -> int:
        return len(self._tok(text, add_special_tokens=False)["input_ids"])


class OpenAICompatibleLLM:
    """A model served elsewhere behind /v1/chat/completions (vLLM, TGI, llama.cpp server...)."""

    can_judge = True

    def __init__(self, base_url: str, *, model: str = "default", api_key: str | None = None, timeout: float = 120):
        import httpx

        self.name = f"openai:{base_url}#{model}"
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)

    def stream(self, messages, *, max_tokens, temperature=0.0, stop=None):
        import httpx

        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                "stream": True, "seed": 0}
        if stop:
            body["stop"] = stop
        try:
            with self._client.stream("POST", f"{self.base_url}/chat/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise GuideError(f"the answer server said {response.status_code}: {response.text[:200]}")
                finished = False
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        finished = True
                        break
                    choices = json.loads(data).get("choices") or [{}]
                    delta = (choices[0].get("delta") or {}).get("content")
                    if delta:
                        yield delta
                if not finished:  # the stream ends with [DONE]; without it, the server went away mid-answer
                    raise GuideError(f"the answer server at {self.base_url} stopped in the middle of an answer")
        except httpx.HTTPError as e:
            raise GuideError(f"the answer server at {self.base_url} cannot be reached ({e})") from e

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 3)  # the server's tokenizer is not ours; a safe overestimate


_QUESTION_LABELS = {phrase("question", code) for code in LANGUAGES}
_SOURCE_LINE = re.compile(r"^\[(\d+)\]\s*(.*)$")


class ExtractiveLLM:
    """No generative model: answers with the source sentence that best overlaps the question.

    Deterministic and weightless: the `tiny` profile's answerer, and a floor the real models must beat.
    """

    name = "extractive"
    can_judge = False

    def stream(self, messages, *, max_tokens, temperature=0.0, stop=None):
        prompt = messages[-1]["content"]
        lines = prompt.splitlines()
        question = next((ln.split(":", 1)[1] for ln in lines if ln.split(":", 1)[0] in _QUESTION_LABELS), "")
        # spoken questions often open with a greeting: the last sentence is the question itself
        asked = [q for q in re.split(r"(?<=[.!?。！？])\s*", question.strip()) if q.strip()]
        questions = [q for q in asked if q.rstrip().endswith(("?", "？"))] or asked
        question = questions[-1] if questions else question
        q_tokens = set(tokenize(question))
        best, best_score = None, 0.0
        for line in lines:
            m = _SOURCE_LINE.match(line.strip())
            if not m:
                continue
            body = m.group(2).split(": ", 1)[-1]  # "[n] Title: text"
            for sentence in re.split(r"(?<=[.!?。！？])\s*|\n", body):
                tokens = set(tokenize(sentence))
                score = len(q_tokens & tokens) / (1 + len(tokens) ** 0.5)
                if sentence.strip() and score > best_score:
                    best, best_score = f"{sentence.strip()} [{m.group(1)}]", score
        yield best if best else "I don't know."

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 3)


LLMS = {
    "qwen2.5-0.5b": "Qwen2.5-Coder-0.5B-Instruct GGUF Q4_K_M, offline pack (llama.cpp)",
    "extractive": "no model: the best-matching source sentence (tests)",
    "hf:<hub id>": "any transformers chat model (GPU if available)",
    "hf:qwen2.5-0.5b": "the offline pack on transformers (de-quantized), with its fine-tuned adapter when published",
    "openai:<url>[#model]": "an OpenAI-compatible server (vLLM, TGI, llama.cpp server)",
    "<path>.gguf": "any GGUF file (llama.cpp)",
}


def load_llm(name: str, *, cache_dir: Path, n_ctx: int = 2048, threads: int = 0, device: str | None = None,
             adapter: str | None = None, isolate: bool = False) -> LLM:
    """An LLM by registry name, `hf:<hub id or pack>`, `openai:<url>[#model]` or a path to a .gguf file.

    `adapter` ("auto", "none" or a folder) applies a fine-tuned LoRA to a model pack: as a GGUF LoRA
    on llama.cpp, or with peft on transformers (`hf:<pack>`). A wrong-base adapter is refused.
    `isolate` runs a llama.cpp model in a supervised child process (guide.llm_server), self-checked
    at start, so that a native crash costs one answer instead of the process that asked.
    """
    from .adapters import resolve_adapter
    from .models import PACKS, assemble_pack

    if name == "extractive":
        return ExtractiveLLM()
    pack_name = name[3:] if name.startswith("hf:") and name[3:] in PACKS else name
    folder, manifest = (None, None)
    if pack_name in PACKS:
        folder, manifest = resolve_adapter(adapter, base_name=pack_name, base_sha256=PACKS[pack_name].sha256)
    if name in PACKS:
        path = assemble_pack(name, cache_dir)
        gpu_layers = -1 if device and device.startswith("cuda") else 0
        lora = None
        if folder is not None:
            if not manifest.get("gguf") or not (folder / manifest["gguf"]).is_file():
                raise ModelUnavailable(f"the adapter {folder} has no GGUF LoRA for llama.cpp; re-export it")
            lora = str(folder / manifest["gguf"])
        llm = _llama(path, n_ctx=n_ctx, threads=threads, name=name + ("+lora" if lora else ""),
                     gpu_layers=gpu_layers, lora=lora, isolate=isolate, cache_dir=cache_dir)
    elif pack_name in PACKS:  # transformers on the pack's GGUF, de-quantized (with the peft adapter)
        path = assemble_pack(pack_name, cache_dir)
        llm = TransformersLLM(str(path.parent), gguf_file=path.name, device=device,
                              adapter=str(folder) if folder else None)
        llm.name = name + ("+lora" if folder else "")
    elif name.startswith("hf:"):
        return TransformersLLM(name[3:], device=device, adapter=adapter if adapter not in (None, "auto", "none") else None)
    elif name.startswith("openai:"):
        url, _, model = name[len("openai:"):].partition("#")
        return OpenAICompatibleLLM(url, model=model or "default")
    elif name.endswith(".gguf"):
        if not Path(name).is_file():
            raise ModelUnavailable(f"no GGUF file at {name}")
        return _llama(name, n_ctx=n_ctx, threads=threads, name=Path(name).name, isolate=isolate, cache_dir=cache_dir)
    else:
        raise ValueError(f"unknown LLM {name!r}; choose one of {', '.join(LLMS)}")
    if manifest is not None:
        llm.prompt_example = manifest.get("prompt", {}).get("example", True)
        log.info("LLM %s with the fine-tuned adapter %s", name, folder)
    return llm


def _llama(path, *, n_ctx: int, threads: int, name: str, gpu_layers: int = 0, lora: str | None = None,
           isolate: bool, cache_dir: Path) -> LLM:
    """A GGUF model on llama.cpp: in this process, or in a supervised child (crash isolation)."""
    if not isolate:
        return LlamaCppLLM(path, n_ctx=n_ctx, threads=threads, name=name, gpu_layers=gpu_layers, lora_path=lora)
    from .llm_server import SupervisedLLM

    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return SupervisedLLM.start(path, lora=lora, name=name, n_ctx=n_ctx, threads=threads, gpu_layers=gpu_layers,
                               log_path=Path(cache_dir) / "llm-server.log")


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


# How the model says it does not know, per language (its instruction asks for exactly these).
_DONT_KNOW = [fold(s) for s in (
    "I don't know", "I do not know", "I'm sorry", "I am sorry", "I cannot", "I can't", "unfortunately",
    "the sources do not", "the sources don't", "not mentioned", "no information", "not provided",
    "Je ne sais pas", "désolé", "les sources ne", "Das weiß ich nicht", "weiß ich nicht", "leider",
    "die Quellen enthalten", "No lo sé", "no sé", "lo siento", "las fuentes no", "Non lo so", "mi dispiace",
    "Não sei", "desculpe", "Dat weet ik niet", "我不知道", "不知道", "没有提到", "没有相关", "資料には", "わかりません",
    "分かりません", "記載されていません", "모르겠습니다",
)]


def is_refusal(text: str) -> bool:
    """Whether an answer says it does not know (checked on its first words)."""
    head = fold(text)[:80]
    return any(head.startswith(p) or (len(p) >= 6 and p in head[:40]) for p in _DONT_KNOW)


# a number, with thousands groups ("1,113", "1 665"); single digits are ignored ("3 levels" = "three levels")
_NUMBER = re.compile(r"\d{1,3}(?:[,.\u202f\u00a0 ]\d{3})+(?!\d)|\d+")


def _numbers(text: str) -> set[str]:
    found = {re.sub(r"\D", "", m.group()) for m in _NUMBER.finditer(unicodedata.normalize("NFKC", text))}
    return {n.lstrip("0") or "0" for n in found if len(n) > 1}


def unsupported_claims(answer: str, hits: list[Hit], question: str) -> list[str]:
    """Numbers in the answer that appear in neither the sources nor the question (invented facts)."""
    known = _numbers(question)
    for h in hits:
        known |= _numbers(h.passage.text)
    cleaned = re.sub(r"\[\d+\]", " ", answer)
    return sorted(n for n in _numbers(cleaned) if n not in known)


_CITATION = re.compile(r"\[(\d+)\]")


def is_dump(answer: str) -> bool:
    """Whether the model pasted the numbered sources back ("[1] Eiffel Tower: ... [2] ...")."""
    return bool(re.match(r"\s*\[\d+\]\s*\S", answer)) and len(_CITATION.findall(answer)) >= 2


# A reply that is only "yes" or "no" in some language: "Can I go inside?" -> "是" / "はい[1]。".
_BARE = {fold(w) for w in (
    "yes", "no", "yes, you can", "oui", "non", "ja", "nein", "si", "sí", "sì", "sim", "não", "nee",
    "是", "是的", "对", "可以", "不", "不是", "不可以", "不能", "能", "はい", "いいえ", "ええ", "예", "네", "아니요",
)}


def is_bare(answer: str) -> bool:
    """Whether the answer is a bare yes or no, with nothing the visitor could use."""
    text = fold(_CITATION.sub(" ", answer))
    return re.sub(r"[\s.!?,;:。！？、，]+", " ", text).strip() in _BARE


def is_echo(answer: str, question: str) -> bool:
    """Whether the answer only repeats (part of) the question: nothing in it that the question lacks
    (a bare yes or no counts: it tells the visitor nothing new).

    A number the question does not hold is an answer however much of the question is restated
    around it ("How tall is the Eiffel Tower?" -> "The Eiffel Tower is 330 m tall"): counted as an
    echo, such answers were asked again and often lost (measured on the held-out written questions).
    """
    words = [t for t in tokenize(_CITATION.sub(" ", answer)) if len(t) > 1 or not t.isascii()]
    if not words or is_bare(answer):
        return True
    asked = set(tokenize(question))
    if any(ch.isdigit() for t in words if t not in asked for ch in t):
        return False
    return sum(t in asked for t in words) / len(words) >= 0.8

# Optionally asked before answering, sharing the answer prompt's cached prefix (~0.2 s on a CPU).
# Off by default: measured on the Paris eval, Qwen2.5-0.5B's verdict follows the language of the
# sources (always "no" for Spanish, always "yes" for French), not their content. Worth trying with
# larger models (`GUIDE_ANSWER_CHECK=1`).
JUDGE_QUESTION = "Do the sources above contain the information needed to answer this question? Reply only yes or no."


def sources_answer(llm: LLM, messages: list[Message]) -> bool:
    """Whether the model judges that the numbered sources answer the question (True when unsure)."""
    user = messages[-1]["content"].rsplit("\n", 1)[0]  # without the "answer in <language>" line
    probe = messages[:-1] + [{"role": "user", "content": f"{user}\n{JUDGE_QUESTION}"}]
    reply = fold("".join(llm.stream(probe, max_tokens=2)))
    return not reply.startswith("no")


class AnswerStream:
    """Streams an answer's text; `.answer` holds the final Answer once iteration ends.

    The first words are held back until it is clear whether the model is declining, so a refusal
    is always the guide's own, polite sentence in the visitor's language.
    """

    HOLD_CHARS = 24

    def __init__(self, llm: LLM, messages: list[Message], *, lang: str, hits: list[Hit], question: str,
                 subject: str, max_tokens: int = 200, temperature: float = 0.0, check: bool = False,
                 evidence: list[str] | None = None, guards: bool = True):
        self.llm, self.messages, self.lang, self.hits = llm, messages, lang, hits
        self.evidence = evidence if evidence is not None else [h.passage.text for h in hits]
        self.check = check and guards and getattr(llm, "can_judge", False)
        # guards: the concept pre-check, the echo retry, the dump fallback and the invented-number
        # withdrawal. Off, the answer is the model's own (how fine-tuning is evaluated).
        self.guards = guards
        self.question, self.subject = question, subject
        self.max_tokens, self.temperature = max_tokens, temperature
        self.answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        if not self.hits:
            yield from self._refuse("")
            return
        missing = missing_concepts(self.question, self.evidence) if self.guards else []
        if missing:  # asks for a kind of information the texts do not hold (a password, a phone number...)
            log.info("declined: %r asks for %s, which the sources do not hold", self.question, ", ".join(missing))
            yield from self._refuse("")
            return
        if self.check and not sources_answer(self.llm, self.messages):
            log.info("declined: the sources do not answer %r", self.question)
            yield from self._refuse("")
            return
        raw, emitted = "", 0
        for piece in self.llm.stream(self.messages, max_tokens=self.max_tokens, temperature=self.temperature):
            raw += piece
            if emitted == 0 and len(raw) < self.HOLD_CHARS:
                continue
            if emitted == 0 and is_refusal(raw):
                yield from self._refuse(raw)
                return
            out = raw[emitted:]
            emitted = len(raw)
            yield out
        raw_stripped = raw.strip()
        if not raw_stripped or is_refusal(raw_stripped):
            yield from self._refuse(raw)
            return
        if emitted < len(raw):
            yield raw[emitted:]
        text = raw_stripped
        if self.guards and is_echo(text, self.question):
            # small models sometimes repeat the question; asked again with the question first, they
            # usually answer (measured: 2 of 3 echoes fixed). The visitor sees the answer replace it.
            retry = [self.messages[0], {"role": "user", "content": (
                f"{phrase('question', self.lang)}: {self.question}\n\n{format_sources(self.hits, self.lang)}\n\n"
                f"{phrase('answer_in', self.lang)}")}]
            again = "".join(self.llm.stream(retry, max_tokens=self.max_tokens, temperature=self.temperature)).strip()
            log.info("answer echoed the question; asked again: %r -> %r", text, again)
            if again and not is_echo(again, self.question) and not is_refusal(again) and not is_dump(again):
                text = raw = again
            else:  # still nothing usable: quote the source sentence that best fits the question
                text = raw = "".join(ExtractiveLLM().stream(retry, max_tokens=self.max_tokens)).strip()
        elif self.guards and is_dump(text):
            text = raw = "".join(ExtractiveLLM().stream(self.messages, max_tokens=self.max_tokens)).strip()
        if is_refusal(text):  # the fallbacks found nothing either ("I don't know."): the guide's own refusal
            self.answer = Answer(text=phrase("refusal", self.lang, subject=self.subject), language=self.lang,
                                 refused=True, hits=self.hits, raw=raw)
            return
        invented = unsupported_claims(text, self.hits, self.question) if self.guards else []
        if invented:  # numbers no source gave: the model is guessing, so the guide declines instead
            log.info("answer withdrawn, unsupported numbers %s: %r", invented, text)
            self.answer = Answer(text=phrase("refusal", self.lang, subject=self.subject), language=self.lang,
                                 refused=True, hits=self.hits, raw=raw)
            return
        n = len(self.hits)
        cited = sorted({int(c) for c in _CITATION.findall(text) if 1 <= int(c) <= n})
        text = _CITATION.sub(lambda m: m.group() if 1 <= int(m.group(1)) <= n else "", text).strip()
        self.answer = Answer(text=text, language=self.lang, refused=False, citations=cited, hits=self.hits, raw=raw)

    def _refuse(self, raw: str) -> Iterator[str]:
        text = phrase("refusal", self.lang, subject=self.subject)
        self.answer = Answer(text=text, language=self.lang, refused=True, hits=self.hits, raw=raw)
        yield text
