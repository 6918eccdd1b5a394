"""The evaluation harness for answers: retrieval recall, fact accuracy, language match, refusals."""

from __future__ import annotations

import json
import logging
import platform
import re
import statistics
import time
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tqdm import tqdm

from .dialogue import DialogueState, resolve, strip_names
from .errors import TourError
from .lang import detect_language
from .pipeline import Guide, answer_turn

__all__ = ["EvalQuestion", "load_eval_set", "evaluate_tour", "format_report", "machine_description"]

log = logging.getLogger(__name__)

TYPES = ("factual", "followup", "comparison", "unanswerable")


@dataclass(frozen=True)
class EvalQuestion:
    id: str
    lang: str
    type: str
    question: str
    attractions: tuple[str, ...]
    expect: tuple[str, ...]
    history: tuple[str, ...] = field(default=())
    answer: str = ""  # a written reference answer (train.yaml): the target where the base is wrong


def load_eval_set(path: str | Path) -> list[EvalQuestion]:
    """Read and check an eval.yaml (format in docs/TOUR_FORMAT.md)."""
    path = Path(path)
    if path.is_dir():
        path = path / "eval.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise TourError([f"{path}: cannot read the evaluation set ({e})"]) from None
    items = data.get("questions") if isinstance(data, dict) else data
    problems, out = [], []
    for i, q in enumerate(items or []):
        where = f"{path}: questions[{i}]"
        if not isinstance(q, dict) or not q.get("question") or q.get("type") not in TYPES or not q.get("lang"):
            problems.append(f"{where}: needs question, lang and a type in {TYPES}")
            continue
        att = q.get("attraction")
        atts = tuple(att) if isinstance(att, list) else ((att,) if att else ())
        expect = tuple(str(e) for e in (q.get("expect") or ()))
        if q["type"] != "unanswerable" and not expect:
            problems.append(f"{where}: an answerable question needs `expect`")
        answer = q.get("answer") or ""
        if answer and (not isinstance(answer, str) or not contains_fact(answer, expect)):
            problems.append(f"{where}: the written `answer` must be text stating one of `expect`")
        out.append(EvalQuestion(id=str(q.get("id", i)), lang=q["lang"], type=q["type"], question=q["question"],
                                attractions=atts, expect=expect, history=tuple(q.get("history") or ()),
                                answer=answer))  # a non-text answer is reported above
    if problems:
        raise TourError(problems)
    return out


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def contains_fact(answer: str, expect: tuple[str, ...]) -> bool:
    """Whether the answer states one of the expected facts (case, width and spacing insensitive)."""
    a = _norm(answer)
    a_compact = a.replace(" ", "").replace(",", "").replace(".", "")
    for e in expect:
        e = _norm(e)
        if e in a or e.replace(" ", "").replace(",", "").replace(".", "") in a_compact:
            return True
    return False


_KANA = re.compile(r"[\u3040-\u30ff]")
_HAN = re.compile(r"[\u4e00-\u9fff]")


# two or more capitalised words in a row: "Pierre Lescot", "Louis Le Vau", "I. M. Pei"
_PROPER_NAME = re.compile(r"[A-ZÀ-Þ][\w'’.-]*(?:\s+[A-ZÀ-Þ][\w'’.-]*)+")
_FACT_NAMES: dict[tuple[str, str], list[str]] = {}


def fact_names(tour) -> list[str]:
    """The people and places named in the tour's facts (architects, patrons...), longest first."""
    key = (tour.id, tour.content_hash)
    if key not in _FACT_NAMES:
        # English values only: a German fact capitalises every noun ("Große Treppe" is not a name)
        values = [a.fact(k, "en") for a in tour.attractions for k in a.facts]
        found = {m.group() for v in values if isinstance(v, str) for m in _PROPER_NAME.finditer(v)}
        _FACT_NAMES[key] = sorted(found, key=len, reverse=True)
    return _FACT_NAMES[key]


def answer_language(answer: str, tour) -> str | None:
    """The language an answer is written in, or None when it is language-neutral.

    Attraction names, the names of people in the tour's facts, citations and numbers say nothing
    about the language; an answer that is only those ("Charles Garnier [3].", "1578 [1].") reads the
    same in every language.
    """
    text = strip_names(answer, tour)
    for name in fact_names(tour):
        text = text.replace(name, " ")
    text = re.sub(r"\[\d+\]|\d+", " ", text)
    if _HAN.search(text) and not _KANA.search(text) and len(_HAN.findall(text)) < 6:
        return None  # a few Chinese characters alone ("59階") read as Chinese or Japanese
    letters = sum(ch.isalpha() for ch in text)
    if letters < (2 if _HAN.search(text) or _KANA.search(text) else 12):
        return None
    return detect_language(text, tour.languages)[0]


def citations_valid(answer: str, passages: list, attractions: tuple[str, ...]) -> bool:
    """An answer cites at least one source, every [n] is one of the sources given, and one is on topic."""
    cited = [int(n) for n in re.findall(r"\[(\d+)\]", answer)]
    if not cited or any(not 1 <= n <= len(passages) for n in cited):
        return False
    return not attractions or any(passages[n - 1].passage.attraction in attractions for n in cited)


def evaluate_tour(guide: Guide, tour_id: str, *, questions: list[EvalQuestion] | None = None,
                  limit: int | None = None, progress: bool = True) -> dict:
    """Run every question of the tour's eval set through the real pipeline and score it."""
    tour = guide.tour(tour_id)
    questions = questions or load_eval_set(tour.folder / "eval.yaml")
    if limit:
        questions = questions[:limit]
    rows = []
    for q in tqdm(questions, desc=f"evaluating {tour.id}", unit="question", disable=not progress):
        state = DialogueState(tour=tour.id)
        for earlier in q.history:
            answer_turn(guide, state, text=earlier, tour=tour.id)
        # retrieval as the pipeline does it, resolved in the same dialogue context
        probe = DialogueState(tour=tour.id, attraction=state.attraction, language=state.language)
        query = resolve(probe, q.question, tour)
        ranked = [h.passage.attraction for h in guide.search(tour, query.search_text, k=5, lang=query.language)]
        t = time.perf_counter()
        turn = answer_turn(guide, state, text=q.question, tour=tour.id)
        seconds = time.perf_counter() - t
        row = {
            "id": q.id, "lang": q.lang, "type": q.type, "question": q.question, "answer": turn.answer,
            "refused": turn.refused, "seconds": round(seconds, 2),
            "first_token": round(turn.timings.get("first_token", 0.0), 2), "ranked": ranked, "cited": turn.citations,
        }
        if q.attractions:
            row["r1"] = bool(ranked[:1]) and ranked[0] in q.attractions
            row["r5"] = any(a in q.attractions for a in ranked[:5])
        if q.type != "unanswerable" and not turn.refused:
            row["citation_ok"] = citations_valid(turn.raw or turn.answer, turn.passages, q.attractions)
        rows.append(row)
    return rescore({"tour": tour.id, "llm": guide.llm.name, "embedder": guide.embedder.name, "rows": rows},
                   tour, questions)


def rescore(result: dict, tour, questions) -> dict:
    """Language, fact and refusal scores of `evaluate_tour`'s rows, and the summaries, from the answers.

    Called as the answers are given and again when stored answers are reused (the fine-tuning run's
    caches), so a changed expectation or language rule never leaves a stale score.
    """
    by_id = {q.id: q for q in questions}
    for r in result["rows"]:
        q = by_id[r["id"]]
        r["answer_lang"] = answer_language(r["answer"], tour)
        r["lang_ok"] = r["answer_lang"] in (None, q.lang)
        if q.type != "unanswerable":
            r["fact_ok"] = (not r["refused"]) and contains_fact(r["answer"], q.expect)
        else:
            r["refusal_ok"] = r["refused"]
    result["summary"] = summarize(result["rows"])
    result["by_language"] = {lang: summarize([r for r in result["rows"] if r["lang"] == lang])
                             for lang in sorted({r["lang"] for r in result["rows"]})}
    return result


def _mean(values) -> float | None:
    values = [float(v) for v in values]
    return round(sum(values) / len(values), 3) if values else None


def summarize(rows: list[dict]) -> dict:
    answerable = [r for r in rows if "fact_ok" in r]
    return {
        "questions": len(rows),
        "recall@1": _mean(r["r1"] for r in rows if "r1" in r),
        "recall@5": _mean(r["r5"] for r in rows if "r5" in r),
        "fact_accuracy": _mean(r["fact_ok"] for r in answerable),
        "followup_accuracy": _mean(r["fact_ok"] for r in answerable if r["type"] == "followup"),
        "language_match": _mean(r["lang_ok"] for r in rows),
        "language_neutral": sum(r["answer_lang"] is None for r in rows),
        "refusals": _mean(r["refusal_ok"] for r in rows if "refusal_ok" in r),
        "citation_validity": _mean(r["citation_ok"] for r in rows if "citation_ok" in r),
        "false_refusals": _mean(r["refused"] for r in answerable),
        "median_seconds": round(statistics.median(r["seconds"] for r in rows), 2) if rows else None,
    }


_COLUMNS = ["questions", "recall@1", "recall@5", "fact_accuracy", "followup_accuracy", "language_match",
            "language_neutral", "refusals", "false_refusals", "citation_validity", "median_seconds"]


def format_report(report: dict) -> str:
    """A markdown table: overall, then one row per language."""
    head = "| | " + " | ".join(c.replace("_", " ") for c in _COLUMNS) + " |"
    lines = [f"Tour `{report['tour']}`, LLM `{report['llm']}`, embedder `{report['embedder']}`", "", head,
             "|" + "---|" * (len(_COLUMNS) + 1)]

    def fmt(v):
        return "–" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))

    lines.append("| **all** | " + " | ".join(fmt(report["summary"][c]) for c in _COLUMNS) + " |")
    for lang, s in report["by_language"].items():
        lines.append(f"| {lang} | " + " | ".join(fmt(s[c]) for c in _COLUMNS) + " |")
    return "\n".join(lines)


def failures(report: dict) -> list[dict]:
    return [r for r in report["rows"] if not (r.get("fact_ok", True) and r.get("refusal_ok", True) and r["lang_ok"])]


def save_report(report: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False))


def machine_description() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    simd = simd_flags()
    return (f"{cpu} ({simd}), {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


# the instruction sets that change native speed or decide whether a build runs (docs/PORTABILITY.md)
_SIMD = ("avx2", "fma", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8",
         "amx_bf16", "asimd", "sve")


def simd_flags(flags: frozenset[str] | None = None) -> str:
    """The CPU's vector instruction sets that matter for the guide's native code, e.g. 'avx2 fma avx512f'."""
    from .config import cpu_flags

    flags = cpu_flags() if flags is None else flags
    return " ".join(f for f in _SIMD if f in flags) or "no SIMD flags read"


def by_type(rows: list[dict]) -> dict:
    out = defaultdict(list)
    for r in rows:
        out[r["type"]].append(r)
    return {t: summarize(rs) for t, rs in out.items()}
