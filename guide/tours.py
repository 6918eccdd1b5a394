"""Tour files -> dataclasses, with validation that reports every problem with file and field."""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import TourError
from .lang import LANGUAGES, fact_label

__all__ = ["Tour", "Attraction", "Passage", "load_tour", "list_tours", "tour_passages", "localized"]

log = logging.getLogger(__name__)

ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
LANG_RE = re.compile(r"^[a-z]{2,3}$")
MAX_TOUR_BYTES = 64 * 1024 * 1024  # a tour.yaml larger than this is not read
MAX_NODES = 1_000_000  # values a tour file may expand to (YAML aliases can make a small file expand without end)
MAX_DEPTH = 64  # nesting levels of a tour file


def _check_size(data: object) -> str | None:
    """Why a parsed YAML document is unusable (an alias bomb, a cycle, absurd nesting), or None."""
    budget = [MAX_NODES]

    def walk(value: object, depth: int, path: set[int]) -> str | None:
        budget[0] -= 1
        if budget[0] < 0:
            return f"expands to more than {MAX_NODES:,} values (YAML aliases repeated over and over?)"
        if not isinstance(value, (dict, list)):
            return None
        if depth > MAX_DEPTH:
            return f"nested more than {MAX_DEPTH} levels deep"
        if id(value) in path:
            return "refers to itself (a YAML alias inside its own anchor)"
        path.add(id(value))
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        for item in items:
            why = walk(item, depth + 1, path)
            if why:
                return why
        path.discard(id(value))
        return None

    return walk(data, 0, set())


@dataclass(frozen=True)
class Attraction:
    id: str
    names: dict[str, list[str]]  # language -> [display name, aliases...]
    descriptions: dict[str, str]  # language -> text (paragraphs separated by blank lines)
    facts: dict[str, object] = field(default_factory=dict)
    relations: dict[str, list[str]] = field(default_factory=dict)

    def name(self, lang: str = "en") -> str:
        for code in (lang, "en", *self.names):
            if self.names.get(code):
                return self.names[code][0]
        return self.id

    def all_names(self) -> list[str]:
        return [n for names in self.names.values() for n in names]

    def fact(self, key: str, lang: str = "en") -> object:
        """A fact's value in `lang`: a fact written per language ({en: ..., fr: ...}) gives that
        language's text (English, then any, where it has none); other facts are the same in all."""
        return localized(self.facts.get(key), lang)


def localized(value: object, lang: str) -> object:
    """`value` in `lang` when it is a per-language mapping, else `value` itself."""
    if isinstance(value, dict):
        for code in (lang, "en", *value):
            if value.get(code):
                return value[code]
        return None
    return value


@dataclass(frozen=True)
class Tour:
    id: str
    name: dict[str, str]
    languages: list[str]
    attractions: list[Attraction]
    path: Path
    content_hash: str  # sha256 of tour.yaml; indexes built from other content are stale
    # the languages its texts are written in (a subset of `languages`; None: all of them): a visitor
    # in another of `languages` is answered from these texts (retrieval is cross-lingual)
    text_languages: list[str] | None = None
    examples: dict[str, list[str]] = field(default_factory=dict)  # language -> questions the app offers

    def texts_in(self) -> list[str]:
        return self.text_languages if self.text_languages is not None else self.languages

    def attraction(self, attraction_id: str) -> Attraction:
        for a in self.attractions:
            if a.id == attraction_id:
                return a
        raise KeyError(attraction_id)

    def title(self, lang: str = "en") -> str:
        return self.name.get(lang) or self.name.get("en") or self.id

    @property
    def folder(self) -> Path:
        return self.path.parent

    def photos_dir(self, attraction_id: str) -> Path:
        return self.folder / "photos" / attraction_id


@dataclass(frozen=True)
class Passage:
    """A retrievable piece of text: part of a description, or an attraction's facts."""

    id: str  # "<attraction>/<lang>/<kind><n>", unique in the tour
    tour: str
    attraction: str
    lang: str
    kind: str  # "description" | "facts"
    title: str  # attraction display name in the passage's language
    text: str
    source: str  # where it comes from: "tours/paris/tour.yaml#eiffel-tower.descriptions.de"


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_tour(path: str | Path) -> Tour:
    """Load and validate `tours/<id>/tour.yaml` (a folder or the file). Raises TourError listing every problem."""
    path = Path(path)
    if path.is_dir():
        path = path / "tour.yaml"
    where = _rel(path)
    if not path.is_file():
        raise TourError([f"{where}: no such tour file"])
    try:
        if path.stat().st_size > MAX_TOUR_BYTES:
            raise TourError([f"{where}: {path.stat().st_size:,} bytes; a tour file may hold {MAX_TOUR_BYTES:,}"])
        raw_bytes = path.read_bytes()
    except OSError as e:  # unreadable (permissions, I/O error): this tour is skipped, not the others
        raise TourError([f"{where}: cannot be read ({e.strerror or e})"]) from None
    try:
        data = yaml.safe_load(raw_bytes.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise TourError([f"{where}: not UTF-8 text ({e.reason} at byte {e.start})"]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise TourError([f"{where}: invalid YAML{at}: {problem}"]) from None
    except RecursionError:
        raise TourError([f"{where}: nested too deeply to read"]) from None
    too_big = _check_size(data)
    if too_big:
        raise TourError([f"{where}: {too_big}"])
    problems: list[str] = []

    def bad(field_path: str, msg: str) -> None:
        problems.append(f"{where}: {field_path}: {msg}")

    if not isinstance(data, dict):
        raise TourError([f"{where}: expected a mapping with id, name, languages, attractions"])
    tour_id = data.get("id")
    if not isinstance(tour_id, str) or not ID_RE.match(tour_id):
        bad("id", "missing or not lowercase letters, digits and '-'")
        tour_id = path.parent.name
    elif tour_id != path.parent.name:
        bad("id", f"{tour_id!r} differs from the folder name {path.parent.name!r}")
    languages = data.get("languages")
    if not isinstance(languages, list) or not languages:
        bad("languages", "missing or empty list")
        languages = []
    for i, code in enumerate(languages):
        if not isinstance(code, str) or not LANG_RE.match(code):
            bad(f"languages[{i}]", f"{code!r} is not an ISO 639-1 code")
        elif code in languages[:i]:
            bad(f"languages[{i}]", f"{code!r} is listed twice")
        elif code not in LANGUAGES:
            log.warning("%s: language %r has no built-in prompts; answers use English instructions", where, code)
    languages = [c for c in languages if isinstance(c, str)]
    text_languages = data.get("text_languages")
    if text_languages is None:
        text_languages = list(languages)
    elif not isinstance(text_languages, list) or not text_languages:
        bad("text_languages", "expected a non-empty list of language codes (the languages the texts are written in)")
        text_languages = list(languages)
    else:
        for i, code in enumerate(text_languages):
            if code not in languages:
                bad(f"text_languages[{i}]", f"{code!r} is not one of the tour's languages ({', '.join(languages)})")
        text_languages = [c for c in text_languages if c in languages]
    examples: dict[str, list[str]] = {}
    raw_examples = data.get("examples") or {}
    if not isinstance(raw_examples, dict):
        bad("examples", "expected a mapping language -> list of example questions")
        raw_examples = {}
    for code, qs in raw_examples.items():
        qs = [qs] if isinstance(qs, str) else qs
        if code not in languages:
            bad(f"examples.{code}", f"language {code!r} is not in the tour's languages")
        elif not isinstance(qs, list) or not all(isinstance(q, str) and q.strip() for q in qs):
            bad(f"examples.{code}", "expected a list of questions")
        else:
            examples[code] = [q.strip() for q in qs]
    name = data.get("name")
    if isinstance(name, str):
        name = {"en": name}
    if not isinstance(name, dict) or not name:
        bad("name", "missing (a mapping language -> name)")
        name = {"en": tour_id}
    raw_attractions = data.get("attractions")
    if not isinstance(raw_attractions, list) or not raw_attractions:
        bad("attractions", "missing or empty list")
        raw_attractions = []

    attractions: list[Attraction] = []
    seen_ids: set[str] = set()
    for i, a in enumerate(raw_attractions):
        at = f"attractions[{i}]"
        if not isinstance(a, dict):
            bad(at, "expected a mapping")
            continue
        aid = a.get("id")
        if not isinstance(aid, str) or not ID_RE.match(aid):
            bad(f"{at}.id", "missing or not lowercase letters, digits and '-'")
            aid = f"attraction-{i}"
        elif aid in seen_ids:
            bad(f"{at}.id", f"duplicate id {aid!r}")
        seen_ids.add(aid)
        names: dict[str, list[str]] = {}
        raw_names = a.get("names")
        if not isinstance(raw_names, dict) or not raw_names:
            bad(f"{at}.names", "missing (a mapping language -> list of names)")
            raw_names = {}
        for code, value in raw_names.items():
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
                bad(f"{at}.names.{code}", "expected a non-empty list of names")
                continue
            names[str(code)] = [v.strip() for v in value]
        descriptions: dict[str, str] = {}
        raw_desc = a.get("descriptions")
        if not isinstance(raw_desc, dict):
            bad(f"{at}.descriptions", "missing (a mapping language -> text)")
            raw_desc = {}
        for code in languages:
            text = raw_desc.get(code)
            if text is None:
                if code in text_languages:
                    bad(f"{at}.descriptions.{code}", "missing" + (
                        "" if len(text_languages) == len(languages) else
                        f" (the texts are written in {', '.join(text_languages)})"))
            elif not isinstance(text, str) or not text.strip():
                bad(f"{at}.descriptions.{code}", "empty")
            else:
                descriptions[code] = text.strip()
        for code in raw_desc:
            if code not in languages:
                bad(f"{at}.descriptions.{code}", f"language {code!r} is not in the tour's languages")
        if "en" not in names and not any(c in names for c in languages):
            bad(f"{at}.names", "needs a name in at least one of the tour's languages")
        facts = a.get("facts") or {}
        if not isinstance(facts, dict):
            bad(f"{at}.facts", "expected a mapping")
            facts = {}
        for key in [k for k in facts if not isinstance(k, str) or not k.strip()]:
            bad(f"{at}.facts.{key}", "a fact needs a name (a word such as height or built)")
            del facts[key]
        coords = facts.get("coordinates")
        if coords is not None and not (
            isinstance(coords, list)
            and len(coords) == 2
            and all(isinstance(c, (int, float)) for c in coords)
            and -90 <= coords[0] <= 90
            and -180 <= coords[1] <= 180
        ):
            bad(f"{at}.facts.coordinates", "expected [latitude, longitude]")
        for key, value in facts.items():
            if not isinstance(value, dict):
                continue
            if not all(isinstance(v, str) and v.strip() for v in value.values()):
                bad(f"{at}.facts.{key}", "a fact written per language needs a text for each language")
            for code in value:
                if code not in languages:
                    bad(f"{at}.facts.{key}.{code}", f"language {code!r} is not in the tour's languages")
        relations = a.get("relations") or {}
        if not isinstance(relations, dict) or not all(isinstance(v, list) for v in relations.values()):
            bad(f"{at}.relations", "expected a mapping kind -> list of attraction ids")
            relations = {}
        attractions.append(
            Attraction(
                id=aid,
                names=names,
                descriptions=descriptions,
                facts=dict(facts),
                relations={str(k): [str(x) for x in v] for k, v in relations.items()},
            )
        )
    for i, a in enumerate(attractions):
        for kind, ids in a.relations.items():
            for j, other in enumerate(ids):
                if other not in seen_ids:
                    bad(f"attractions[{i}].relations.{kind}[{j}]", f"unknown attraction {other!r}")
                elif other == a.id:
                    bad(f"attractions[{i}].relations.{kind}[{j}]", "an attraction cannot relate to itself")
    if problems:
        raise TourError(problems)
    return Tour(
        id=tour_id,
        name={str(k): str(v) for k, v in name.items()},
        languages=languages,
        attractions=attractions,
        path=path,
        content_hash=hashlib.sha256(raw_bytes).hexdigest(),
        text_languages=text_languages,
        examples=examples,
    )


def list_tours(tours_dir: str | Path) -> list[str]:
    """Ids of the tours under `tours_dir` (folders holding a tour.yaml), sorted."""
    tours_dir = Path(tours_dir)
    if not tours_dir.is_dir():
        return []
    return sorted(p.name for p in tours_dir.iterdir() if (p / "tour.yaml").is_file())


_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")


def _chunks(text: str, max_chars: int) -> list[str]:
    """Split text into paragraphs, and paragraphs longer than max_chars at sentence ends."""
    out: list[str] = []
    for para in re.split(r"\n\s*\n", text.strip()):
        para = " ".join(para.split())
        if not para:
            continue
        if len(para) <= max_chars:
            out.append(para)
            continue
        current = ""
        for sentence in (s for s in _SENTENCE_END.split(para) if s and s.strip()):
            if current and len(current) + len(sentence) + 1 > max_chars:
                out.append(current)
                current = sentence
            else:
                current = f"{current} {sentence}".strip() if current and not _is_cjk(sentence) else current + sentence
        if current:
            out.append(current)
    return out


def _is_cjk(text: str) -> bool:
    return bool(text) and "\u3040" <= text[0] <= "\u9fff"


def _render_value(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def facts_text(attraction: Attraction, lang: str) -> str:
    """The attraction's structured facts as one line per fact, labels in `lang`."""
    lines = [f"{fact_label(key, lang)}: {_render_value(localized(value, lang))}" for key, value in attraction.facts.items()]
    return "\n".join(lines)


def _fact_cards(lines: list[str], max_chars: int) -> list[int]:
    """How many fact lines each card takes: consecutive lines packed into cards of at most `max_chars`
    (a longer fact is a card alone)."""
    sizes: list[int] = []
    used = 0
    for line in lines:
        if sizes and used + 1 + len(line) <= max_chars:
            sizes[-1] += 1
            used += 1 + len(line)
        else:
            sizes.append(1)
            used = len(line)
    return sizes


def tour_passages(tour: Tour, *, max_chars: int = 600, fact_chars: int = 120) -> list[Passage]:
    """Every passage of the tour: description chunks in each language they are written in, and the facts
    in every language of the tour (labels translated, values as written) as small
    cards of a few facts each, so a question gets the facts it asks about (a short prompt), not all."""
    rel = _rel(tour.path)
    out: list[Passage] = []
    for a in tour.attractions:
        # the same facts on card n in every language (cut by the first language's lines), so the
        # retrieval's "one paragraph in several languages" units hold for cards too
        sizes = _fact_cards(facts_text(a, tour.texts_in()[0]).splitlines(), fact_chars) if a.facts else []
        for lang in tour.languages:
            title = a.name(lang)
            for n, chunk in enumerate(_chunks(a.descriptions.get(lang, ""), max_chars)):
                out.append(
                    Passage(
                        id=f"{a.id}/{lang}/d{n}",
                        tour=tour.id,
                        attraction=a.id,
                        lang=lang,
                        kind="description",
                        title=title,
                        text=chunk,
                        source=f"{rel}#{a.id}.descriptions.{lang}",
                    )
                )
            lines = facts_text(a, lang).splitlines() if a.facts else []
            ends = list(itertools.accumulate(sizes))
            cards = ["\n".join(lines[end - size:end]) for size, end in zip(sizes, ends)]
            for n, card in enumerate(cards):
                out.append(
                    Passage(
                        id=f"{a.id}/{lang}/facts" + (str(n + 1) if n else ""),
                        tour=tour.id,
                        attraction=a.id,
                        lang=lang,
                        kind="facts",
                        title=title,
                        text=card,
                        source=f"{rel}#{a.id}.facts",
                    )
                )
    return out
