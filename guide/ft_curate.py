"""The fine-tuning data, curated: the base's own answers as targets, refusal caps, refusal twins.

`ftdata.build_dataset` composes the examples of a tour (and the dialogue sets); this module decides
which of them train the model and with which target: the written questions of the training
attractions answered by the base where it is right (teacher_examples), the generated ones answered
by the base where it is right (distil), at most a share of "I don't know" targets (cap_refusals),
each beside an answered question on the same attraction (pair_refusals), and a subsample that keeps
every kind and language (_subsample).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import re
from pathlib import Path

from tqdm import tqdm

from .ftdata import DONT_KNOW, Example

__all__ = ["written_questions", "teacher_examples", "cap_refusals", "pair_refusals", "distil", "eval_with_llm"]

log = logging.getLogger(__name__)


def written_questions(tour, attractions, file: str = "eval.yaml") -> list:
    """The tour's written questions about the given attractions only: the eval set (eval.yaml), or
    the questions written for training alone (train.yaml, never used to evaluate)."""
    from .evaluate import load_eval_set

    path = tour.folder / file
    if not path.is_file():
        return []
    return [q for q in load_eval_set(path) if q.attractions and set(q.attractions) <= set(attractions)]


def teacher_examples(guide, tour, llm, attractions, *, progress: bool = True,
                     cache: Path | None = None, model_key: str = "", quotes: bool = True) -> tuple[list[Example], dict]:
    """The base's own answers to the written questions of training attractions, where they are right.

    Training only on the three generated fact kinds taught the model that every other question is
    one to decline (measured: false refusals 0.20 on the full eval set). These examples keep the
    base's answers to varied questions ("What was the Musée d'Orsay before it became a museum?")
    as targets where the answer holds the expected fact, in the visitor's language, with a valid
    citation (self-distillation); where the base is wrong, the shortest source sentence in the
    visitor's language that states the fact, cited. Unanswerable ones get "I don't know". Questions
    that need an earlier turn are left out. The prompt is the one the tuned model is served with.

    The questions are the eval set's (eval.yaml) and the ones written for training alone (train.yaml:
    about ten per attraction, of every kind a visitor asks — counts, what a building was, who is
    buried, whose statue — in every tour language). The eval set's 50 were too few: the tuned model
    declined or misanswered the kinds it had not seen ("How many steps to the dome?").
    The base's answers are kept in `cache` when given (keyed by `model_key` — the base's sha256 —,
    the questions and their prompts). With `quotes=False` a question the base gets wrong is left out
    (run 8: 47 quoted targets taught the model to quote a sentence, sometimes the wrong one).
    """
    from .answer import _CITATION
    from .dialogue import DialogueState
    from .evaluate import rescore
    from .ftdata import cite, reference_answer
    from .pipeline import prepare_prompt

    sources = {}
    for file, source in (("eval.yaml", f"eval:{tour.id}"), ("train.yaml", f"train:{tour.id}")):
        for q in written_questions(tour, attractions, file):
            if not q.history and q.lang in DONT_KNOW:
                sources.setdefault(q.id, (q, source))
    questions = [q for q, _ in sources.values()]
    prompts = {q.id: prepare_prompt(guide, DialogueState(tour=tour.id), q.question, tour, example=False)
               for q in questions}
    # a question that names no attraction the guide recognises is searched over the whole tour, and
    # may retrieve passages of held-out attractions: those examples are left out (no leak)
    leaky = {i for i, p in prompts.items() if any(h.passage.attraction not in attractions for h in p.hits)}
    questions = [q for q in questions if q.id not in leaky]
    answerable = [q for q in questions if q.type != "unanswerable"]

    def answer(qs):
        return {r["id"]: r for r in eval_with_llm(guide, tour.id, llm, qs, progress)["rows"]} if qs else {}

    if cache is not None and model_key:
        # the answers depend on the model and the prompt only: each is kept under a hash of both, so
        # a new question asks the model that question alone; they are scored again at every use, so
        # a changed expectation or language rule does not ask the model again
        keys = {q.id: _digest([model_key, q.id, q.question, prompts[q.id].messages]) for q in answerable}
        cached = json.loads(cache.read_text()).get("answers", {}) if cache.is_file() else {}
        rows = {q.id: cached[keys[q.id]] for q in answerable if keys[q.id] in cached}
        missing = [q for q in answerable if q.id not in rows]
        if missing:
            log.info("the base answers %d written questions (%d reused from %s)", len(missing), len(rows), cache)
            new = answer(missing)
            rows.update(new)
            _atomic_write(cache, json.dumps({"answers": {**cached, **{keys[i]: r for i, r in new.items()}}},
                                            ensure_ascii=False))
        rescore({"rows": list(rows.values())}, tour, answerable)
    else:
        rows = answer(answerable)
    out, kept, quoted, written = [], 0, 0, 0
    for q in questions:
        prepared = prompts[q.id]
        if q.type == "unanswerable":
            target = DONT_KNOW[q.lang]
        else:
            r = rows[q.id]
            quote = reference_answer(prepared.hits, q.lang, list(q.expect), max_chars=200)
            right = (r.get("fact_ok") and r["answer_lang"] in (None, q.lang) and len(r["answer"]) <= 200
                     and not r["answer"].startswith("["))
            if right and r.get("citation_ok"):
                target, kept = r["answer"], kept + 1
            elif right and quote and not _CITATION.search(r["answer"]):
                # right but uncited: the source of the sentence that states it is added
                target, kept = cite(r["answer"], int(_CITATION.findall(quote)[-1])), kept + 1
            elif q.answer and (source := fact_source(prepared.hits, q.lang, q.expect)):
                # the base got it wrong: the answer written with the question, cited with the source that
                # states the fact (a question whose prompt holds no such source is left out)
                target, written = cite(q.answer, source), written + 1
            elif quote and quotes:  # the base got it wrong: the shortest source sentence in the visitor's language
                target, quoted = quote, quoted + 1
            else:
                continue
        out.append(Example(id=f"{tour.id}/written/{q.id}", source=sources[q.id][1], kind="written", lang=q.lang,
                           attraction=q.attractions[0], messages=prepared.messages + [
                               {"role": "assistant", "content": target}], question=q.question,
                           expect=list(q.expect)))
    stats = {"questions": len(questions), "answerable": len(answerable), "base_answers": kept,
             "written_answers": written, "quoted": quoted, "unanswerable": len(questions) - len(answerable),
             "from_train_yaml": sum(sources[q.id][1] == f"train:{tour.id}" for q in questions),
             "left_out_held_out_sources": len(leaky)}
    log.info("written questions of training attractions: %s", stats)
    return out, stats


def fact_source(hits, lang: str, expect) -> int | None:
    """The number of the first source that states one of `expect`, one in the visitor's language first."""
    from .evaluate import contains_fact

    found = [(h.passage.lang != lang, i) for i, h in enumerate(hits, 1) if contains_fact(h.passage.text, tuple(expect))]
    return min(found)[1] if found else None


def _refuses(e: Example) -> bool:
    """Whether the example's target is "I don't know" (by the target: written ones are kind "written")."""
    return e.messages[-1]["content"] in DONT_KNOW.values()


def cap_refusals(written: list[Example], generated: list[Example], share: float | None,
                 total: int | None) -> list[Example]:
    """Generated "I don't know" examples dropped so refusals are at most `share` of the training set.

    The base never refuses (refusal rate 0), so a few refusal targets already teach it; in runs 1-5
    a fifth of the targets were refusals and the tuned model declined answerable questions too
    (false refusals up to 0.14). The written unanswerable questions stay; generated ones go first.
    """
    if share is None:
        return generated
    size = total if total is not None else len(written) + len(generated)
    # (until run 15 the written refusals were counted by kind, which is "written": none counted, so
    # the offline preset's 10 % was 11 % — 21 of 192 — and any smaller share changed nothing)
    room = max(0, int(share * size) - sum(_refuses(e) for e in written))
    out, kept = [], 0
    for e in generated:
        if _refuses(e):
            if kept >= room:
                continue
            kept += 1
        out.append(e)
    return out


def _asks_person(e: Example) -> bool:
    """Whether the question asks for a person: "who designed it?" or "who is the director?"."""
    from .ftdata import ASK
    from .grounding import asked_concepts

    if any(c.name == "person in office" for c in asked_concepts(e.question)):
        return True
    return any(re.fullmatch(re.escape(t).replace(re.escape("{name}"), ".+"), e.question)
               for t in ASK["architect"].get(e.lang, []))


def pair_refusals(written: list[Example], generated: list[Example], pool: list[Example]) -> list[Example]:
    """Each "I don't know" target beside an answered question on the same attraction, in the same language.

    Runs 14 and 16-18 each declined one or two answerable held-out questions, most of them "who?"
    questions ("who is buried there?", "who had the Arc built?"), while the refusal targets include
    "who is the current director of ...?". A refusal with a twin that the sources do answer, of the
    same form where it asks for a person ("who designed ...?"), shows that what decides is whether
    the sources state it, not the form of the question or the attraction. A twin is a generated
    factual example from `pool` (the generated examples before subsampling); it takes the place of a
    generated example of the most crowded kind and language that is not a twin itself.
    """
    chosen = list(generated)
    ids = {e.id for e in chosen}

    def twin_of(r, e):  # an answered factual question on r's attraction, in its language (and form)
        return (e.kind == "factual" and e.attraction == r.attraction and e.lang == r.lang and not _refuses(e)
                and (_asks_person(e) or not _asks_person(r)))

    added = 0
    for r in [e for e in written + generated if _refuses(e) and e.attraction]:
        if any(twin_of(r, e) for e in chosen):
            continue
        twins = [e for e in pool if e.id not in ids and twin_of(r, e)]
        if not twins:
            continue
        counts: dict[tuple, int] = {}
        for e in chosen:
            if not _refuses(e):
                counts[(e.kind, e.lang)] = counts.get((e.kind, e.lang), 0) + 1
        protected = {(e.attraction, e.lang) for e in written + chosen if _refuses(e)}  # keeps the twins
        crowded = [e for e in chosen if not _refuses(e) and counts[(e.kind, e.lang)] == max(counts.values())
                   and not (e.kind == "factual" and (e.attraction, e.lang) in protected)]
        if crowded:  # (when the most crowded group holds only twins, the twin is added: run 19, 4 of 13)
            chosen.remove(crowded[-1])
        chosen.append(twins[0])
        ids.add(twins[0].id)
        added += 1
    log.info("refusal targets paired with answered questions: %d twins added", added)
    return chosen


def distil(llm, rows: list[Example], tour, *, max_tokens: int = 96, progress: bool = True) -> tuple[list[Example], dict]:
    """The base's own answer as the target of a generated example, where that answer is right.

    Training on composed sentences alone moved the model away from how it answers everything else
    (measured in runs 3-5: "Who had the Arc built?" answered with the architect, "since when is the
    Louvre a museum?" with the year building began). Where the base, given the training prompt,
    already answers with the expected fact in a sentence in the visitor's language, with no number
    the prompt lacks and no refusal, its answer is the target (self-distillation); where not, the
    composed answer stays. Measured (run 6): the base gets most facts right on these prompts but
    cites no source, so an answer without a citation is kept with the source the composed answer
    cites (the passage that states the fact) added; one with citations must cite that source. The
    examples that change the model are then the ones where the base was wrong, plus citations.
    """
    from .answer import _CITATION, _numbers, is_refusal
    from .evaluate import answer_language, contains_fact
    from .ftdata import cite

    out, stats = [], {"asked": 0, "kept": 0, "cited": 0}
    for e in tqdm(rows, desc="base answers (distillation)", unit="example", disable=not progress):
        target = e.messages[-1]["content"]
        if not e.expect or e.source != f"tour:{tour.id}" or e.kind not in ("factual", "followup", "switch"):
            out.append(e)
            continue
        stats["asked"] += 1
        prompt = e.messages[:-1]
        answer = " ".join("".join(llm.stream(prompt, max_tokens=max_tokens, temperature=0.0)).split())
        n_sources = len(re.findall(r"^\[(\d+)\] ", prompt[-1]["content"], flags=re.M))
        cited = {int(n) for n in _CITATION.findall(answer)}
        wanted = {int(n) for n in _CITATION.findall(target)}
        known = _numbers(" ".join(m["content"] for m in prompt))
        right = (answer and len(answer) <= 200 and not answer.startswith("[") and not is_refusal(answer)
                 and contains_fact(answer, tuple(e.expect)) and answer_language(answer, tour) == e.lang
                 and _numbers(_CITATION.sub(" ", answer)) <= known and len(wanted) == 1)
        if right and not cited:
            answer, cited = cite(answer, next(iter(wanted))), wanted
            stats["cited"] += 1
        if right and wanted <= cited and all(1 <= n <= n_sources for n in cited):
            stats["kept"] += 1
            e = dataclasses.replace(e, messages=prompt + [{"role": "assistant", "content": answer}])
        out.append(e)
    log.info("generated examples answered by the base: %s", stats)
    return out, stats


def _subsample(rows: list[Example], n: int | None, seed: int) -> list[Example]:
    """At most n examples, taking kinds and languages round-robin so none is crowded out."""
    if n is None or len(rows) <= n:
        return rows
    groups: dict[tuple, list[Example]] = {}
    for e in rows:
        groups.setdefault((e.kind, e.lang), []).append(e)
    rng = random.Random(seed)
    for g in groups.values():
        rng.shuffle(g)
    out, keys = [], sorted(groups)
    while len(out) < n:
        for k in keys:
            if groups[k] and len(out) < n:
                out.append(groups[k].pop())
    rng.shuffle(out)
    return out


def eval_with_llm(guide, tour_id: str, llm, questions, progress: bool, guards: bool | None = None) -> dict:
    """The eval harness with another LLM over the already loaded tours, indexes and embedder
    (`guards`: the answer guards on or off; None keeps the guide's setting)."""
    from .evaluate import evaluate_tour
    from .pipeline import Guide

    config = guide.config if guards is None else guide.config.replace(answer_guards=guards)
    with_llm = Guide(config, guide.tours, guide.indexes, guide.embedder, llm, guide.problems)
    return evaluate_tour(with_llm, tour_id, questions=questions, progress=progress)


def _digest(key) -> str:
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
