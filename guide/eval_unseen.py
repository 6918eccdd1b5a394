"""The unseen-city check: the served guide on a city none of its tours or training data covers.

`python -m guide.eval_unseen` imports the New York places of the development texts
(`../shared/data/dev/texts/wikipedia_en_2014_newyork_places.jsonl`, English only) as a one-language
tour that answers in six languages (`python -m guide import`), and asks it the written question set
`evals/newyork/eval.yaml` (72 questions: en, de, fr, es, zh, ja; facts, follow-ups, "can I visit it",
unanswerable requests of kinds no guard lists). Systems, same 0.5B model:

- `served`: the guide as a visitor gets it (dialogue, retrieval, prompt, guards), with the published
  adapter when there is one, and with the base (`adapter=none`);
- `naive RAG`: top-3 passages of the whole tour and a plain instruction, nothing else (the baseline
  a guide must beat to earn its machinery).

Prints a table per system and writes the answers to runs/unseen/<system>.json.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

from tqdm import tqdm

from .answer import is_refusal
from .config import ROOT, load_config
from .evaluate import evaluate_tour, format_report, load_eval_set, rescore, save_report

log = logging.getLogger(__name__)

DEV_TEXTS = ROOT.parent / "shared" / "data" / "dev" / "texts" / "wikipedia_en_2014_newyork_places.jsonl"
EVAL_DIR = ROOT / "evals" / "newyork"
LANGUAGES = ["en", "de", "fr", "es", "zh", "ja"]

NAIVE_SYSTEM = ("You are a tour guide. Answer the visitor's question in one or two sentences, using only the "
                "context, in the language of the question. If the context does not say, say you don't know.")


def build_tour(tours_dir: Path, source: Path = DEV_TEXTS) -> Path:
    """tours_dir/newyork: the imported places, with the written eval set beside them."""
    from .tour_import import read_places, write_tour

    if not source.is_file():
        raise FileNotFoundError(f"{source} is absent: the unseen-city check needs the development texts")
    names = [n.strip() for n in (EVAL_DIR / "places.txt").read_text(encoding="utf-8").splitlines() if n.strip()]
    folder = tours_dir / "newyork"
    write_tour(read_places(source, only=names), folder, tour_id="newyork", name="New York", text_language="en",
               languages=LANGUAGES, overwrite=True)
    shutil.copy(EVAL_DIR / "eval.yaml", folder / "eval.yaml")
    return folder


def naive_rag(guide, tour_id: str, *, k: int = 3, progress: bool = True) -> dict:
    """Top-k passages of the whole tour + the question, one plain prompt; no dialogue state, no guards
    (a follow-up is searched with the earlier messages prepended)."""
    tour = guide.tour(tour_id)
    questions = load_eval_set(tour.folder / "eval.yaml")
    rows = []
    for q in tqdm(questions, desc="naive RAG", unit="question", disable=not progress):
        search = " ".join([*q.history, q.question])
        hits = guide.search(tour, search, k=k)
        context = "\n".join(f"[{i}] {h.passage.title}: {' '.join(h.passage.text.split())}"
                            for i, h in enumerate(hits, 1))
        messages = [{"role": "system", "content": NAIVE_SYSTEM}]
        for earlier in q.history:
            messages.append({"role": "user", "content": earlier})
        messages.append({"role": "user", "content": f"Context:\n{context}\n\nQuestion: {q.question}"})
        t = time.perf_counter()
        answer = "".join(guide.llm.stream(messages, max_tokens=guide.config.max_answer_tokens, temperature=0.0))
        rows.append({"id": q.id, "lang": q.lang, "type": q.type, "question": q.question, "answer": answer.strip(),
                     "refused": is_refusal(answer), "seconds": round(time.perf_counter() - t, 2),
                     "ranked": [h.passage.attraction for h in hits]})
        if q.attractions:
            ranked = rows[-1]["ranked"]
            rows[-1]["r1"] = bool(ranked) and ranked[0] in q.attractions
            rows[-1]["r5"] = any(a in q.attractions for a in ranked)
    return rescore({"tour": tour.id, "llm": guide.llm.name + " (naive RAG)", "embedder": guide.embedder.name,
                    "rows": rows}, tour, questions)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m guide.eval_unseen", description=__doc__.split("\n\n")[0])
    ap.add_argument("--systems", default="served,base,naive",
                    help="comma-separated: served (published adapter), base (adapter=none), naive (naive RAG)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "unseen")
    ap.add_argument("--source", type=Path, default=DEV_TEXTS)
    ap.add_argument("--limit", type=int)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .adapters import published
    from .pipeline import Guide

    tours_dir = args.out / "tours"
    try:
        build_tour(tours_dir, args.source)
    except FileNotFoundError as e:
        print(f"skipped: {e}", file=sys.stderr)
        return 0
    tables = []
    for system in [s.strip() for s in args.systems.split(",") if s.strip()]:
        adapter = "none" if system in ("base", "naive") else "auto"
        config = load_config("offline", tours_dir=tours_dir, index_dir=args.out / "indexes", adapter=adapter)
        if system == "served" and published(config.llm) is None:
            print("served: no adapter is published; the base is `base`", file=sys.stderr)
            continue
        guide = Guide.load(config, tours=["newyork"], progress=False)
        try:
            if system == "naive":
                report = naive_rag(guide, "newyork")
            else:
                questions = load_eval_set(tours_dir / "newyork" / "eval.yaml")
                report = evaluate_tour(guide, "newyork", questions=questions[: args.limit] if args.limit else None)
        finally:
            guide.close()
        report["system"] = system
        save_report(report, args.out / f"{system}.json")
        tables.append(f"### {system}\n\n{format_report(report)}")
        print(tables[-1], flush=True)
    (args.out / "report.md").write_text("\n\n".join(tables) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
