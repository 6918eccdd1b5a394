"""`python -m guide import`: place texts (a folder of .txt/.md files, or JSONL) -> a tour skeleton.

A curator usually has texts in one language (a city's Wikivoyage pages, a museum's labels). The
skeleton declares that language as the tour's `text_languages` and answers in every language asked
for (`--languages`); names, facts and relations are left for the curator to fill in.

JSONL lines: {"name" or "title": ..., "text": ..., optional "coordinates": [lat, lon] or "lat"/"lon"}.
Folder: one file per place; the name is a first line "# Name", else the file name.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from pathlib import Path

import yaml

from .errors import TourError
from .tours import ID_RE, LANG_RE, load_tour

__all__ = ["slug", "read_places", "write_tour"]

log = logging.getLogger(__name__)


def slug(name: str) -> str:
    """An attraction id from a name: "Museum of the Moving Image (New York City)" -> "museum-of-the-moving-image"."""
    name = re.sub(r"\s*\([^)]*\)\s*$", "", name)
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def _tidy(paragraph: str) -> str:
    """One line; reference marks ("[ 5 ]") and the spaces an HTML dump leaves before punctuation removed."""
    p = " ".join(paragraph.split())
    p = re.sub(r"\s*\[\s*(?:\d+|citation needed|note \d+)\s*\]", "", p)
    p = re.sub(r"\(\s+", "(", re.sub(r"\s+([,.;:!?)])", r"\1", p))
    return p


def _clip(text: str, max_chars: int) -> str:
    """Whole paragraphs (blank-line separated) while they fit in max_chars; at least the first."""
    paras = [_tidy(p) for p in re.split(r"\n\s*\n|\n", text.strip()) if p.strip()]
    kept, used = [], 0
    for p in paras:
        if kept and used + len(p) > max_chars:
            break
        kept.append(p)
        used += len(p) + 2
    return "\n\n".join(kept)


def _coordinates(item: dict) -> list[float] | None:
    c = item.get("coordinates")
    if c is None and "lat" in item and ("lon" in item or "lng" in item):
        c = [item["lat"], item.get("lon", item.get("lng"))]
    try:
        lat, lon = float(c[0]), float(c[1])
    except (TypeError, ValueError, IndexError):
        return None
    return [lat, lon] if -90 <= lat <= 90 and -180 <= lon <= 180 else None


def read_places(source: str | Path, *, only: list[str] | None = None) -> list[dict]:
    """[{name, text, coordinates?}] from a JSONL file or a folder of text files; `only`: these names, in order."""
    source = Path(source)
    places: list[dict] = []
    if source.is_dir():
        for path in sorted(p for p in source.iterdir() if p.suffix.lower() in (".txt", ".md")):
            text = path.read_text(encoding="utf-8", errors="replace").strip()
            first, _, rest = text.partition("\n")
            if first.startswith("#"):
                name, text = first.lstrip("#").strip(), rest
            else:
                name = path.stem.replace("_", " ").replace("-", " ").title()
            places.append({"name": name, "text": text})
    elif source.is_file():
        for n, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise TourError([f"{source}:{n}: not a JSON line ({e.msg})"]) from None
            name, text = item.get("name") or item.get("title"), item.get("text")
            if not isinstance(name, str) or not isinstance(text, str) or not text.strip():
                log.warning("%s:%d: skipped (needs a name or title, and a text)", source, n)
                continue
            place = {"name": name.strip(), "text": text}
            coords = _coordinates(item)
            if coords:
                place["coordinates"] = coords
            places.append(place)
    else:
        raise TourError([f"{source}: no such file or folder"])
    seen, unique = set(), []
    for p in places:  # the same place twice (a dump with duplicates): the first
        if slug(p["name"]) and slug(p["name"]) not in seen:
            seen.add(slug(p["name"]))
            unique.append(p)
    if only:
        by_name = {p["name"]: p for p in unique}
        missing = [n for n in only if n not in by_name]
        if missing:
            raise TourError([f"{source}: no place named {', '.join(repr(m) for m in missing)}"])
        unique = [by_name[n] for n in only]
    return unique


class _Dumper(yaml.SafeDumper):
    pass


def _text(dumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def write_tour(places: list[dict], folder: str | Path, *, tour_id: str, name: str, text_language: str,
               languages: list[str], max_chars: int = 3000, overwrite: bool = False) -> Path:
    """Write folder/tour.yaml for `places` (texts in `text_language`, answers in `languages`) and
    check it loads; returns its path."""
    if not ID_RE.match(tour_id):
        raise TourError([f"tour id {tour_id!r}: lowercase letters, digits and '-'"])
    languages = list(dict.fromkeys([text_language, *languages]))
    for code in languages:
        if not LANG_RE.match(code):
            raise TourError([f"language {code!r} is not an ISO 639-1 code"])
    if not places:
        raise TourError(["no places to import"])
    folder = Path(folder)
    path = folder / "tour.yaml"
    if path.exists() and not overwrite:
        raise TourError([f"{path} exists (--force to replace it)"])
    attractions = []
    for p in places:
        a = {"id": slug(p["name"]), "names": {text_language: [p["name"]]},
             "descriptions": {text_language: _clip(p["text"], max_chars)}}
        if p.get("coordinates"):
            a["facts"] = {"coordinates": p["coordinates"]}
        attractions.append(a)
    data = {"id": tour_id, "name": {text_language: name}, "languages": languages,
            "text_languages": [text_language], "attractions": attractions}
    head = (f"# Imported by `python -m guide import` from {len(places)} place texts in {text_language}.\n"
            "# Edit freely: add names in other languages (names: {de: [...]}) and aliases, facts (built, height,\n"
            "# opening_hours, tickets, inside, ...), relations, and descriptions in more languages (then list\n"
            "# them in text_languages). Check with `python -m guide validate`.\n")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(head + yaml.dump(data, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=110),
                   encoding="utf-8")
    tmp.replace(path)
    load_tour(path)  # what the guide will read: raises TourError with every problem
    return path
