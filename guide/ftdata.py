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
from .grounding import missing_concepts
from .pipeline import prepare_prompt
from .retrieval import Hit
from .tours import Passage, Tour

__all__ = ["Example", "Split", "split_attractions", "tour_examples", "dialogue_set_examples", "build_dataset",
           "dataset_stats", "save_jsonl", "load_jsonl", "DONT_KNOW"]

log = logging.getLogger(__name__)

# What the system prompt tells the model to say when the sources do not hold the answer.
DONT_KNOW = {"en": "I don't know.", "fr": "Je ne sais pas.", "de": "Das weiß ich nicht.", "es": "No lo sé.",
             "it": "Non lo so.", "pt": "Não sei.", "nl": "Dat weet ik niet.", "zh": "我不知道。", "ja": "わかりません。",
             "ko": "모르겠습니다."}

# Questions for a fact, two wordings per language ({name} is the attraction's name in that language).
ASK = {
    "built": {
        "en": ["When was {name} built?", "How old is {name}? When was it constructed?"],
        "fr": ["Quand {name} a-t-il été construit ?", "De quand date {name} ?"],
        "de": ["Wann wurde {name} gebaut?", "Aus welchem Jahr stammt {name}?"],
        "es": ["¿Cuándo se construyó {name}?", "¿De qué año es {name}?"],
        "it": ["Quando è stato costruito {name}?", "Di che anno è {name}?"],
        "zh": ["{name}是什么时候建造的？", "{name}建于哪一年？"],
        "ja": ["{name}はいつ建てられましたか？", "{name}は何年にできましたか？"],
    },
    "height": {
        "en": ["How tall is {name}?", "What is the height of {name}?"],
        "fr": ["Quelle est la hauteur de {name} ?", "{name} mesure combien de mètres ?"],
        "de": ["Wie hoch ist {name}?", "Wie viele Meter misst {name}?"],
        "es": ["¿Qué altura tiene {name}?", "¿Cuántos metros mide {name}?"],
        "it": ["Quanto è alto {name}?", "Qual è l'altezza di {name}?"],
        "zh": ["{name}有多高？", "{name}的高度是多少？"],
        "ja": ["{name}の高さはどのくらいですか？", "{name}は何メートルありますか？"],
    },
    "architect": {
        "en": ["Who designed {name}?", "Who was the architect of {name}?"],
        "fr": ["Qui a conçu {name} ?", "Qui est l'architecte de {name} ?"],
        "de": ["Wer hat {name} entworfen?", "Wer war der Architekt von {name}?"],
        "es": ["¿Quién diseñó {name}?", "¿Quién fue el arquitecto de {name}?"],
        "it": ["Chi ha progettato {name}?", "Chi è l'architetto di {name}?"],
        "zh": ["{name}是谁设计的？", "{name}的建筑师是谁？"],
        "ja": ["{name}を設計したのは誰ですか？", "{name}の建築家は誰ですか？"],
    },
}

# The same questions pointing back at the subject of the conversation ("it").
ASK_BACK = {
    "built": {"en": "When was it built?", "fr": "Quand a-t-il été construit ?", "de": "Wann wurde es gebaut?",
              "es": "¿Y cuándo se construyó eso?", "it": "Quando è stato costruito questo?", "zh": "它是什么时候建造的？",
              "ja": "それはいつ建てられましたか？"},
    "height": {"en": "And how tall is it?", "fr": "Et quelle est sa hauteur ?", "de": "Und wie hoch ist es?",
               "es": "¿Y qué altura tiene eso?", "it": "E quanto è alto questo?", "zh": "它有多高？",
               "ja": "それの高さはどのくらいですか？"},
    "architect": {"en": "Who designed it?", "fr": "Qui l'a conçu ?", "de": "Wer hat es entworfen?",
                  "es": "¿Y quién diseñó eso?", "it": "Chi ha progettato questo?", "zh": "它是谁设计的？",
                  "ja": "それを設計したのは誰ですか？"},
}

# "Can I go inside?" — the product's own question, answered from the attraction's `inside` fact as
# the tour writes it in the visitor's language (a fact written only in English is not used: the
# answer would be English). Run 11, trained without these, declined it in five languages of six.
ASK_INSIDE = {
    "en": ["Can I go inside {name}?", "Is it possible to visit {name} inside?"],
    "fr": ["Peut-on entrer dans {name} ?", "Est-ce qu'on peut visiter l'intérieur de {name} ?"],
    "de": ["Kann man {name} von innen besichtigen?", "Darf man in {name} hineingehen?"],
    "es": ["¿Se puede entrar en {name}?", "¿Se puede visitar {name} por dentro?"],
    "it": ["Si può entrare in {name}?", "Si può visitare l'interno di {name}?"],
    "zh": ["可以进入{name}里面参观吗？", "{name}里面能参观吗？"],
    "ja": ["{name}の中に入れますか？", "{name}は中を見学できますか？"],
}


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


# Requests a tour text does not answer; kept only when the attraction's texts indeed lack them.
UNANSWERABLE = {
    "en": ["What is the Wi-Fi password at {name}?", "What is the phone number of {name}?",
           "Who is the current director of {name}?", "How much does parking cost near {name}?",
           "What is on the menu of the café at {name}?", "What is the email address of {name}?"],
    "fr": ["Quel est le mot de passe du wifi à {name} ?", "Quel est le numéro de téléphone de {name} ?",
           "Qui est le directeur actuel de {name} ?", "Combien coûte le parking près de {name} ?",
           "Qu'y a-t-il au menu du café de {name} ?"],
    "de": ["Wie lautet das WLAN-Passwort in {name}?", "Wie ist die Telefonnummer von {name}?",
           "Wer ist der aktuelle Direktor von {name}?", "Was kostet das Parken bei {name}?",
           "Was steht auf der Speisekarte des Cafés in {name}?"],
    "es": ["¿Cuál es la contraseña del wifi en {name}?", "¿Cuál es el número de teléfono de {name}?",
           "¿Quién es el director actual de {name}?", "¿Cuánto cuesta el aparcamiento cerca de {name}?",
           "¿Qué hay en el menú de la cafetería de {name}?"],
    "it": ["Qual è la password del wifi a {name}?", "Qual è il numero di telefono di {name}?",
           "Chi è l'attuale direttore di {name}?", "Quanto costa il parcheggio vicino a {name}?"],
    "zh": ["{name}的无线网密码是什么？", "{name}的电话号码是多少？", "{name}现在的馆长是谁？",
           "{name}附近停车多少钱？", "{name}咖啡馆的菜单上有什么？"],
    "ja": ["{name}のWi-Fiのパスワードは何ですか？", "{name}の電話番号を教えてください。", "{name}の今の館長は誰ですか？",
           "{name}の近くの駐車料金はいくらですか？", "{name}のカフェのメニューには何がありますか？"],
}

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


# Short answers composed from the fact, in the style of the system prompt's worked example ("The Old
# Mill was built in 1820 [1]."): the subject, the asked fact and the source number, nothing else.
# Wordings avoid gender agreement with the attraction's name (fr/es/it).
COMPOSE = {
    "built": {
        "en": ("{name} was built in {a}.", "{name} was built between {a} and {b}."),
        "fr": ("{name} date de {a}.", "{name} a vu le jour entre {a} et {b}."),
        "de": ("{name} wurde {a} erbaut.", "{name} wurde von {a} bis {b} erbaut."),
        "es": ("{name} se construyó en {a}.", "{name} se construyó entre {a} y {b}."),
        "it": ("{name} risale al {a}.", "{name} vide la luce tra il {a} e il {b}."),
        "zh": ("{name}建于{a}年。", "{name}于{a}年动工，{b}年建成。"),
        "ja": ("{name}は{a}年に建てられました。", "{name}は{a}年に着工し、{b}年に完成しました。"),
    },
    "height": {
        "en": ("{name} is {h} m tall.",), "fr": ("{name} mesure {h} m de haut.",), "de": ("{name} ist {h} m hoch.",),
        "es": ("{name} mide {h} m de altura.",), "it": ("{name} misura {h} m di altezza.",),
        "zh": ("{name}高{h}米。",), "ja": ("{name}の高さは{h}メートルです。",),
    },
    "architect": {
        "en": ("{name} was designed by {who}.",), "fr": ("{name} est l'œuvre de {who}.",),
        "de": ("{name} wurde von {who} entworfen.",), "es": ("{name} es obra de {who}.",),
        "it": ("{name} è opera di {who}.",), "zh": ("{name}由{who}设计。",), "ja": ("{name}は{who}が設計しました。",),
    },
}
_AND = {"en": " and ", "fr": " et ", "de": " und ", "es": " y ", "it": " e ", "zh": "和", "ja": "と"}
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


# --- the dev dialogue sets (../shared/data/dev/qa), converted to the same chat format --------------

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


def build_dataset(guide, tour: Tour, *, seed: int = 0, qa_dir: Path | None = None, per_set: int = 40,
                  dev_attractions: int = 2, test_attractions: int = 3,
                  shuffle_sources: float = 0.5) -> tuple[Split, dict[str, list[Example]]]:
    """Train / dev / test examples, split by attraction; dialogue-set examples go to train and dev (9:1).

    Test prompts keep the retrieval order the guide serves with; train and dev prompts have
    `shuffle_sources` of their sources reordered.
    """
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
