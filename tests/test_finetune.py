"""Fine-tuning: data and split, the LoRA loop on a tiny random Qwen2, adapters and their manifests.

A tiny random model built from a config (no weights). The tests that train it (the loop, early
stopping, resuming, save and load, the `finetune` command end to end) are `slow`: each takes
seconds to a minute on two cores. The real 0.5B base is in test_finetune_slow.py.
"""

import dataclasses
import json
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")

from guide.adapters import export_gguf_lora, publish, read_manifest, resolve_adapter  # noqa: E402
from guide.config import load_config  # noqa: E402
from guide.errors import ModelUnavailable  # noqa: E402
from guide.finetune import FinetuneConfig, add_lora, encode, mean_loss, train  # noqa: E402
from guide.ft_base import load_base, tiny_base  # noqa: E402
from guide.ft_curate import cap_refusals, distil, pair_refusals  # noqa: E402
from guide.ft_gate import held_out_questions  # noqa: E402
from guide.ftdata import DONT_KNOW, Example, build_dataset, composed_answer, split_attractions  # noqa: E402


@pytest.fixture(scope="module")
def paris(tmp_path_factory):
    """The Paris tour with weightless models (hashing embedder, extractive answers)."""
    from guide.answer import ExtractiveLLM
    from guide.pipeline import Guide

    config = load_config("tiny", index_dir=tmp_path_factory.mktemp("indexes"))
    guide = Guide.load(config, tours=["paris"], llm=ExtractiveLLM(), progress=False)
    return guide, guide.tour("paris")


@pytest.fixture(scope="module")
def dataset(paris):
    guide, tour = paris
    return build_dataset(guide, tour, seed=0, qa_dir=None)


def test_split_is_by_attraction_deterministic_and_leak_free(paris, dataset):
    guide, tour = paris
    split, data = dataset
    assert split == split_attractions(tour, seed=0)  # same seed, same split
    assert split != split_attractions(tour, seed=1) or split_attractions(tour, seed=2) != split
    groups = [set(split.train), set(split.dev), set(split.test)]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert set().union(*groups) == {a.id for a in tour.attractions}
    for name in ("train", "dev", "test"):
        assert {e.attraction for e in data[name]} <= set(getattr(split, name))
    # no text of a test attraction reaches a training or dev prompt, under any of its names
    test_names = [n for a in split.test for n in tour.attraction(a).all_names() if len(n) > 3]
    for e in data["train"] + data["dev"]:
        text = " ".join(m["content"] for m in e.messages)
        assert not [n for n in test_names if n in text], e.id


def test_examples_are_grounded_cited_and_in_the_visitors_language(dataset):
    split, data = dataset
    rows = data["train"]
    kinds = {e.kind for e in rows}
    assert {"factual", "followup", "switch", "inside", "unanswerable"} <= kinds
    assert {e.lang for e in rows} == {"en", "fr", "de", "es", "zh", "ja"}
    for e in rows:
        answer = e.messages[-1]["content"]
        assert e.messages[-1]["role"] == "assistant"
        if e.kind == "unanswerable":
            assert answer == DONT_KNOW[e.lang]
            continue
        if e.kind == "inside":  # the tour's own words in the visitor's language, citing its facts card
            n = int(answer.rsplit("[", 1)[1].split("]")[0])
            source = next(line for line in e.messages[-2]["content"].splitlines() if line.startswith(f"[{n}]"))
            assert re.sub(r"\s*\[\d+\][.。]?$", "", answer) in source, (e.id, answer)
            continue
        # the answer states the expected fact and cites the numbered source that holds it
        assert any(t in answer for t in e.expect), (e.id, answer)
        n = int(answer.rsplit("[", 1)[1].split("]")[0])
        prompt = e.messages[-2]["content"]
        source = next(line for line in prompt.splitlines() if line.startswith(f"[{n}]"))
        assert any(t in source for t in e.expect)
    # follow-ups carry the earlier turn and say only "it"
    follow = next(e for e in rows if e.kind == "followup" and e.lang == "en")
    assert follow.history and follow.messages[1]["content"] == follow.history[0]
    assert re.search(r"\bit\b", follow.question.lower())


def test_reference_answers_are_one_short_sentence_composed_from_the_fact(paris, dataset):
    guide, tour = paris

    def answer(aid, key, lang, question):
        # the description as well as the facts cards (the facts come in cards of one or two facts)
        hits = guide.search(tour, question, attractions=[aid], lang=lang, k=20)
        return composed_answer(tour.attraction(aid), key, lang, hits), hits

    # a span of years is given whole: "completed" questions need the second year
    text, hits = answer("sacre-coeur", "built", "en", "When was Sacré-Cœur built?")
    assert text.startswith("Sacré-Cœur") and "1875" in text and "1914" in text and "1919" not in text
    n = int(text.rsplit("[", 1)[1].split("]")[0])
    assert "1875" in hits[n - 1].passage.text  # the cited source states it
    # the name as the Chinese source writes it, with the Latin spelling it gives
    text, _ = answer("sacre-coeur", "architect", "zh", "圣心大教堂的建筑师是谁？")
    assert text.startswith("圣心大教堂由") and "阿巴迪（Paul Abadie）" in text and "由由" not in text
    assert text.endswith("]。")
    # the height of a part (the Louvre's glass pyramid) is not the height of the whole
    assert answer("louvre", "height", "en", "How tall is the Louvre?")[0] is None
    # every tour answer is a single sentence (no quoted paragraphs)
    split, data = dataset
    for e in data["train"]:
        if e.kind in ("factual", "followup", "switch"):
            assert len(e.messages[-1]["content"]) < 120, e.messages[-1]["content"]


def test_inside_questions_are_answered_from_the_inside_fact_in_the_visitors_language(paris, dataset):
    from guide.ftdata import inside_answer

    guide, tour = paris
    split, data = dataset
    inside = [e for e in data["train"] if e.kind == "inside"]
    assert {e.lang for e in inside} == set(tour.languages)
    assert not [e for e in data["test"] if e.kind == "inside"]  # held out: the eval set's written ones
    a = tour.attraction("notre-dame")
    hits = guide.search(tour, "Kann man Notre-Dame von innen besichtigen?", attractions=[a.id], lang="de")
    text = inside_answer(a, "de", hits)
    n = int(text.rsplit("[", 1)[1].split("]")[0])
    assert text.startswith("Ja") and hits[n - 1].passage.kind == "facts" and hits[n - 1].passage.lang == "de"
    # a fact written only in English gives no German target
    english_only = dataclasses.replace(a, facts={**a.facts, "inside": a.fact("inside", "en")})
    assert inside_answer(english_only, "de", hits) is None


def test_test_questions_keep_the_written_eval_set(paris, dataset):
    guide, tour = paris
    split, data = dataset
    questions = held_out_questions(split, data, tour, limit=30)
    assert len(questions) == 30
    written = [q for q in questions if "/" not in q.id]
    # held out = never trained on: written questions of the test and dev attractions, generated test ones
    assert written and all(set(q.attractions) <= set(split.test) | set(split.dev) for q in questions)
    assert {a for q in written for a in q.attractions} & set(split.dev)
    assert all(set(q.attractions) <= set(split.test) for q in questions if "/" in q.id)


class _Scripted:
    """An LLM that answers each prompt with the scripted reply for its question (else a refusal)."""

    name = "scripted"

    def __init__(self, replies):
        self.replies = replies

    def stream(self, messages, *, max_tokens, temperature=0.0, stop=None):
        question = next((q for q in self.replies if q in messages[-1]["content"]), None)
        yield self.replies.get(question, "I don't know.")

    def count_tokens(self, text):
        return len(text.split())


def test_distillation_keeps_only_the_bases_right_answers(paris, dataset):
    guide, tour = paris
    split, data = dataset
    rows = [e for e in data["train"] if e.kind == "factual" and e.lang == "en"][:6]
    assert len(rows) == 6
    cite = {e.id: re.findall(r"\[\d+\]", e.messages[-1]["content"])[0] for e in rows}
    right = f"Yes: {rows[0].expect[0]} is the answer {cite[rows[0].id]}."
    replies = {
        rows[0].question: right,  # kept
        rows[1].question: f"According to the sources, the answer to your question is {rows[1].expect[0]}.",  # + source
        rows[2].question: f"{rows[2].expect[0]} [9].",  # a source the prompt does not have
        rows[3].question: f"Es war {rows[3].expect[0]}, ganz sicher und ohne Zweifel {cite[rows[3].id]}.",  # German
        rows[4].question: f"It was 1234567 {cite[rows[4].id]}.",  # the wrong fact, a number no source has
    }  # rows[5]: the base declines
    out, stats = distil(_Scripted(replies), rows, tour, progress=False)
    assert stats == {"asked": 6, "kept": 2, "cited": 1}
    assert out[0].messages[-1]["content"] == right and out[0].messages[:-1] == rows[0].messages[:-1]
    assert out[1].messages[-1]["content"] == \
        f"According to the sources, the answer to your question is {rows[1].expect[0]} {cite[rows[1].id]}."
    assert [e.messages for e in out[2:]] == [e.messages for e in rows[2:]]  # the composed answers stay


def test_refusal_share_is_capped_with_the_written_questions_kept(dataset):
    split, data = dataset
    generated = data["train"]
    # written questions come as kind "written" (teacher_examples); their "I don't know" targets count
    written = [dataclasses.replace(e, kind="written") for e in generated if e.kind == "unanswerable"][:3]
    written.append(dataclasses.replace(next(e for e in generated if e.kind == "factual"), kind="written"))
    capped = cap_refusals(written, generated, 0.1, 60)
    assert sum(e.kind == "unanswerable" for e in capped) == 6 - 3
    assert [e for e in capped if e.kind != "unanswerable"] == [e for e in generated if e.kind != "unanswerable"]
    assert cap_refusals(written, generated, None, 60) == generated


def test_each_refusal_target_gets_an_answered_twin_on_the_same_attraction_and_language(dataset):
    from guide.ft_curate import _asks_person, _refuses, _subsample

    split, data = dataset
    pool = data["train"]

    def has_twin(r):  # the pool holds an answered question that can be its twin
        return any(e.attraction == r.attraction and e.lang == r.lang and e.kind == "factual"
                   and (_asks_person(e) or not _asks_person(r)) for e in pool)

    refusals = [e for e in pool if _refuses(e) and e.attraction and has_twin(e)]
    person = next(e for e in refusals if _asks_person(e))  # "who is the current director of ...?"
    others = [e for e in refusals if not _asks_person(e)][:3]
    # a training set holding these refusals and answerable examples of other attractions only
    rest = _subsample([e for e in pool if not _refuses(e) and e.attraction not in
                       {r.attraction for r in [person, *others]}], 30, 0)
    chosen = [person, *others, *rest]
    paired = pair_refusals([], chosen, pool)
    assert len(chosen) <= len(paired) <= len(chosen) + 4  # twins take the place of others where they can
    assert all(r in paired for r in [person, *others])  # no refusal is dropped
    for r in [person, *others]:
        twins = [e for e in paired if e.attraction == r.attraction and e.lang == r.lang and not _refuses(e)]
        assert len(twins) == 1 and twins[0].kind == "factual" and twins[0].expect
    twin = next(e for e in paired if e.attraction == person.attraction and e.lang == person.lang and e is not person)
    assert _asks_person(twin), twin.question  # "who designed ...?" beside "who is the director?"
    assert pair_refusals([], paired, pool) == paired  # paired already: nothing changes


def test_training_questions_are_answerable_in_their_own_language_and_not_the_eval_set(paris):
    from guide.evaluate import load_eval_set
    from guide.lang import fold

    guide, tour = paris
    questions = load_eval_set(tour.folder / "train.yaml")
    evaluated = {fold(q.question) for q in load_eval_set(tour.folder / "eval.yaml")}
    assert len(questions) >= 100 and len({q.id for q in questions}) == len(questions)
    assert {q.lang for q in questions} == set(tour.languages)
    for q in questions:
        assert q.type == "factual" and not q.history and len(q.attractions) == 1, q.id
        a = tour.attraction(q.attractions[0])
        text = fold(a.descriptions[q.lang])
        assert any(fold(e) in text for e in q.expect), f"{q.id}: {q.expect} not in the {q.lang} description"
        assert fold(q.question) not in evaluated, q.id
    asked = {}
    for q in questions:
        asked.setdefault(q.attractions[0], set()).add(q.lang)
    assert len(asked) >= 10 and all(len(langs) >= 4 for langs in asked.values())


def test_teacher_uses_the_training_questions_of_training_attractions_only_and_caches_answers(paris, tmp_path):
    from guide.ft_curate import teacher_examples

    guide, tour = paris
    split = split_attractions(tour, seed=0)
    cache = tmp_path / "teacher.json"
    rows, stats = teacher_examples(guide, tour, guide.llm, split.train, progress=False, cache=cache, model_key="x")
    assert stats["from_train_yaml"] >= 80 and any(e.source == "train:paris" for e in rows)
    assert {e.attraction for e in rows} <= set(split.train)
    held_out = [n for aid in split.test + split.dev for n in tour.attraction(aid).all_names() if len(n) > 3]
    for e in rows:  # no text of a held-out attraction reaches these prompts
        text = " ".join(m["content"] for m in e.messages)
        assert not [n for n in held_out if n in text], e.id
        assert e.messages[-1]["content"], e.id

    class Refuses:  # the cached answers are used: the model is not asked again
        def stream(self, *args, **kwargs):
            raise AssertionError("asked again")

    again, _ = teacher_examples(guide, tour, Refuses(), split.train, progress=False, cache=cache, model_key="x")
    assert [e.messages for e in again] == [e.messages for e in rows]
    # without quotes, a question the base got wrong is left out rather than answered by a source sentence
    own, own_stats = teacher_examples(guide, tour, Refuses(), split.train, progress=False, cache=cache,
                                      model_key="x", quotes=False)
    assert own_stats["quoted"] == 0 and len(own) == len(rows) - stats["quoted"]


def test_written_answers_replace_the_bases_wrong_ones_cited_with_the_source_that_states_the_fact(paris, tmp_path):
    from guide.evaluate import answer_language, contains_fact, load_eval_set
    from guide.ft_curate import teacher_examples
    from guide.ftdata import cite

    guide, tour = paris
    split = split_attractions(tour, seed=0)
    written = {q.id: q for q in load_eval_set(tour.folder / "train.yaml") if q.answer}
    assert len(written) >= 40
    for q in written.values():  # each states its fact, in the question's language
        assert contains_fact(q.answer, q.expect) and answer_language(q.answer, tour) in (None, q.lang), q.id

    class Wrong(_Scripted):  # a base that gets every question wrong
        def __init__(self):
            super().__init__({})
            self.asked = 0

        def stream(self, messages, **kwargs):
            self.asked += 1
            yield "It was 1234567 [1]."

    cache = tmp_path / "teacher.json"
    rows, stats = teacher_examples(guide, tour, Wrong(), split.train, progress=False, cache=cache, model_key="x",
                                   quotes=False)
    targets = {e.id.rsplit("/", 1)[1]: e for e in rows if e.messages[-1]["content"] not in DONT_KNOW.values()}
    assert stats["base_answers"] == 0 and stats["written_answers"] == len(targets) >= 20
    assert set(targets) <= set(written)
    for qid, e in targets.items():
        answer = e.messages[-1]["content"]
        n = int(re.findall(r"\[(\d+)\]", answer)[-1])
        assert answer == cite(written[qid].answer, n)
        prompt = "\n".join(m["content"] for m in e.messages[:-1])  # the cited source states the fact
        assert contains_fact(re.findall(rf"^\[{n}\] (.*)$", prompt, re.M)[-1], written[qid].expect), qid
    # each answer is cached on its own: a question the cache lacks is the only one asked
    cached = json.loads(cache.read_text())
    dropped = next(iter(cached["answers"]))
    del cached["answers"][dropped]
    cache.write_text(json.dumps(cached))
    base = Wrong()
    again, _ = teacher_examples(guide, tour, base, split.train, progress=False, cache=cache, model_key="x", quotes=False)
    assert base.asked == 1 and [e.messages for e in again] == [e.messages for e in rows]


def test_a_written_answer_must_state_an_expected_fact(tmp_path):
    import yaml

    from guide.evaluate import load_eval_set
    from guide.tours import TourError

    path = tmp_path / "train.yaml"
    q = {"id": "x", "lang": "en", "type": "factual", "question": "When?", "attraction": "a", "expect": ["1889"]}
    path.write_text(yaml.safe_dump({"questions": [{**q, "answer": "It opened in 1889."}]}))
    assert load_eval_set(path)[0].answer == "It opened in 1889."
    path.write_text(yaml.safe_dump({"questions": [{**q, "answer": "It opened in 1898."}]}))
    with pytest.raises(TourError, match="answer"):
        load_eval_set(path)


def test_served_check_scores_the_guarded_guide_and_gates_publishing(paris, tmp_path):
    from guide.ft_curate import written_questions
    from guide.ft_gate import served_check, verdict

    guide, tour = paris
    split = split_attractions(tour, seed=0)
    questions = [q for q in written_questions(tour, split.test + split.dev) if q.type != "unanswerable"]
    assert len(questions) >= 10
    base = _Scripted({q.question: f"{q.expect[0]} [1]." for q in questions})
    # the tuned model states each fact with a number no source gives: the unguarded eval counts it
    # right, the guide as served withdraws it
    tuned = _Scripted({q.question: f"{q.expect[0]}, 98765 [1]." for q in questions})
    cache = tmp_path / "served-before.json"
    served = served_check(guide, tour, split.test + split.dev, tuned, lambda: base, cache=cache, model_key="x",
                          progress=False)
    before, after = served["before"]["summary"], served["after"]["summary"]
    assert before["fact_accuracy"] >= 0.7 and after["fact_accuracy"] == 0.0 and after["false_refusals"] == 1.0

    def fails():
        raise AssertionError("the base's served answers are cached")

    again = served_check(guide, tour, split.test + split.dev, tuned, fails, cache=cache, model_key="x", progress=False)
    assert again["before"]["summary"] == before
    # stored answers are scored with today's expectations: one changed, its answer is no longer right
    import dataclasses

    from guide.evaluate import rescore

    changed = [dataclasses.replace(q, expect=("no such fact",)) if i == 0 else q
               for i, q in enumerate(written_questions(tour, split.test + split.dev))]
    rows = rescore(again["before"], tour, changed)["rows"]
    assert [r["fact_ok"] for r in rows if r["id"] == changed[0].id] == [False]

    unguarded = {"summary": {"fact_accuracy": 0.8, "language_match": 0.9, "refusals": 0.5, "false_refusals": 0.0},
                 "rows": []}
    better = {"summary": {"fact_accuracy": 0.9, "language_match": 1.0, "refusals": 0.8, "false_refusals": 0.0},
              "rows": []}
    report = {"before": {"answers": unguarded}, "after": {"answers": better}}
    assert verdict(report)["better"]
    # declining answerable questions is getting worse at refusing, however many facts are right
    declines = {"summary": {**better["summary"], "false_refusals": 0.1}, "rows": []}
    assert not verdict({"before": {"answers": unguarded}, "after": {"answers": declines}})["better"]
    report["served"] = served
    assert verdict(report) | {"better": False, "served": False} == verdict(report)
    report["served"] = {"before": served["before"], "after": served["before"]}  # served equal: not worse
    assert verdict(report)["better"]


def test_the_names_imported_from_guide_finetune_are_the_split_modules_own():
    import guide.finetune as ft
    from guide import ft_base, ft_curate, ft_gate

    # cli.py and scripts/heldout-eval.py import these from guide.finetune
    for module, names in ((ft_curate, ["_subsample", "eval_with_llm", "written_questions", "teacher_examples"]),
                          (ft_gate, ["compare_backends", "format_comparison", "format_report", "served_check",
                                     "verdict", "held_out_questions"]),
                          (ft_base, ["base_identity", "load_base", "tiny_base"])):
        for name in names:
            assert getattr(ft, name) is getattr(module, name), name
    assert {"PRESETS", "FinetuneConfig", "run_finetune"} <= set(dir(ft))


def _chat(q, a):
    return [{"role": "system", "content": "You are a guide."}, {"role": "user", "content": q},
            {"role": "assistant", "content": a}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    texts = ["When was the tower built? It was built in 1889 [1].", "Wie hoch ist er? 330 m [2].",
             "I don't know.", "You are a guide."] * 5
    return tiny_base(tmp_path_factory.mktemp("tiny") / "base", texts, seed=0)


def _examples(pairs):
    return [Example(id=str(i), source="test", kind="factual", lang="en", attraction=None, messages=_chat(q, a))
            for i, (q, a) in enumerate(pairs)]


def _fresh(tiny, cfg, seed=0):
    from guide.ft_base import base_identity

    tok, model = load_base(base_identity(str(tiny), cfg_cache()))
    torch.manual_seed(seed)
    return tok, add_lora(model, cfg)


def cfg_cache():
    from pathlib import Path

    return Path("/nonexistent")


CFG = FinetuneConfig(base="tiny", max_steps=40, grad_accum=1, eval_every=5, patience=100, lr=1e-2, warmup_steps=2,
                     lora_r=8, lora_alpha=16, lora_dropout=0.0, dtype="float32", max_length=4096)


def test_encode_masks_everything_but_the_answer(tiny):
    tok, _ = load_base({"path": str(tiny), "gguf_file": None})
    ids, labels = encode(tok, _chat("When?", "In 1889 [1]."), 4096)
    answer = [t for t, lab in zip(ids, labels) if lab != -100]
    assert tok.decode(answer).startswith("In 1889 [1].<|im_end|>")
    assert labels[0] == -100 and len(ids) == len(labels)
    assert encode(tok, _chat("When?", "In 1889 [1]."), 5) is None  # too long: dropped, not cut


@pytest.mark.slow
def test_loop_drives_loss_down(tiny, tmp_path):
    rows = _examples([("When was the tower built?", "It was built in 1889 [1]."),
                      ("Wie hoch ist er?", "330 m [2]."), ("Wi-Fi password?", "I don't know.")])
    tok, model = _fresh(tiny, CFG)
    enc = [encode(tok, r.messages, 4096) for r in rows]
    before = mean_loss(model, enc)
    result = train(model, tok, rows, rows, CFG, tmp_path, progress=False)
    after = mean_loss(model, enc)
    assert result.steps == CFG.max_steps and result.stopped == "max_steps"
    assert after < 0.5 * before, (before, after)
    assert (tmp_path / "best" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "checkpoint" / "state.json").is_file()


@pytest.mark.slow
def test_early_stopping_fires_when_dev_loss_stops_improving(tiny, tmp_path):
    train_rows = _examples([("When was the tower built?", "It was built in 1889 [1].")])
    dev_rows = _examples([("When was the tower built?", "I don't know.")])  # learning train makes dev worse
    cfg = CFG.replace(patience=2, eval_every=2, max_steps=60)
    tok, model = _fresh(tiny, cfg)
    result = train(model, tok, train_rows, dev_rows, cfg, tmp_path, progress=False)
    assert result.stopped == "early_stopping"
    assert result.steps < cfg.max_steps
    assert result.best_step < result.steps


def _lora_state(model):
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint_exactly(tiny, tmp_path):
    rows = _examples([("When was the tower built?", "It was built in 1889 [1]."), ("Wie hoch ist er?", "330 m [2].")])
    cfg = CFG.replace(max_steps=12, eval_every=3)
    tok, straight = _fresh(tiny, cfg)
    train(straight, tok, rows, rows, cfg, tmp_path / "a", progress=False)

    tok, first = _fresh(tiny, cfg)  # interrupted after its first step (a time budget of zero)
    part = train(first, tok, rows, rows, cfg.replace(time_budget_s=0.0), tmp_path / "b", progress=False)
    assert part.stopped == "time_budget" and part.steps == 1
    tok, again = _fresh(tiny, cfg, seed=123)  # a new process: other initial weights, restored from the checkpoint
    done = train(again, tok, rows, rows, cfg, tmp_path / "b", resume=True, progress=False)
    assert done.steps == 12
    a, b = _lora_state(straight), _lora_state(again)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


@pytest.mark.slow
def test_save_then_load_gives_identical_outputs(tiny, tmp_path):
    from peft import PeftModel

    rows = _examples([("When was the tower built?", "It was built in 1889 [1].")])
    tok, model = _fresh(tiny, CFG.replace(max_steps=10))
    train(model, tok, rows, rows, CFG.replace(max_steps=10), tmp_path / "run", progress=False)
    model.eval()
    model.save_pretrained(tmp_path / "adapter")
    _, base = load_base({"path": str(tiny), "gguf_file": None})
    loaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    ids = torch.tensor([encode(tok, rows[0].messages, 4096)[0]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, loaded(input_ids=ids).logits, atol=1e-6)
        prompt = tok.apply_chat_template(rows[0].messages[:-1], add_generation_prompt=True, return_tensors="pt",
                                         return_dict=True)
        kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
        assert torch.equal(model.generate(**prompt, **kw), loaded.generate(**prompt, **kw))


def test_gguf_lora_export_names_shapes_and_alpha(tiny, tmp_path):
    import gguf
    from peft import get_peft_model_state_dict

    tok, model = _fresh(tiny, CFG)
    n = export_gguf_lora(get_peft_model_state_dict(model), tmp_path / "a.gguf", alpha=16)
    reader = gguf.GGUFReader(str(tmp_path / "a.gguf"))
    names = {t.name: t for t in reader.tensors}
    assert n == len(names) == 2 * 7 * 2  # A and B, seven projections, two layers
    q_a, q_b = names["blk.0.attn_q.weight.lora_a"], names["blk.0.attn_q.weight.lora_b"]
    # ggml order (ne0 first): A is (in, r), B is (r, out), so llama.cpp checks in/out against the base
    assert list(q_a.shape) == [64, 8] and list(q_b.shape) == [8, 64]
    assert list(names["blk.1.ffn_down.weight.lora_a"].shape) == [128, 8]
    fields = reader.fields
    assert bytes(fields["general.type"].parts[-1]).decode() == "adapter"
    assert bytes(fields["adapter.type"].parts[-1]).decode() == "lora"
    assert float(fields["adapter.lora.alpha"].parts[-1][0]) == 16.0


def _manifest(folder, sha):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"base": {"name": "qwen2.5-0.5b", "sha256": sha},
                                                      "gguf": "adapter.gguf", "prompt": {"example": False}}))
    return folder


def test_wrong_base_adapter_is_refused_with_a_clear_message(tmp_path):
    right, wrong = "a" * 64, "b" * 64
    folder = _manifest(tmp_path / "adapter", wrong)
    with pytest.raises(ModelUnavailable, match="was trained on qwen2.5-0.5b .*not on qwen2.5-0.5b"):
        resolve_adapter(str(folder), base_name="qwen2.5-0.5b", base_sha256=right)
    # published for another base: skipped (served without), not fatal
    publish(folder, "qwen2.5-0.5b", root=tmp_path / "adapters")
    assert resolve_adapter("auto", base_name="qwen2.5-0.5b", base_sha256=right, root=tmp_path / "adapters") == (None, None)
    # the right base: used
    _manifest(tmp_path / "good", right)
    publish(tmp_path / "good", "qwen2.5-0.5b", root=tmp_path / "adapters")
    found, manifest = resolve_adapter("auto", base_name="qwen2.5-0.5b", base_sha256=right, root=tmp_path / "adapters")
    assert found == tmp_path / "adapters" / "qwen2.5-0.5b" and manifest["base"]["sha256"] == right
    assert resolve_adapter("none", base_name="qwen2.5-0.5b", base_sha256=right) == (None, None)
    with pytest.raises(ModelUnavailable, match="not a usable adapter"):
        read_manifest(tmp_path / "nothing")


@pytest.mark.slow
def test_finetune_command_runs_the_tiny_preset_end_to_end(tmp_path, monkeypatch):
    from guide.cli import main

    monkeypatch.setenv("GUIDE_INDEX_DIR", str(tmp_path / "indexes"))
    run = tmp_path / "run"
    assert main(["--profile", "tiny", "finetune", "--preset", "tiny", "--run-dir", str(run), "--max-steps", "6"]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["training"]["steps"] <= 6
    assert report["after"]["test_loss"] > 0 and (run / "report.md").is_file()
    assert (run / "data" / "train.jsonl").is_file() and (run / "adapter" / "adapter.gguf").is_file()
    manifest = read_manifest(run / "adapter")
    assert manifest["base"]["sha256"] and manifest["data_hash"] == report["data_hash"]


@pytest.mark.slow
def test_a_resumed_run_trains_on_its_own_saved_data_not_a_rebuilt_set(tmp_path, monkeypatch):
    from guide.cli import main
    from guide.ftdata import data_hash, load_jsonl, save_jsonl

    monkeypatch.setenv("GUIDE_INDEX_DIR", str(tmp_path / "indexes"))
    run = tmp_path / "run"
    args = ["--profile", "tiny", "finetune", "--preset", "tiny"]
    assert main(args + ["--run-dir", str(run), "--max-steps", "3"]) == 0
    # the saved training set is what the checkpoint saw; a rebuild would bring back the dropped example
    train_file = run / "data" / "train.jsonl"
    kept = load_jsonl(train_file)[:-1]
    save_jsonl(kept, train_file)
    data = {name: load_jsonl(run / "data" / f"{name}.jsonl") for name in ("train", "dev", "test")}
    assert main(args + ["--resume", str(run), "--max-steps", "5"]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["training"]["steps"] == 5
    assert report["examples"]["train"] == len(kept)
    assert report["data_hash"] == data_hash(data) == read_manifest(run / "adapter")["data_hash"]


def test_reading_examples_from_xquad_cite_the_paragraph_with_the_answer(dev_dir):
    import random

    from guide.ftdata_sets import xquad_examples

    path = dev_dir / "texts" / "xquad_place_articles_12langs.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    rows = xquad_examples(path, ["en", "de", "zh", "ja"], 5, random.Random(0))
    assert {e.lang for e in rows} == {"en", "de", "zh"}  # XQuAD has no Japanese
    cited = set()
    for e in rows:
        answer = e.messages[-1]["content"]
        n = int(re.findall(r"\[(\d+)\]", answer)[-1])
        cited.add(n)
        source = next(line for line in e.messages[-2]["content"].splitlines() if line.startswith(f"[{n}]"))
        assert e.expect[0] in answer and e.expect[0] in source
    assert len(cited) > 1  # the paragraph with the answer is not always the first
