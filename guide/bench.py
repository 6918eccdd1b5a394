"""`make bench`: latency tables for retrieval, the LLM, speech and vision, with the machine described."""

from __future__ import annotations

import logging
import time

import numpy as np
from tqdm import tqdm

from .config import GuideConfig

__all__ = ["run_bench", "percentiles", "table"]

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


def run_bench(config: GuideConfig, *, quick: bool = False) -> str:
    from .evaluate import machine_description

    sections = [f"Machine: {machine_description()}", ""]
    sections += ["## Retrieval", bench_retrieval(config, synthetic=10_000 if quick else 100_000), ""]
    sections += ["## LLM", bench_llm(config, runs=2 if quick else 5), ""]
    for title, module, fn in (("Speech", "eval_speech", "bench_speech"), ("Vision", "eval_vision", "bench_vision")):
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
    return "\n".join(sections)
