"""Conversation state: history, the current attraction, and the visitor's language, turn by turn."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .lang import detect_language, fold
from .tours import Tour

__all__ = ["DialogueState", "Query", "TurnChange", "find_attractions", "resolve", "EXTRA_LANGUAGES"]

# Languages recognised (to say "I can't answer in that language yet") even when a tour lacks them.
EXTRA_LANGUAGES = ("en", "fr", "de", "es", "it", "pt", "nl", "pl", "tr", "sv", "fi", "da", "nb", "cs", "hu", "ro", "sw",
                   "id", "vi")
_SCRIPTS = {  # scripts of languages no tour here has: detected to be answered politely
    "ru": re.compile(r"[\u0400-\u04ff]"),
    "ar": re.compile(r"[\u0600-\u06ff]"),
    "hi": re.compile(r"[\u0900-\u097f]"),
    "ko": re.compile(r"[\uac00-\ud7af]"),
    "th": re.compile(r"[\u0e00-\u0e7f]"),
    "el": re.compile(r"[\u0370-\u03ff]"),
    "he": re.compile(r"[\u0590-\u05ff]"),
}


@dataclass
class DialogueState:
    """One visitor's conversation. Plain data: safe to keep in gr.State and to copy."""

    tour: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)  # {"role": "user"|"assistant", "content"}
    attraction: str | None = None  # the attraction the conversation is about
    language: str | None = None  # the visitor's language, as last detected
    language_override: str | None = None  # chosen by the visitor; wins over detection

    def apply(self, change: TurnChange, question: str, answer: str) -> None:
        """The one place a visitor turn writes the conversation: its subject, language and the exchange."""
        if change.attraction is not None:
            self.attraction = change.attraction
        if change.language is not None:
            self.language = change.language
        self.remember(question, answer)

    def remember(self, question: str, answer: str, max_messages: int = 12) -> None:
        self.history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        del self.history[:-max_messages]

    def reset(self) -> None:
        self.history.clear()
        self.attraction = None
        self.language = None


# Words that point back to something already named ("How tall is it?"). Languages that drop the
# pronoun (es, zh, ja) rely on the subject simply carrying over.
_POINTERS = {
    "en": r"\b(it|its|it's|they|them|their|there|this|that|he|she|his|her)\b",
    "fr": r"\b(il|elle|ils|elles|le|la|les|l|lui|y|son|sa|ses|leur|cela|ça|ce)\b",
    "de": r"\b(er|sie|es|ihn|ihm|ihr|ihre|ihren|sein|seine|seinen|dort|da|das|dies|dieser|diese)\b",
    "es": r"\b(él|ella|ello|lo|la|le|su|sus|allí|allá|ahí|eso|esto|este|esta)\b",
    "it": r"\b(esso|essa|lo|la|gli|le|suo|sua|lì|là|questo|questa|quello|quella)\b",
    "pt": r"\b(ele|ela|o|a|lhe|seu|sua|lá|ali|isso|isto|este|esta)\b",
    "nl": r"\b(het|hij|zij|ze|hem|haar|zijn|daar|dit|dat|deze)\b",
    "zh": r"(它|这|那|其|这里|那里|这座|那座)",
    "ja": r"(それ|これ|あれ|そこ|ここ|その|この)",
    "ko": r"(그것|이것|저것|거기|여기|그곳|이곳)",
}


def points_back(text: str, lang: str) -> bool:
    """Whether the message refers back with a pronoun ("it", "er", "它"...)."""
    pattern = _POINTERS.get(lang)
    return bool(pattern and re.search(pattern, text.casefold()))


@dataclass(frozen=True)
class TurnChange:
    """What one answered turn changes in the conversation (None: left as it was). Decided by
    `resolve` and the retrieval (`prepare.prepare_prompt`), applied once by `DialogueState.apply`."""

    attraction: str | None = None  # the subject from now on
    language: str | None = None  # the visitor's language as detected in this message


@dataclass(frozen=True)
class Query:
    text: str  # the visitor's question as asked
    language: str  # language to answer in
    detected: str  # language the question was written in (may be outside the tour's languages)
    confidence: float
    mentioned: list[str]  # attraction ids named in the question, in order
    attractions: list[str]  # attractions the question is about (mentioned, seen, or carried over)
    search_text: str  # what retrieval searches for
    carried: bool = False  # the subject came from earlier turns, not from this message
    pointer: bool = False  # the message points back with a pronoun
    subject: str | None = None  # the conversation's subject after this message (before retrieval has its say)
    seen_language: str | None = None  # `detected`, when it is one of the tour's languages (remembered)

    def change(self, attraction: str | None = None) -> TurnChange:
        """The conversation's change when this query is answered; `attraction` overrides the subject
        (retrieval moved it, or found it for a question that named none)."""
        return TurnChange(attraction=attraction or self.subject, language=self.seen_language)


_PATTERNS: dict[tuple[str, str], list[tuple[re.Pattern, bool, str]]] = {}


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_HAN = re.compile(r"[\u3400-\u9fff]")
_KANA = re.compile(r"[\u3040-\u30ff]")


def _alias_patterns(tour: Tour) -> list[tuple[re.Pattern, bool, str]]:
    key = (tour.id, tour.content_hash)
    if key in _PATTERNS:
        return _PATTERNS[key]
    entries = []
    for a in tour.attractions:
        for alias in {*a.all_names(), a.id.replace("-", " ")}:
            folded = fold(alias)
            if not folded:
                continue
            cjk = bool(_CJK.search(folded))
            # Latin names may carry a short inflection ("Eiffelturms", "Louvres"); CJK names match anywhere
            pattern = re.escape(folded) if cjk else r"\b" + re.escape(folded) + r"\w{0,2}\b"
            entries.append((len(folded), re.compile(pattern), cjk, a.id))
    entries.sort(key=lambda e: -e[0])
    _PATTERNS[key] = [(p, cjk, aid) for _, p, cjk, aid in entries]
    return _PATTERNS[key]


def find_attractions(text: str, tour: Tour) -> list[str]:
    """Ids of the tour's attractions named in `text` (any language, alias or inflection), in order."""
    folded = fold(text)
    found: list[tuple[int, str]] = []
    taken = [False] * (len(folded) + 1)
    for pattern, _cjk, aid in _alias_patterns(tour):
        for m in pattern.finditer(folded):
            if any(taken[m.start() : m.end()]):
                continue  # part of a longer name already matched ("Tour Eiffel" before "Eiffel")
            for i in range(m.start(), m.end()):
                taken[i] = True
            found.append((m.start(), aid))
    if not found:  # misheard or misspelt: the closest way of hearing a name wrong first
        found = _near_misses(folded, tour) or _cjk_near_misses(folded, tour) or _homophones(folded, tour)
    ordered = []
    for _, aid in sorted(found):
        if aid not in ordered:
            ordered.append(aid)
    return ordered


def strip_names(text: str, tour: Tour, only: list[str] | None = None) -> str:
    """The text without the tour's attraction names (any language; `only`: those attractions'), which
    say little about the visitor's language, or, within one attraction, about what is asked."""
    chosen = tour.attractions if only is None else [tour.attraction(a) for a in only]
    names = sorted({n for a in chosen for n in a.all_names() if n}, key=len, reverse=True)
    for name in names:
        text = re.sub(re.escape(name), " ", text, flags=re.IGNORECASE)
    return text


def _near_misses(folded: str, tour: Tour, cutoff: float = 0.8) -> list[tuple[int, str]]:
    """Names misheard or misspelt: "Eiferturm", "Eifeltum", Whisper's "la Torre y Fel" for "la Torre
    Eiffel". A Latin-script name of 7+ letters (spaces not counted) is compared, fuzzily, with each run
    of the text's words that has about as many words (one fewer to one more), spaces removed, and
    neither starts nor ends with a word under 3 letters; the best matches that do not overlap win."""
    import difflib

    names = _fuzzy_names(tour).latin
    words = [(m.start(), m.group()) for m in re.finditer(r"\w+", folded)]
    candidates = []  # (score, first word, words covered, attraction)
    for n_name, table in names.items():
        for size in range(max(1, n_name - 1), n_name + 2):
            for i in range(len(words) - size + 1):
                if size > 1 and min(len(words[i][1]), len(words[i + size - 1][1])) < 3:
                    continue
                run = "".join(w for _, w in words[i : i + size])
                if len(run) < 6:
                    continue
                for close in difflib.get_close_matches(run, list(table), n=1, cutoff=cutoff):
                    candidates.append((difflib.SequenceMatcher(None, run, close).ratio(), i, size, table[close]))
    taken: set[int] = set()
    found = []
    for _, i, size, aid in sorted(candidates, key=lambda c: (-c[0], c[1])):
        span = set(range(i, i + size))
        if not span & taken:
            taken |= span
            found.append((words[i][0], aid))
    return found


def _cjk_near_misses(folded: str, tour: Tour, cutoff: float = 0.75) -> list[tuple[int, str]]:
    """CJK names of 4+ characters with a character or two misheard ("ノートルダム大制度" for
    "ノートルダム大聖堂"): each stretch of the text as long as the name, compared fuzzily."""
    import difflib

    if not _CJK.search(folded):
        return []
    found, done = [], set()
    for name, aid in _fuzzy_names(tour).cjk:
        if aid in done:
            continue
        best = max(((difflib.SequenceMatcher(None, folded[i : i + len(name)], name).ratio(), i)
                    for i in range(max(1, len(folded) - len(name) + 1))), default=(0.0, 0))
        if best[0] >= cutoff:
            found.append((best[1], aid))
            done.add(aid)
    return found


def _syllables(text: str) -> list[str] | None:
    """Toneless pinyin of each character (other characters as they are), or None without pypinyin."""
    try:
        from pypinyin import lazy_pinyin
    except ImportError:  # installed with the Mandarin voice (requirements-base.txt)
        return None
    return [lazy_pinyin(ch)[0] if _HAN.match(ch) else ch for ch in text]


def _homophones(folded: str, tour: Tour) -> list[tuple[int, str]]:
    """Chinese names written with other characters of the same sound, as Whisper often does
    ("盧福宫" for "卢浮宫", lú fú gōng both): the tour's Chinese names of 3+ characters against each
    stretch of a Chinese text (no kana) of as many characters, syllable by syllable, tones ignored."""
    if _KANA.search(folded) or not _HAN.search(folded):
        return []
    heard = _syllables(folded)
    if heard is None:
        return []
    found, done = [], set()
    for said, aid in _fuzzy_names(tour).sounds:
        if aid in done:
            continue
        at = next((i for i in range(len(heard) - len(said) + 1) if heard[i : i + len(said)] == said), None)
        if at is not None:
            found.append((at, aid))
            done.add(aid)
    return found


@dataclass(frozen=True)
class _NameTables:
    """The names near misses are compared with, made once per tour version."""

    latin: dict[int, dict[str, str]]  # Latin-script names of 7+ letters: {words: {name without spaces: id}}
    cjk: list[tuple[str, str]]  # CJK names of 4+ characters: [(name, id)]
    sounds: list[tuple[list[str], str]]  # Chinese names of 3+ Han characters: [(toneless syllables, id)]


_FUZZY: dict[tuple[str, str], _NameTables] = {}


def _fuzzy_names(tour: Tour) -> _NameTables:
    key = (tour.id, tour.content_hash)
    if key not in _FUZZY:
        latin: dict[int, dict[str, str]] = {}
        cjk: list[tuple[str, str]] = []
        sounds: list[tuple[list[str], str]] = []
        for a in tour.attractions:
            for alias in a.all_names():
                f = fold(alias)
                if f.isascii() and len(f.replace(" ", "")) >= 7:
                    latin.setdefault(f.count(" ") + 1, {}).setdefault(f.replace(" ", ""), a.id)
                elif len(f.replace(" ", "")) >= 4 and _CJK.search(f):
                    cjk.append((f.replace(" ", ""), a.id))
            for name in (fold(n).replace(" ", "") for n in a.names.get("zh", [])):
                if len(name) >= 3 and all(_HAN.match(ch) for ch in name):
                    said = _syllables(name)
                    if said is not None:
                        sounds.append((said, a.id))
        _FUZZY[key] = _NameTables(latin, cjk, sounds)
    return _FUZZY[key]


def question_language(text: str, tour: Tour, previous: str | None) -> tuple[str, float]:
    """(language, confidence). Names are ignored; a message too short to tell keeps the previous language."""
    for code, script in _SCRIPTS.items():
        if code not in tour.languages and len(script.findall(text)) >= 2:
            return code, 1.0
    words = strip_names(text, tour)
    fallback = previous if previous in tour.languages else tour.languages[0]
    if sum(ch.isalpha() for ch in words) < 2:
        return fallback, 0.0
    lang, confidence = detect_language(words, tour.languages, fallback=fallback)
    wide = tuple(c for c in dict.fromkeys([*tour.languages, *EXTRA_LANGUAGES]))
    other, other_conf = detect_language(words, wide, fallback=fallback)
    if other not in tour.languages and other_conf > 0.6 and confidence < 0.7:
        return other, other_conf  # a language the tour does not speak
    if previous in tour.languages and lang != previous and confidence < 0.35:
        return previous, confidence
    return lang, confidence


def resolve(state: DialogueState, text: str, tour: Tour, *, seen: str | None = None,
            heard: str | None = None) -> Query:
    """Interpret a visitor message in context: its language and which attraction(s) it is about.

    Named attractions win; then one recognised in the visitor's photo; then the attraction the
    conversation was already about ("How tall is it?"). `heard` is the language Whisper identified
    for a spoken question. Reads `state`, never writes it: `Query.change()` says what answering it changes.
    """
    if heard:  # a spoken question: Whisper already told the language, from the voice itself
        detected, confidence = heard, 1.0
    else:
        detected, confidence = question_language(text, tour, state.language)
    if state.language_override in tour.languages:
        language = state.language_override
    elif detected in tour.languages:
        language = detected
    else:
        language = "en" if "en" in tour.languages else tour.languages[0]
    mentioned = find_attractions(text, tour)
    if mentioned:
        about = mentioned
    elif seen:
        about = [seen]
    elif state.attraction:
        about = [state.attraction]
    else:
        about = []
    search_text = text
    if about and not mentioned:
        names = " / ".join(tour.attraction(a).name(language) for a in about)
        search_text = f"{names}: {text}"
    subject = (about[0] if len(about) == 1 else state.attraction or about[0]) if about else None
    carried = bool(about) and not mentioned and not seen
    return Query(text=text, language=language, detected=detected, confidence=confidence, mentioned=mentioned,
                 attractions=about, search_text=search_text, carried=carried,
                 pointer=points_back(text, detected if detected in _POINTERS else language),
                 subject=subject, seen_language=detected if detected in tour.languages else None)


