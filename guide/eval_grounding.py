"""The grounding check: does the guide decline what its texts do not say, and only that?

`python -m guide.eval_grounding` asks the Paris tour the written set `evals/grounding/eval.yaml`
(52 questions in en, fr, de, es, zh, ja), made for what the Paris eval set does not ask:

- `unlisted`: unanswerable questions of kinds no concept of guide/grounding.py lists (a guide's name,
  tomorrow's weather, the number of cleaners, the colour of a door): declined is right;
- `concept`: answerable questions that contain concept words (a price, a priest, a director, an owner);
- `bait`: answerable questions whose answer sounds like a refusal ("Unfortunately, it is closed until
  2030") or that are phrased like one ("Sorry, I don't know: who designed it?").

It runs the served guide (dialogue, retrieval, prompt, guards) with the offline default LLM and scores
it with guide.evaluate; `--guards on|off|<names>` sets `answer_guards`. `--precheck` asks no model:
it reports only the decisions taken before the model is asked (the concept and content-word checks),
for this set or for a tour's own eval set (`--set tours/paris/eval.yaml`). docs/GROUNDING.md has the
measured tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml
from tqdm import tqdm

from .config import ROOT, load_config
from .evaluate import evaluate_tour, load_eval_set, machine_description, summarize

log = logging.getLogger(__name__)

SET = ROOT / "evals" / "grounding" / "eval.yaml"
GROUPS = ("unlisted", "concept", "bait")


def groups_of(path: Path) -> dict[str, str]:
    """Question id -> its group in the set (`group:`; a tour's own set: by type)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    items = data.get("questions") if isinstance(data, dict) else data
    return {str(q.get("id", i)): q.get("group") or ("unanswerable" if q["type"] == "unanswerable" else "answerable")
            for i, q in enumerate(items)}


def precheck_decisions(guide, tour_id: str, questions, guards=True, *, progress: bool = True) -> list[dict]:
    """For each question, whether the guide declines it before asking the model, and why (no LLM runs:
    the earlier turns of a follow-up are answered by quoting the sources)."""
    from .answer import precheck
    from .dialogue import DialogueState
    from .pipeline import answer_turn
    from .prepare import prepare_prompt

    tour = guide.tour(tour_id)
    rows = []
    for q in tqdm(questions, desc="pre-check", unit="question", disable=not progress):
        state = DialogueState(tour=tour.id)
        for earlier in q.history:
            answer_turn(guide, state, text=earlier, tour=tour.id)
        prepared = prepare_prompt(guide, state, q.question, tour)  # the served path's Prompt
        why = precheck(prepared.prompt, guards)
        rows.append({"id": q.id, "lang": q.lang, "type": q.type, "question": q.question, "declined": bool(why),
                     "why": why or ""})
    return rows


class _Decisions(logging.Handler):
    """Collects what the answer guards logged (declined, withdrawn, asked again) during one question."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _recording(answer_turn, log_of: dict[str, list[str]]):
    """answer_turn, keeping each question's guard decisions in `log_of[question]`."""
    def wrapped(guide, state, **inputs):
        handler = _Decisions()
        logger = logging.getLogger("guide.answer")
        level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            return answer_turn(guide, state, **inputs)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
            log_of.setdefault(inputs.get("text", ""), []).extend(handler.messages)
    return wrapped


def guard_of(messages: list[str]) -> str:
    """Which guard decided a question's answer, from its log: the one that declined or replaced it."""
    for m in messages:
        if m.startswith("declined: ") and "asks for" in m:
            return "concepts"
        if m.startswith("declined: ") and "asks about" in m:
            return "content"
        if m.startswith("answer withdrawn, unsupported numbers"):
            return "numbers"
        if m.startswith("the model declined"):
            return "model"
    if any(m.startswith("answer echoed") for m in messages):
        return "echo"
    return ""


def _rate(values) -> float | None:
    values = list(values)
    return round(sum(values) / len(values), 2) if values else None


def group_table(rows: list[dict], groups: dict[str, str]) -> dict[str, dict]:
    """Per group: questions, refusals (unanswerable declined), false refusals and fact accuracy (answerable)."""
    out = {}
    for g in sorted({groups[r["id"]] for r in rows}, key=lambda g: (GROUPS + (g,)).index(g)):
        rs = [r for r in rows if groups[r["id"]] == g]
        s = summarize(rs) if rs and "seconds" in rs[0] else {}
        declined = [r.get("refused", r.get("declined")) for r in rs]
        unanswerable = [d for r, d in zip(rs, declined) if r["type"] == "unanswerable"]
        answerable = [d for r, d in zip(rs, declined) if r["type"] != "unanswerable"]
        out[g] = {"questions": len(rs), "refusals": _rate(unanswerable), "false_refusals": _rate(answerable),
                  "fact_accuracy": s.get("fact_accuracy"), "language_match": s.get("language_match")}
    return out


def format_table(tables: dict[str, dict[str, dict]]) -> str:
    """Markdown: one row per (run, group)."""
    lines = ["| run | group | questions | refusals | false refusals | fact accuracy | language match |",
             "|---|---|---|---|---|---|---|"]

    def fmt(v):
        return "–" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))

    for run, table in tables.items():
        for g, s in table.items():
            lines.append(f"| {run} | {g} | {s['questions']} | {fmt(s['refusals'])} | {fmt(s['false_refusals'])} | "
                         f"{fmt(s['fact_accuracy'])} | {fmt(s['language_match'])} |")
    return "\n".join(lines)


def _guards(value: str):
    return {"on": True, "off": False}.get(value, value)


def _rescore(path: Path, questions, groups: dict[str, str], tour_id: str) -> int:
    from .evaluate import rescore
    from .tours import load_tour

    stored = json.loads(path.read_text(encoding="utf-8"))
    tour = load_tour(load_config("offline").tours_dir / tour_id)
    report = rescore({"tour": tour.id, "llm": "", "embedder": "", "rows": stored["rows"]}, tour, questions)
    tables = {stored["run"]: group_table(report["rows"], groups)}
    print(format_table(tables))
    stored.update(rows=report["rows"], tables=tables)
    path.write_text(json.dumps(stored, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m guide.eval_grounding", description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", type=Path, default=SET, help="the question set (default: evals/grounding/eval.yaml)")
    ap.add_argument("--tour", default="paris")
    ap.add_argument("--guards", default="on", help="on, off, or guard names: concepts,content,echo,dump,numbers")
    ap.add_argument("--precheck", action="store_true", help="only the decisions taken before the model is asked")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--json", type=Path, help="write the rows and tables here")
    ap.add_argument("--rescore", type=Path, help="score the answers of an earlier --json again with the set as it is now")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .llm import ExtractiveLLM
    from .pipeline import Guide

    questions = load_eval_set(args.set)[: args.limit] if args.limit else load_eval_set(args.set)
    groups = groups_of(args.set)
    if args.rescore:
        return _rescore(args.rescore, questions, groups, args.tour)
    guards = _guards(args.guards)
    config = load_config("offline", answer_guards=guards)
    guide = Guide.load(config, tours=[args.tour], llm=ExtractiveLLM() if args.precheck else None, progress=False)
    try:
        if args.precheck:
            rows = precheck_decisions(guide, args.tour, questions, guards)
            run = f"pre-check, guards {args.guards}"
            report = {"rows": rows}
        else:
            from . import evaluate

            log_of: dict[str, list[str]] = {}
            turn = evaluate.answer_turn
            evaluate.answer_turn = _recording(turn, log_of)
            try:
                report = evaluate_tour(guide, args.tour, questions=questions)
            finally:
                evaluate.answer_turn = turn
            rows = report["rows"]
            for r in rows:
                r["guard_log"] = log_of.get(r["question"], [])
                r["decided_by"] = guard_of(r["guard_log"])
            run = f"{guide.llm.name}, guards {args.guards}"
    finally:
        guide.close()
    tables = {run: group_table(rows, groups)}
    print(format_table(tables))
    for r in rows:
        if r.get("refused", r.get("declined")) != (r["type"] == "unanswerable"):
            print(f"  {r['id']}: {r['question']} -> {r.get('answer', r.get('why', ''))!r}", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine_description(), "set": str(args.set), "run": run,
                                         "tables": tables, **report}, indent=1, ensure_ascii=False, default=str),
                             encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
