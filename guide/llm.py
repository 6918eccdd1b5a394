"""The LLM backends: llama.cpp GGUF, transformers, an OpenAI-compatible server, and the extractive floor.

Each streams text for chat messages. `ExtractiveLLM` can also answer a `Prompt` (answer.Prompt) from its
fields, so nothing has to parse the rendered messages back.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from . import registry
from .config import usable_cores
from .errors import GuideError, ModelUnavailable
from .lang import LANGUAGES, phrase
from .retrieval import Hit, tokenize

__all__ = ["LLM", "Message", "LlamaCppLLM", "TransformersLLM", "OpenAICompatibleLLM", "ExtractiveLLM", "LLMS",
           "load_llm"]

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
    Given a Prompt (`stream_prompt`, or `best_sentence`) it reads the question and the hits; given only
    chat messages (`stream`) it reads them back from the rendered prompt.
    """

    name = "extractive"
    can_judge = False

    def stream(self, messages, *, max_tokens, temperature=0.0, stop=None):
        prompt = messages[-1]["content"]
        lines = prompt.splitlines()
        question = next((ln.split(":", 1)[1] for ln in lines if ln.split(":", 1)[0] in _QUESTION_LABELS), "")
        sources = []
        for line in lines:
            m = _SOURCE_LINE.match(line.strip())
            if m:
                sources.append((int(m.group(1)), m.group(2).split(": ", 1)[-1]))  # "[n] Title: text"
        yield self._best(question, sources) or "I don't know."

    def stream_prompt(self, prompt, *, max_tokens, temperature=0.0, stop=None):
        """The answer to an answer.Prompt, from its question and hits (no rendered text is parsed)."""
        yield self.best_sentence(prompt.asked, prompt.hits) or "I don't know."

    def best_sentence(self, question: str, hits: list[Hit]) -> str | None:
        """The source sentence that best overlaps the question, with its citation, or None."""
        sources = [(i, " ".join(h.passage.text.split()) if h.passage.kind != "facts"
                    else "; ".join(h.passage.text.splitlines())) for i, h in enumerate(hits, 1)]
        return self._best(question, sources)

    @staticmethod
    def _best(question: str, sources: list[tuple[int, str]]) -> str | None:
        # spoken questions often open with a greeting: the last sentence is the question itself
        asked = [q for q in re.split(r"(?<=[.!?。！？])\s*", question.strip()) if q.strip()]
        questions = [q for q in asked if q.rstrip().endswith(("?", "？"))] or asked
        question = questions[-1] if questions else question
        q_tokens = set(tokenize(question))
        best, best_score = None, 0.0
        for n, body in sources:
            for sentence in re.split(r"(?<=[.!?。！？])\s*|\n", body):
                tokens = set(tokenize(sentence))
                score = len(q_tokens & tokens) / (1 + len(tokens) ** 0.5)
                if sentence.strip() and score > best_score:
                    best, best_score = f"{sentence.strip()} [{n}]", score
        return best

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 3)


def load_llm(name: str, *, cache_dir: Path, n_ctx: int = 2048, threads: int = 0, device: str | None = None,
             adapter: str | None = None, isolate: bool = False) -> LLM:
    """An LLM by registry name (guide.registry, kind "llm"): a model pack, `hf:<hub id or pack>`,
    `openai:<url>[#model]`, a path to a .gguf file, or "extractive".

    `adapter` ("auto", "none" or a folder) applies a fine-tuned LoRA to a model pack: as a GGUF LoRA
    on llama.cpp, or with peft on transformers (`hf:<pack>`). A wrong-base adapter is refused.
    `isolate` runs a llama.cpp model in a supervised child process (guide.llm_server), self-checked
    at start, so that a native crash costs one answer instead of the process that asked.
    """
    return registry.load("llm", name, cache_dir=cache_dir, n_ctx=n_ctx, threads=threads, device=device,
                         adapter=adapter, isolate=isolate)


def _with_adapter(llm, name: str, folder, manifest):
    if manifest is not None:
        llm.prompt_example = manifest.get("prompt", {}).get("example", True)
        log.info("LLM %s with the fine-tuned adapter %s", name, folder)
    return llm


def _pack_adapter(pack_name: str, adapter: str | None):
    from .adapters import resolve_adapter
    from .models import PACKS

    return resolve_adapter(adapter, base_name=pack_name, base_sha256=PACKS[pack_name].sha256)


def _load_pack(name, *, cache_dir, n_ctx=2048, threads=0, device=None, adapter=None, isolate=False):
    """A model pack on llama.cpp, with its published GGUF LoRA adapter."""
    from .models import assemble_pack

    folder, manifest = _pack_adapter(name, adapter)
    path = assemble_pack(name, cache_dir)
    gpu_layers = -1 if device and device.startswith("cuda") else 0
    lora = None
    if folder is not None:
        if not manifest.get("gguf") or not (folder / manifest["gguf"]).is_file():
            raise ModelUnavailable(f"the adapter {folder} has no GGUF LoRA for llama.cpp; re-export it")
        lora = str(folder / manifest["gguf"])
    llm = _llama(path, n_ctx=n_ctx, threads=threads, name=name + ("+lora" if lora else ""),
                 gpu_layers=gpu_layers, lora=lora, isolate=isolate, cache_dir=cache_dir)
    return _with_adapter(llm, name, folder, manifest)


def _load_pack_transformers(name, *, cache_dir, device=None, adapter=None, **_):
    """A model pack on transformers (its GGUF de-quantized), with the published peft adapter."""
    from .models import assemble_pack

    pack_name = name[3:]
    folder, manifest = _pack_adapter(pack_name, adapter)
    path = assemble_pack(pack_name, cache_dir)
    llm = TransformersLLM(str(path.parent), gguf_file=path.name, device=device, adapter=str(folder) if folder else None)
    llm.name = name + ("+lora" if folder else "")
    return _with_adapter(llm, name, folder, manifest)


def _load_hf(name, *, device=None, adapter=None, **_):
    return TransformersLLM(name[3:], device=device, adapter=adapter if adapter not in (None, "auto", "none") else None)


def _load_openai(name, **_):
    url, _, model = name[len("openai:"):].partition("#")
    return OpenAICompatibleLLM(url, model=model or "default")


def _load_gguf(name, *, cache_dir, n_ctx=2048, threads=0, isolate=False, **_):
    if not Path(name).is_file():
        raise ModelUnavailable(f"no GGUF file at {name}")
    return _llama(name, n_ctx=n_ctx, threads=threads, name=Path(name).name, isolate=isolate, cache_dir=cache_dir)


def _register() -> None:
    from .models import PACKS
    from .registry import Backend

    register = registry.register
    for pack in [p for p, v in PACKS.items() if v.filename.endswith(".gguf")]:  # the answer-model packs
        register(Backend("llm", pack, f"{pack} GGUF offline pack on llama.cpp (its fine-tuned LoRA when published)",
                         _load_pack, requirements=("llama_cpp",)))
    register(Backend("llm", "extractive", "no model: the best-matching source sentence (tests)",
                     lambda name, **_: ExtractiveLLM()))
    register(Backend("llm", "hf:<pack>", "a model pack on transformers (de-quantized), with its peft adapter",
                     _load_pack_transformers, requirements=("transformers", "torch"),
                     matches=lambda n: n.startswith("hf:") and n[3:] in PACKS and PACKS[n[3:]].filename.endswith(".gguf")))
    register(Backend("llm", "hf:<hub id>", "any transformers chat model (GPU if available)", _load_hf,
                     requirements=("transformers", "torch"), matches=lambda n: n.startswith("hf:")))
    register(Backend("llm", "openai:<url>[#model]", "an OpenAI-compatible server (vLLM, TGI, llama.cpp server)",
                     _load_openai, matches=lambda n: n.startswith("openai:")))
    register(Backend("llm", "<path>.gguf", "any GGUF file (llama.cpp)", _load_gguf, requirements=("llama_cpp",),
                     matches=lambda n: n.endswith(".gguf")))


_register()
LLMS = {b.name: b.description for b in registry.backends("llm")}  # name -> description, for help texts


def _llama(path, *, n_ctx: int, threads: int, name: str, gpu_layers: int = 0, lora: str | None = None,
           isolate: bool, cache_dir: Path) -> LLM:
    """A GGUF model on llama.cpp: in this process, or in a supervised child (crash isolation)."""
    if not isolate:
        return LlamaCppLLM(path, n_ctx=n_ctx, threads=threads, name=name, gpu_layers=gpu_layers, lora_path=lora)
    from .llm_server import SupervisedLLM

    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return SupervisedLLM.start(path, lora=lora, name=name, n_ctx=n_ctx, threads=threads, gpu_layers=gpu_layers,
                               log_path=Path(cache_dir) / "llm-server.log")
