"""`make bench`: latency tables for retrieval, the LLM, speech, vision and the first audio of a spoken turn,
with the machine described."""

from __future__ import annotations

import logging
import time

import numpy as np
from tqdm import tqdm

from .config import GuideConfig

__all__ = ["run_bench", "bench_first_audio", "percentiles", "table", "BENCHES", "SPOKEN_QUESTIONS"]

log = logging.getLogger(__name__)


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def table(headers: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        out.append("| " + " | ".join(f"{c:.1f}" if isinstance(c, float) else str(c) for c in r) + " |")
    return "\n".join(out)


def _questions(tour) -> list[str]:
    try:
        from .evaluate import load_eval_set

        return [q.question for q in load_eval_set(tour.folder / "eval.yaml")]
    except Exception:
        return [f"{a.name(lang)}?" for a in tour.attractions for lang in tour.languages]


def bench_retrieval(config: GuideConfig, *, synthetic: int = 100_000, queries: int = 50) -> str:
    from .retrieval import HNSW_THRESHOLD, HybridIndex, ensure_index, load_embedder
    from .tours import Passage, load_tour, tour_passages

    embedder = load_embedder(config.embedder, threads=config.threads)
    tour = load_tour(config.tours_dir / config.default_tour)
    index = ensure_index(tour, embedder, config.index_dir)
    qs = (_questions(tour) * 3)[:queries]
    rows = []
    embed_t, search_t = [], []
    for q in tqdm(qs, desc="retrieval, demo tour", unit="query"):
        t = time.perf_counter()
        v = embedder.embed_queries([q])[0]
        embed_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        index.search(q, v, k=config.top_k)
        search_t.append(time.perf_counter() - t)
    n = len(index.passages)
    rows.append([f"{tour.id} ({n} passages, {index.manifest['dense_index']})", "query embedding", *percentiles(embed_t)])
    rows.append([f"{tour.id} ({n} passages, {index.manifest['dense_index']})", "hybrid search", *percentiles(search_t)])

    # synthetic corpus: words drawn from the tour's own text, random unit vectors for the dense side
    rng = np.random.default_rng(0)
    vocab = sorted({w for p in tour_passages(tour) for w in p.text.split()})
    t = time.perf_counter()
    passages = [Passage(id=f"s{i}", tour="synthetic", attraction=f"a{i % 2000}", lang="en", kind="description",
                        title=f"Place {i}", text=" ".join(rng.choice(vocab, 40)), source="synthetic")
                for i in range(synthetic)]
    vectors = rng.standard_normal((synthetic, embedder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    big = HybridIndex.build(passages, embedder, vectors=vectors, progress=False)
    build_s = time.perf_counter() - t
    kind = "hnsw" if synthetic >= HNSW_THRESHOLD else "flat"
    search_t = []
    for q in tqdm(qs, desc=f"retrieval, {synthetic:,} synthetic passages", unit="query"):
        v = embedder.embed_queries([q])[0]
        t = time.perf_counter()
        big.search(q, v, k=config.top_k)
        search_t.append(time.perf_counter() - t)
    rows.append([f"synthetic {synthetic:,} passages ({kind}; built in {build_s:.0f} s)", "hybrid search",
                 *percentiles(search_t)])
    return table(["corpus", "step", "p50 ms", "p95 ms"], rows)


def bench_llm(config: GuideConfig, *, runs: int = 3) -> str:
    from .answer import load_llm
    from .dialogue import DialogueState
    from .pipeline import Guide, prepare_prompt

    guide = Guide.load(config, tours=[config.default_tour])
    tour = guide.tour(config.default_tour)
    llm = guide.llm if guide.llm else load_llm(config.llm, cache_dir=config.cache_dir)
    rows = []
    for q in tqdm(_questions(tour)[:runs], desc="llm", unit="answer"):
        messages = prepare_prompt(guide, DialogueState(tour=tour.id), q, tour).messages
        prompt_tokens = llm.count_tokens("".join(m["content"] for m in messages))
        t = time.perf_counter()
        first, text = None, ""
        for piece in llm.stream(messages, max_tokens=config.max_answer_tokens):
            if first is None:
                first = time.perf_counter() - t
            text += piece
        total = time.perf_counter() - t
        gen_tokens = llm.count_tokens(text)
        rate = (gen_tokens - 1) / (total - first) if first is not None and total > first and gen_tokens > 1 else 0.0
        rows.append([q[:40], prompt_tokens, round((first or 0) * 1000), gen_tokens, rate])
    return f"LLM `{llm.name}`\n\n" + table(["question", "prompt tokens", "time to first token ms",
                                             "answer tokens", "tokens/s"], rows)


# ~5 s spoken questions about the default tour in each of its languages and about several of its
# attractions, in the voices the guide itself speaks with (each language's best installed voice)
SPOKEN_QUESTIONS: dict[str, str] = {
    "en": "Good morning. I have a question about the Eiffel Tower in Paris. How tall is the tower?",
    "de": "Guten Tag, ich habe eine Frage zum Eiffelturm in Paris. Wie hoch ist der Turm?",
    "es": "Buenos días. Tengo una pregunta sobre la torre Eiffel de París. ¿Cuánto mide la torre?",
    "fr": "Bonjour. J'ai une question sur l'Arc de Triomphe. Qui est enterré sous l'arc ?",
    "zh": "你好，我想问一下卢浮宫的玻璃金字塔。它是谁设计的？",
    "ja": "こんにちは。ノートルダム大聖堂について質問があります。いつ再開しましたか？",
}
# (label, how to read it from a turn's timings and the LLM's own first token), in the order they happen
FIRST_AUDIO_STAGES = ("decode", "ASR", "retrieval", "prompt", "first token", "first sentence", "TTS", "other",
                      "first audio", "preface TTS", "first words")


class _TimedLLM:
    """The guide's LLM, noting when each answer's generation starts and its first token comes."""

    def __init__(self, llm):
        self.llm, self.started, self.first = llm, None, None

    def __getattr__(self, name):
        return getattr(self.llm, name)

    def stream(self, messages, **kwargs):
        self.started, self.first = time.perf_counter(), None
        for piece in self.llm.stream(messages, **kwargs):
            if self.first is None:
                self.first = time.perf_counter()
            yield piece


def _first_audio_stages(timings: dict[str, float], prefill: float) -> dict[str, float]:
    """Seconds per stage up to the first sentence's audio; `prefill`: the LLM's own time to its first token."""
    stages = {"decode": timings.get("decode", 0.0), "ASR": timings.get("asr", 0.0),
              "retrieval": timings.get("retrieval", 0.0), "prompt": timings.get("prompt", 0.0),
              "first token": prefill, "first sentence": max(0.0, timings["first_sentence"] - prefill),
              "TTS": timings["tts_first"]}
    stages["other"] = max(0.0, timings["first_audio"] - sum(stages.values()))  # hand-overs, checks, waiting
    stages["first audio"] = timings["first_audio"]  # the answer's first sentence
    # the spoken preface (the subject's name), said while the model reads its prompt: the first sound
    stages["preface TTS"] = timings.get("preface_tts", 0.0)
    stages["first words"] = timings.get("preface_audio", timings["first_audio"])
    return stages


def bench_first_audio(config: GuideConfig, *, turns: int = 12, guide=None, progress: bool = True) -> str:
    """From the end of a ~5 s spoken question to the first sample of the answer's audio, per stage, and
    to the first words heard (the spoken preface, when `config.spoken_preface`).

    The questions are synthesised with the guide's own voices, written as WAV files and asked as
    recordings (so decoding counts), each turn a new visitor; the guide warmed as the app warms it at
    start-up (`Guide.warm`), then one warm-up turn (llama.cpp caches the system prompt). Median and p95
    over `turns` turns.
    """
    import tempfile
    from pathlib import Path

    from .dialogue import DialogueState
    from .pipeline import Guide, stream_turn
    from .tts import write_wav

    if guide is None:  # as the app is once started: models loaded, voices and photo recognizers warmed
        guide = Guide.load(config, tours=[config.default_tour], progress=False)
        guide.warm().join()
    tour = guide.tour(config.default_tour)
    timed = _TimedLLM(guide.llm)
    guide.llm = timed
    rows: list[dict[str, float]] = []
    unanswered = []
    with tempfile.TemporaryDirectory(prefix="bench-first-audio-") as tmp:
        clips = []
        for lang, text in SPOKEN_QUESTIONS.items():
            if lang in tour.languages:
                speech = guide.tts.synthesize(text, lang)
                clips.append((lang, write_wav(Path(tmp) / f"{lang}.wav", speech), speech.duration, speech.voice))
        if not clips:
            return f"skipped: the tour {tour.id} speaks none of {', '.join(SPOKEN_QUESTIONS)}"
        try:
            for i in tqdm(range(turns + 1), desc="first audio", unit="turn", disable=not progress):
                lang, path, _, _ = clips[i % len(clips)]
                *_, turn = stream_turn(guide, DialogueState(), audio=str(path), tour=tour.id, speak=True)
                if i == 0:
                    continue  # warm-up
                if "first_sentence" not in turn.timings or "first_audio" not in turn.timings or timed.first is None:
                    unanswered.append(f"{lang}: {turn.answer[:60]!r}")
                    continue
                rows.append(_first_audio_stages(turn.timings, timed.first - timed.started))
        finally:
            guide.llm = timed.llm
    asr = guide.asr
    lines = [f"{len(rows)} turns on tour `{tour.id}`; LLM `{timed.llm.name}`; ASR `{getattr(asr, 'name', '?')}` "
             f"(beam {getattr(asr, 'beam_size', '?')}); questions: "
             + ", ".join(f"{lang} {seconds:.1f} s ({voice})" for lang, _, seconds, voice in clips), ""]
    if unanswered:
        lines += [f"not answered (left out): {'; '.join(unanswered)}", ""]
    if not rows:
        return "\n".join(lines + ["no turn was answered"])
    table_rows = [[stage, *percentiles([r[stage] for r in rows])] for stage in FIRST_AUDIO_STAGES]
    return "\n".join(lines) + table(["stage (to the first audio)", "p50 ms", "p95 ms"], table_rows)


BENCHES = ("retrieval", "llm", "speech", "vision", "first-audio")


def run_bench(config: GuideConfig, *, quick: bool = False, only: list[str] | None = None,
              turns: int | None = None) -> str:
    """Every benchmark (or those in `only`, names from BENCHES) as markdown, the machine described first."""
    from .evaluate import machine_description

    only = list(only or BENCHES)
    unknown = [b for b in only if b not in BENCHES]
    if unknown:
        raise ValueError(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHES)}")
    sections = [f"Machine: {machine_description()}", ""]
    if "retrieval" in only:
        sections += ["## Retrieval", bench_retrieval(config, synthetic=10_000 if quick else 100_000), ""]
    if "llm" in only:
        sections += ["## LLM", bench_llm(config, runs=2 if quick else 5), ""]
    for title, module, fn in (("Speech", "eval_speech", "bench_speech"), ("Vision", "eval_vision", "bench_vision")):
        if title.lower() not in only:
            continue
        try:
            mod = __import__(f"guide.{module}", fromlist=[fn])
            if fn == "bench_speech":
                result = mod.bench_speech(config)
            else:
                result = mod.bench_vision(sizes=(10, 100) if quick else (10, 100, 1000), cache_dir=config.cache_dir)
            sections += [f"## {title}", result if isinstance(result, str) else mod.format_table(result), ""]
        except Exception as e:  # a stage that cannot run here is reported, not fatal
            log.warning("%s benchmark skipped: %s", title, e)
            sections += [f"## {title}", f"skipped: {e}", ""]
    if "first-audio" in only:
        try:
            result = bench_first_audio(config, turns=turns or (3 if quick else 12))
        except Exception as e:  # noqa: BLE001 - a missing model is reported, not fatal
            log.warning("first-audio benchmark skipped: %s", e)
            result = f"skipped: {e}"
        sections += ["## First audio (spoken question to the first sample of the spoken answer)", result, ""]
    return "\n".join(sections)
