"""The dev dialogue sets (../shared/data/dev/qa), converted to the fine-tuning data's chat format.

SGD (Travel_1) and CrossWOZ answers grounded in the system's acts, XQuAD paragraphs about places,
and JMultiWOZ questions about other places (answered "I don't know"). `dialogue_set_examples`
takes those present; `ftdata.build_dataset` puts them in the train and dev splits.
"""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path

from .ftdata import DONT_KNOW, Example, _sentences, cite
from .retrieval import Hit
from .tours import Passage, Tour

__all__ = ["sgd_examples", "crosswoz_examples", "jmultiwoz_examples", "xquad_examples", "dialogue_set_examples"]

log = logging.getLogger(__name__)


def _hit(title: str, text: str, lang: str, n: int = 0) -> Hit:
    p = Passage(id=f"dialogue/{lang}/{n}", tour="dialogue", attraction=title, lang=lang, kind="facts", title=title,
                text=text, source="dialogue set")
    return Hit(passage=p, score=1.0, dense=1.0, rank=n + 1)


def _numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+", text))


def _grounded(answer: str, sources: str, question: str) -> bool:
    """Every number in the answer comes from the sources or the question.

    Stricter than answer.unsupported_claims, which lets single digits pass in a visitor's answer
    ("3 levels"): a training target with an invented "2 pm" would teach inventing.
    """
    return _numbers(answer) <= (_numbers(sources) | _numbers(question))


def _history(turns: list[tuple[str, str]], keep: int = 4) -> list[dict]:
    msgs = [{"role": role, "content": text} for role, text in turns[-keep:]]
    while msgs and msgs[0]["role"] != "user":
        msgs.pop(0)
    return msgs


def _messages(question: str, lang: str, hits: list[Hit], city: str, history: list[dict]) -> list[dict]:
    from .answer import build_messages

    return build_messages(question, lang, hits, tour_title=city, history=history, example=False)


def sgd_examples(path: Path, limit: int, rng: random.Random) -> list[Example]:
    """Schema-Guided Dialogue, Travel_1: the system's offers and informs become the source passage."""
    out = []
    lines = path.read_text(encoding="utf-8").splitlines()
    rng.shuffle(lines)
    for line in lines:
        if len(out) >= limit:
            break
        d = json.loads(line)
        turns: list[tuple[str, str]] = []
        city = "this city"
        for i, t in enumerate(d["turns"]):
            role = "user" if t["speaker"] == "USER" else "assistant"
            facts, title = [], None
            for f in t.get("frames") or []:
                for act in f.get("actions") or []:
                    if act["slot"] == "location" and act.get("values"):
                        city = act["values"][0]
                    if role == "assistant" and act["act"] in ("INFORM", "OFFER") and act.get("values"):
                        if act["slot"] == "attraction_name":
                            title = act["values"][0]
                        facts.append(f"{act['slot'].replace('_', ' ')}: {', '.join(act['values'])}")
            if role == "assistant" and facts and turns and turns[-1][0] == "user" and title:
                question, answer = turns[-1][1], t["utterance"].strip()
                source = "; ".join(facts)
                if _grounded(answer, source, question) and len(answer) < 300:
                    hits = [_hit(title, source, "en")]
                    msgs = _messages(question, "en", hits, city, _history(turns[:-1]))
                    msgs.append({"role": "assistant", "content": cite(answer, 1)})
                    out.append(Example(id=f"sgd/{d['dialogue_id']}/{i}", source="sgd", kind="dialogue", lang="en",
                                       attraction=None, messages=msgs, question=question))
                    break  # one example per dialogue: more variety for the same budget
            turns.append((role, t["utterance"].strip()))
    return out


def crosswoz_examples(path: Path, limit: int, rng: random.Random) -> list[Example]:
    """CrossWOZ (Chinese): the system's Inform acts about an attraction become the source passage."""
    out = []
    lines = path.read_text(encoding="utf-8").splitlines()
    rng.shuffle(lines)
    for line in lines:
        if len(out) >= limit:
            break
        d = json.loads(line)
        turns: list[tuple[str, str]] = []
        for i, m in enumerate(d["messages"]):
            role = "user" if m["role"] == "usr" else "assistant"
            acts = [a for a in m.get("dialog_act") or [] if a[0] == "Inform" and a[1] == "景点"]
            if role == "assistant" and acts and turns and turns[-1][0] == "user":
                names = [a[3] for a in acts if a[2] == "名称"]
                title = names[0] if names else "景点"
                source = "；".join(f"{a[2]}：{a[3]}" for a in acts if a[3] not in ("", "none"))
                question, answer = turns[-1][1], m["content"].strip()
                if source and _grounded(answer, source, question) and len(answer) < 200:
                    hits = [_hit(title, source, "zh")]
                    msgs = _messages(question, "zh", hits, "北京", _history(turns[:-1]))
                    msgs.append({"role": "assistant", "content": cite(answer, 1)})
                    out.append(Example(id=f"crosswoz/{d['id']}/{i}", source="crosswoz", kind="dialogue", lang="zh",
                                       attraction=None, messages=msgs, question=question))
                    break
            turns.append((role, m["content"].strip()))
    return out


def jmultiwoz_examples(path: Path, limit: int, rng: random.Random, guide, tour: Tour,
                       attractions: list[str]) -> list[Example]:
    """JMultiWOZ (Japanese): real travellers' questions about other places, asked on this tour.

    The set has no database results, so its answers cannot be grounded; its questions can: asked of
    a guide whose sources are about this tour, the right answer is "I don't know".
    """
    out = []
    lines = path.read_text(encoding="utf-8").splitlines()
    rng.shuffle(lines)
    for line in lines:
        if len(out) >= limit:
            break
        d = json.loads(line)
        users = [t["content"].strip() for t in d["turns"] if t["role"] == "user"]
        questions = [u for u in users if re.search(r"(ですか|ますか|でしょうか)[？?]?$", u) and 8 <= len(u) <= 80]
        if not questions:
            continue
        question = rng.choice(questions)
        hits = guide.search(tour, question, attractions=attractions, lang="ja")
        msgs = _messages(question, "ja", hits, tour.title("ja"), [])
        msgs.append({"role": "assistant", "content": DONT_KNOW["ja"]})
        out.append(Example(id=f"jmultiwoz/{d['dialogue_id']}", source="jmultiwoz", kind="unanswerable", lang="ja",
                           attraction=None, messages=msgs, question=question))
    return out


def xquad_examples(path: Path, langs: list[str], limit: int, rng: random.Random) -> list[Example]:
    """XQuAD paragraphs about places: a question, its paragraph among two others, the answering sentence.

    Broadens what the model learns to look up beyond the tour's year / height / architect questions,
    in the tour's languages that XQuAD has (en, de, es, zh here).
    """
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    out = []
    for lang in langs:
        paras = [r for r in rows if r["lang"] == lang]
        items = [(r, qa) for r in paras for qa in r["qas"]]
        rng.shuffle(items)
        taken = 0
        for r, qa in items:
            if taken >= limit:
                break
            answer = qa["answers"][0]["text"]
            target = [s for s in _sentences(r["context"]) if answer in s and len(s) <= 180]
            if not target:
                continue
            others = [o for o in paras if o is not r and o["article"] == r["article"]] or [o for o in paras if o is not r]
            chosen = [r] + rng.sample(others, k=min(2, len(others)))
            rng.shuffle(chosen)
            title = r["article"].replace("_", " ")
            hits = [_hit(o["article"].replace("_", " "), o["context"], lang, i) for i, o in enumerate(chosen)]
            n = chosen.index(r) + 1
            msgs = _messages(qa["question"], lang, hits, title.split(" (")[0], [])
            msgs.append({"role": "assistant", "content": cite(min(target, key=len), n)})
            out.append(Example(id=f"xquad/{lang}/{qa['id']}", source="xquad", kind="reading", lang=lang,
                               attraction=None, messages=msgs, question=qa["question"], expect=[answer]))
            taken += 1
    return out


def dialogue_set_examples(qa_dir: Path | None, *, guide, tour: Tour, attractions: list[str], per_set: int,
                          seed: int = 0) -> list[Example]:
    """Examples from the dev dialogue sets that are present (none when the folder is absent)."""
    if qa_dir is None or not Path(qa_dir).is_dir() or per_set <= 0:
        if qa_dir is not None:
            log.warning("no dialogue sets at %s; training on the tour alone", qa_dir)
        return []
    qa_dir = Path(qa_dir)
    out: list[Example] = []
    if (qa_dir / "sgd_travel_train.jsonl").is_file():
        out += sgd_examples(qa_dir / "sgd_travel_train.jsonl", per_set, random.Random(seed))
    if (qa_dir / "crosswoz_val_messages.jsonl").is_file():
        out += crosswoz_examples(qa_dir / "crosswoz_val_messages.jsonl", per_set, random.Random(seed))
    xquad = qa_dir.parent / "texts" / "xquad_place_articles_12langs.jsonl"
    if xquad.is_file():
        out += xquad_examples(xquad, tour.languages, per_set // 2, random.Random(seed))
    if (qa_dir / "jmultiwoz_tc_dialogues_dev.jsonl").is_file():
        out += jmultiwoz_examples(qa_dir / "jmultiwoz_tc_dialogues_dev.jsonl", per_set // 2, random.Random(seed),
                                  guide, tour, attractions)
    return out
