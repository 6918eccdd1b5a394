"""Fine-tuning data: chat examples built from the tours and the dev dialogue sets, split by attraction.

Every tour example is made with the serving path's own prompt builder (`pipeline.prepare_prompt`):
the question is resolved in a dialogue, passages are retrieved, and the messages are exactly what
the model will see when it serves. The reference answer is one short sentence composed from the
asked fact in the visitor's language ("Sacré-Cœur was built between 1875 and 1914 [1]."), cited
with the source that states it — so the model learns to find the fact, state it briefly, cite and
stay in the visitor's language. (Quoting whole source sentences was measured worse: the tuned
model learned to quote a sentence, often the wrong one; see README, Fine-tuning.)
Questions whose kind of information the sources lack become "I don't know" in that language.

Splits are by attraction: a test attraction's texts never appear in a training example.
The phrase tables are in ftdata_phrases, the dev dialogue sets' converters in ftdata_sets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .dialogue import DialogueState
from .ftdata_phrases import _AND, ASK, ASK_BACK, ASK_INSIDE, COMPOSE, DONT_KNOW, UNANSWERABLE
from .grounding import missing_concepts
from .pipeline import prepare_prompt
from .retrieval import Hit
from .tours import Tour

__all__ = ["Example", "Split", "split_attractions", "tour_examples", "build_dataset", "dataset_stats", "save_jsonl",
           "load_jsonl", "DONT_KNOW"]

log = logging.getLogger(__name__)


def inside_answer(attraction, lang: str, hits: list[Hit]) -> str | None:
    """The attraction's `inside` fact in `lang`, cited with its facts card; None when the tour has no
    text for it in `lang` or the card was not retrieved."""
    value = attraction.facts.get("inside")
    if not isinstance(value, dict) or not value.get(lang):
        return None
    text = value[lang].strip()
    n = next((i for i, h in enumerate(hits, 1) if h.passage.attraction == attraction.id
              and h.passage.kind == "facts" and h.passage.lang == lang and text in h.passage.text), None)
    if n is None:
        return None
    if not re.search(r"[.!?。！？]$", text):
        text += "。" if _is_cjk(text) else "."
    return cite(text, n)


_SENTENCE = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])|\n+")
_YEAR = re.compile(r"\b(1\d{3}|20\d{2})\b")
_METRES = re.compile(r"(\d+(?:[.,]\d+)?)\s*m\b")
_NAME = re.compile(r"\b([A-ZÀ-Ý][a-zà-ÿ]+(?:[- ][A-ZÀ-Ý][a-zà-ÿ]+)*)")
_NOT_NAMES = {"Begun", "Bishop", "Built", "Designed", "Restored", "Palace", "Church", "The", "Yes", "King",
              "Emperor", "Queen", "Pope", "City", "Saint", "Museum", "Gothic", "Roman", "French", "Italian"}
_GIVEN_NAMES = {"Louis", "Jean", "Pierre", "Charles", "Henri", "Marie", "Philippe", "François", "Jacques"}


@dataclass
class Example:
    id: str
    source: str  # "tour:<id>" or the dialogue set's name
    kind: str  # factual | followup | switch | inside | unanswerable | dialogue | reading
    lang: str
    attraction: str | None  # what the split is by (None for dialogue sets)
    messages: list[dict]  # chat messages; the last one (assistant) is the target
    question: str = ""
    history: list[str] = field(default_factory=list)  # earlier visitor messages, for the eval harness
    expect: list[str] = field(default_factory=list)  # the fact an answer must contain

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Split:
    train: tuple[str, ...]
    dev: tuple[str, ...]
    test: tuple[str, ...]

    def of(self, attraction: str | None) -> str | None:
        for name in ("train", "dev", "test"):
            if attraction in getattr(self, name):
                return name
        return None


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def split_attractions(tour: Tour, *, seed: int = 0, dev: int = 2, test: int = 3) -> Split:
    """A deterministic split of the tour's attractions (by a seeded hash, not by file order)."""
    ids = sorted((a.id for a in tour.attractions), key=lambda i: _rank(seed, i))
    if len(ids) < dev + test + 1:
        raise ValueError(f"tour {tour.id} has {len(ids)} attractions; a split needs at least {dev + test + 1}")
    return Split(train=tuple(sorted(ids[dev + test:])), dev=tuple(sorted(ids[test:test + dev])),
                 test=tuple(sorted(ids[:test])))


def fact_tokens(key: str, value: str) -> list[str]:
    """The parts of a fact an answer must state: years, metres, surnames."""
    value = str(value)
    if key == "built":
        return _YEAR.findall(value)[:1]
    if key == "height":
        return [m.group(1) for m in _METRES.finditer(value)][:1]
    if key == "architect":
        names = [n for n in _NAME.findall(value) if n.split()[0] not in _NOT_NAMES]
        return [n.split()[-1] for n in names if n.split()[-1] not in _GIVEN_NAMES][:3]
    return []


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]


def cite(sentence: str, n: int) -> str:
    """'It is 330 m tall.' -> 'It is 330 m tall [2].' (before the closing punctuation, CJK included)."""
    sentence = sentence.strip()
    m = re.search(r"[.!?。！？]+$", sentence)
    if m:
        return f"{sentence[:m.start()]}{'' if _is_cjk(sentence) else ' '}[{n}]{m.group()}"
    return f"{sentence} [{n}]"


def _is_cjk(text: str) -> bool:
    return bool(re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", text))


def reference_answer(hits: list[Hit], lang: str, tokens: list[str], max_chars: int = 260) -> str | None:
    """The shortest source sentence in `lang` that states one of `tokens`, cited; None if no source has it."""
    best = None
    for i, h in enumerate(hits, 1):
        if h.passage.lang != lang or h.passage.kind != "description":
            continue
        for s in _sentences(h.passage.text):
            if any(t in s for t in tokens) and len(s) <= max_chars and (best is None or len(s) < len(best[0])):
                best = (s, i)
    return cite(*best) if best else None


_CJK_NAME = re.compile(r"([\u30a0-\u30ff\u4e00-\u9fff·・＝]+)[（(]([^）)]+)[）)]")
_ZH_LEADING = "由是为的和与及在被请"


def _first_clause(value: str) -> str:
    """'1875–1914; consecrated 1919' -> '1875–1914'; parentheses dropped."""
    return re.sub(r"\([^)]*\)", "", str(value)).split(";")[0].strip()


def _full_names(value: str) -> list[str]:
    """Full names (given name and surname) in the first clause of an architect fact."""
    names = [n for n in _NAME.findall(_first_clause(value)) if n.split()[0] not in _NOT_NAMES]
    return [n for n in names if len(re.split(r"[ -]", n)) >= 2]


def _name_in(text: str, latin: str, lang: str) -> str:
    """The name as the source in `lang` writes it: '保罗·阿巴迪（Paul Abadie）' where a text has both."""
    if lang in ("zh", "ja"):
        for m in _CJK_NAME.finditer(text):
            if latin in m.group(2):
                local = m.group(1).lstrip(_ZH_LEADING) if lang == "zh" else re.sub(r"^[^\u30a0-\u30ff]+", "", m.group(1))
                return f"{local}（{m.group(2)}）" if local else latin
    return latin


def composed_answer(attraction, key: str, lang: str, hits: list[Hit]) -> str | None:
    """A short answer stating the fact `key`, cited with the source that states it; None if none does.

    The source is the passage in the visitor's language whose text holds the fact (a description
    before the facts card), so the citation is always valid and the answer is grounded.
    """
    if lang not in COMPOSE.get(key, {}) or key not in attraction.facts:
        return None
    value = str(attraction.facts[key])
    tokens = fact_tokens(key, value)
    ranked = sorted(enumerate(hits, 1), key=lambda ih: (ih[1].passage.lang != lang, ih[1].passage.kind != "description"))
    source = next(((i, h) for i, h in ranked if h.passage.attraction == attraction.id
                   and any(t in h.passage.text for t in tokens)), None)
    if not tokens or source is None:
        return None
    n, hit = source
    evidence = " ".join(h.passage.text for h in hits if h.passage.attraction == attraction.id)
    templates = COMPOSE[key][lang]
    name = attraction.name(lang)
    if key == "built":
        years = [y for y in _YEAR.findall(_first_clause(value)) if y in evidence]
        if not years or years[0] != tokens[0]:
            return None
        text = templates[0].format(name=name, a=years[0]) if len(years) == 1 else \
            templates[1].format(name=name, a=years[0], b=years[-1])
    elif key == "height":
        if re.match(r"^\D*[A-Za-z]", _first_clause(value).replace("about", "")):
            return None  # "Glass pyramid 21.6 m": the height of a part, not of the whole
        h = tokens[0]
        if lang in ("fr", "de", "es", "it") and h.replace(".", ",") in hit.passage.text:
            h = h.replace(".", ",")
        text = templates[0].format(name=name, h=h)
    else:
        names = [n_ for n_ in _full_names(value) if n_.split()[-1] in evidence]
        if not names:
            return None
        names = [_name_in(hit.passage.text, n_, lang) for n_ in names[:3]]
        who = names[0] if len(names) == 1 else (", " if lang not in ("zh", "ja") else "、").join(names[:-1]) \
            + _AND[lang] + names[-1]
        text = templates[0].format(name=name, who=who)
    return cite(text[0].upper() + text[1:], n)


def _shuffle_sources(prepared, rng: random.Random):
    """The same prompt with its numbered sources in another order (a copy; `prepared` is unchanged).

    Retrieval usually ranks the passage with the answer first, so without this nearly every
    reference cites [1] and a model learns to quote source 1 rather than to find the fact.
    """
    import dataclasses


    if len(prepared.hits) < 2:
        return prepared
    hits = list(prepared.hits)
    rng.shuffle(hits)
    return dataclasses.replace(prepared, hits=hits, prompt=dataclasses.replace(prepared.prompt, hits=hits))


def tour_examples(guide, tour: Tour, attractions: list[str], *, seed: int = 0, example: bool = False,
                  langs: list[str] | None = None, shuffle_sources: float = 0.0,
                  inside: bool = True) -> list[Example]:
    """Factual, follow-up ("it"), language-switch, "can I go inside?" and unanswerable examples.

    With `shuffle_sources` > 0, that share of the answerable examples gets its sources reordered.
    `inside=False` leaves out the "can I go inside?" ones (the test split: its inside questions are
    the written ones of the eval set, scored by their expectations).
    """
    rng = random.Random(seed)
    order_rng = random.Random(seed + 7919)  # separate, so the questions asked do not depend on it
    langs = [code for code in tour.languages if code in (langs or tour.languages)]
    out: list[Example] = []

    def ask(state, question):
        prepared = prepare_prompt(guide, state, question, tour, example=example)
        if shuffle_sources and order_rng.random() < shuffle_sources:
            prepared = _shuffle_sources(prepared, order_rng)
        return prepared

    def add(kind, lang, aid, prepared, target, question, history=(), expect=()):
        msgs = prepared.messages + [{"role": "assistant", "content": target}]
        eid = f"{tour.id}/{aid}/{kind}/{lang}/{len(out)}"
        out.append(Example(id=eid, source=f"tour:{tour.id}", kind=kind, lang=lang, attraction=aid, messages=msgs,
                           question=question, history=list(history), expect=list(expect)))

    for aid in attractions:
        a = tour.attraction(aid)
        keys = [k for k in ASK if k in a.facts and fact_tokens(k, a.facts[k])]
        for lang in langs:
            if lang not in ASK["built"]:
                continue
            name = a.name(lang)
            answered = []  # (key, question, answer) for follow-ups
            for key in keys:
                tokens = fact_tokens(key, a.facts[key])
                question = rng.choice(ASK[key][lang]).format(name=name)
                state = DialogueState(tour=tour.id)
                prepared = ask(state, question)
                target = composed_answer(a, key, lang, prepared.hits)
                if target is None:
                    continue  # the retrieved sources do not state it
                add("factual", lang, aid, prepared, target, question, expect=tokens)
                answered.append((key, question, target))
            # a follow-up that says only "it", after a first question naming the attraction
            for first, second in zip(answered, answered[1:] + answered[:1]):
                if first[0] == second[0]:
                    continue
                state = DialogueState(tour=tour.id)
                state.apply(prepare_prompt(guide, state, first[1], tour, example=example).change, first[1], first[2])
                question = ASK_BACK[second[0]][lang]
                prepared = ask(state, question)
                tokens = fact_tokens(second[0], a.facts[second[0]])
                target = composed_answer(a, second[0], lang, prepared.hits)
                if target is None or prepared.query.language != lang:
                    continue
                add("followup", lang, aid, prepared, target, question, history=[first[1]], expect=tokens)
                break
            # a visitor who switches language mid-conversation gets answered in the new language
            other = [code for code in langs if code != lang and code in ASK["built"]]
            if answered and other:
                key, q1, a1 = answered[0]
                new = rng.choice(other)
                state = DialogueState(tour=tour.id)
                state.apply(prepare_prompt(guide, state, q1, tour, example=example).change, q1, a1)
                key2 = rng.choice(keys)
                question = rng.choice(ASK[key2][new]).format(name=a.name(new))
                prepared = ask(state, question)
                tokens = fact_tokens(key2, a.facts[key2])
                target = composed_answer(a, key2, new, prepared.hits)
                if target is not None and prepared.query.language == new:
                    add("switch", new, aid, prepared, target, question, history=[q1], expect=tokens)
            if inside and lang in ASK_INSIDE:
                question = rng.choice(ASK_INSIDE[lang]).format(name=name)
                prepared = ask(DialogueState(tour=tour.id), question)
                target = inside_answer(a, lang, prepared.hits)
                if target is not None and prepared.query.language == lang:
                    add("inside", lang, aid, prepared, target, question)
            # requests the texts cannot answer: "I don't know" in the visitor's language
            for template in rng.sample(UNANSWERABLE[lang], k=1):
                question = template.format(name=name)
                state = DialogueState(tour=tour.id)
                prepared = prepare_prompt(guide, state, question, tour, example=example)
                if not missing_concepts(question, prepared.evidence):
                    continue  # the texts do say it (or the question names nothing the check knows)
                add("unanswerable", lang, aid, prepared, DONT_KNOW[lang], question)
    return out


def build_dataset(guide, tour: Tour, *, seed: int = 0, qa_dir: Path | None = None, per_set: int = 40,
                  dev_attractions: int = 2, test_attractions: int = 3,
                  shuffle_sources: float = 0.5) -> tuple[Split, dict[str, list[Example]]]:
    """Train / dev / test examples, split by attraction; dialogue-set examples go to train and dev (9:1).

    Test prompts keep the retrieval order the guide serves with; train and dev prompts have
    `shuffle_sources` of their sources reordered.
    """
    from .ftdata_sets import dialogue_set_examples

    split = split_attractions(tour, seed=seed, dev=dev_attractions, test=test_attractions)
    data = {name: tour_examples(guide, tour, list(getattr(split, name)), seed=seed,
                                shuffle_sources=0.0 if name == "test" else shuffle_sources, inside=name != "test")
            for name in ("train", "dev", "test")}
    for ex in dialogue_set_examples(qa_dir, guide=guide, tour=tour, attractions=list(split.train),
                                    per_set=per_set, seed=seed):
        data["dev" if int(_rank(seed, ex.id)[:8], 16) % 10 == 0 else "train"].append(ex)
    for name in data:
        random.Random(seed).shuffle(data[name])
    return split, data


def dataset_stats(data: dict[str, list[Example]]) -> str:
    """A markdown table: examples per split by kind and by language."""
    kinds = sorted({e.kind for rows in data.values() for e in rows})
    langs = sorted({e.lang for rows in data.values() for e in rows})
    head = "| split | examples | " + " | ".join(kinds) + " | " + " | ".join(langs) + " |"
    lines = [head, "|" + "---|" * (2 + len(kinds) + len(langs))]
    for name, rows in data.items():
        k, lg = Counter(e.kind for e in rows), Counter(e.lang for e in rows)
        lines.append(f"| {name} | {len(rows)} | " + " | ".join(str(k[x]) for x in kinds) + " | "
                     + " | ".join(str(lg[x]) for x in langs) + " |")
    return "\n".join(lines)


def save_jsonl(rows: list[Example], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for e in rows:
            f.write(json.dumps(e.to_json(), ensure_ascii=False) + "\n")


def load_jsonl(path: Path) -> list[Example]:
    return [Example(**json.loads(line)) for line in Path(path).read_text(encoding="utf-8").splitlines() if line]


def data_hash(data: dict[str, list[Example]]) -> str:
    h = hashlib.sha256()
    for name in sorted(data):
        for e in data[name]:
            h.update(json.dumps([name, e.messages], ensure_ascii=False, sort_keys=True).encode())
    return h.hexdigest()
