"""Text as a voice should speak it: markdown, citations and URLs taken out (clean_for_speech), units,
currency, ranges and abbreviations written out per language, CJK punctuation for voices that do not
pause at it (normalize_for_speech), and sentences cut for speaking one at a time (split_sentences), and in clauses (split_clauses).
"""

from __future__ import annotations

import re

__all__ = ["clean_for_speech", "normalize_for_speech", "split_sentences", "split_clauses"]


def _base(lang: str) -> str:
    return lang.replace("_", "-").split("-")[0].lower()


_CJK_CHARS = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uff00-\uffef"
_END = ".!?…。！？"
_STEPS = [  # (pattern, replacement, flags), applied in order
    (r"```.*?```", " ", re.S),  # code blocks
    (r"!\[[^\]]*\]\([^)]*\)", "", 0),  # images
    (r"\[([^\]]+)\]\([^)]*\)", r"\1", 0),  # [label](url) -> label
    (r"<(?:https?://|www\.)[^>]*>", "", 0),  # <url>
    (r"(?:https?://|ftp://|www\.)[^\s)\]>]+", "", 0),  # bare URLs
    (r"</?[a-zA-Z][^>]*>", "", 0),  # html tags
    (r"\s*[\[【［]\s*\^?\d+(?:\s*[,;，、–-]\s*\d+)*\s*[\]】］]", "", 0),  # citations [1], [1, 2], [^3], 【2】
    (r"`([^`]*)`", r"\1", 0),  # inline code
    (r"^\s{0,3}#{1,6}\s*", "", re.M),  # headings
    (r"^\s*>\s?", "", re.M),  # quotes
    (r"^\s*([-*_])\s*(?:\1\s*){2,}$", "", re.M),  # horizontal rules
    (r"^\s*(?:[-*+•·]|\d{1,2}[.)])\s+", "", re.M),  # list markers
    (r"(\*\*|__)(.+?)\1", r"\2", re.S),  # bold
    (r"(?<![\w*])[*_](?=\S)(.+?)(?<=\S)[*_](?![\w*])", r"\1", 0),  # italics
    (r"~~(.+?)~~", r"\1", 0),  # strike-through
    (r"\s*\|\s*", ", ", 0),  # table cells
    (r"[ \t]+", " ", 0),
    (r" +([,.;:!?。，、！？])", r"\1", 0),  # space left before punctuation by a removed citation
    (r"([,;:])(?:\s*[,;:])+", r"\1", 0),
]
_STEPS = [(re.compile(p, f), r) for p, r, f in _STEPS]


def clean_for_speech(text: str) -> str:
    """Text as it should be spoken: no [1]-style citations, markdown, URLs or html; list items and
    headings become sentences of their own."""
    for pattern, repl in _STEPS:
        text = pattern.sub(repl, text)
    lines = []
    for line in text.splitlines():
        line = line.strip(" ,;:-")
        if not any(c.isalnum() for c in line):
            continue
        if line[-1] not in _END + ")\"'»”」』":
            line += "。" if re.search(f"[{_CJK_CHARS}]$", line) else "."
        lines.append(line)
    return " ".join(lines)


# Symbols and abbreviations that voices read badly (espeak-ng says "330 m" as "330 em", Kokoro's
# espeak phonemes skip "€"), written out per language. Each rule was kept only where it lowered the
# round-trip CER (docs/VOICES.md).

_UNITS = {  # unit after a number -> words
    "en": {"km": "kilometres", "m": "metres", "cm": "centimetres", "m²": "square metres", "ha": "hectares",
           "€": "euros", "%": "percent", "kg": "kilograms", "t": "tonnes"},
    "fr": {"km": "kilomètres", "m": "mètres", "cm": "centimètres", "m²": "mètres carrés", "ha": "hectares",
           "€": "euros", "%": "pour cent", "kg": "kilos", "t": "tonnes"},
    "de": {"km": "Kilometer", "m": "Meter", "cm": "Zentimeter", "m²": "Quadratmeter", "ha": "Hektar",
           "€": "Euro", "%": "Prozent", "kg": "Kilogramm", "t": "Tonnen"},
    "es": {"km": "kilómetros", "m": "metros", "cm": "centímetros", "m²": "metros cuadrados", "ha": "hectáreas",
           "€": "euros", "%": "por ciento", "kg": "kilos", "t": "toneladas"},
    "it": {"km": "chilometri", "m": "metri", "cm": "centimetri", "m²": "metri quadrati", "ha": "ettari",
           "€": "euro", "%": "per cento", "kg": "chili", "t": "tonnellate"},
    "pt": {"km": "quilômetros", "m": "metros", "cm": "centímetros", "m²": "metros quadrados", "ha": "hectares",
           "€": "euros", "%": "por cento", "kg": "quilos", "t": "toneladas"},
    "zh": {"km": "公里", "m": "米", "cm": "厘米", "m²": "平方米", "€": "欧元", "kg": "公斤"},
    "ja": {"km": "キロメートル", "m": "メートル", "cm": "センチメートル", "m²": "平方メートル", "€": "ユーロ",
           "%": "パーセント", "kg": "キログラム"},
}
_RANGE = {"en": " to ", "fr": " à ", "de": " bis ", "es": " a ", "it": " al ", "pt": " a ", "zh": "至", "ja": "から"}
_ABBREVIATIONS_SPOKEN = {
    "fr": [(r"\bapr\.\s*J\.-C\.", "après Jésus-Christ"), (r"\bav\.\s*J\.-C\.", "avant Jésus-Christ"),
           (r"\bJ\.-C\.", "Jésus-Christ"), (r"\benv\.", "environ")],
    "de": [(r"\bn\.\s*Chr\.", "nach Christus"), (r"\bv\.\s*Chr\.", "vor Christus"), (r"\bca\.", "circa"),
           (r"\bz\.\s*B\.", "zum Beispiel"), (r"\bu\.\s*a\.", "unter anderem"), (r"\bJh\.", "Jahrhundert")],
    "es": [(r"\bd\.\s*(?:de\s*)?C\.", "después de Cristo"), (r"\ba\.\s*(?:de\s*)?C\.", "antes de Cristo"),
           (r"\baprox\.", "aproximadamente")],
    "it": [(r"\bd\.\s*C\.", "dopo Cristo"), (r"\ba\.\s*C\.", "avanti Cristo"), (r"\bca\.", "circa")],
    "en": [(r"\bapprox\.", "approximately"), (r"\bc\.(?=\s*\d)", "circa")],
}
_ABBREVIATIONS_SPOKEN = {k: [(re.compile(p), r) for p, r in v] for k, v in _ABBREVIATIONS_SPOKEN.items()}
_NUMBER = r"\d+(?:[.,]\d+)*"
_UNIT_RE = re.compile(rf"({_NUMBER})\s?(km|cm|m²|m|ha|kg|t|%|€)(?![A-Za-zÀ-ɏ0-9²])")  # CJK may follow
_EURO_BEFORE = re.compile(rf"€\s?({_NUMBER})")
_RANGE_RE = re.compile(rf"(?<![\d.,])({_NUMBER})\s?[–—-]\s?({_NUMBER})(?![\d])")
_CJK_PUNCT = str.maketrans({"，": ", ", "、": ", ", "。": ". ", "！": "! ", "？": "? ", "：": ": ", "；": "; ",
                            "（": " (", "）": ") ", "「": " “", "」": "” ", "『": " “", "』": "” ", "《": " “",
                            "》": "” ", "【": " (", "】": ") ", "·": " ", "・": " "})


def normalize_for_speech(text: str, lang: str, *, cjk_punctuation: bool = False) -> str:
    """`text` with units, currency, percentages, number ranges and dated abbreviations written out in
    `lang` ("330 m" -> "330 mètres", "113–125 n. Chr." -> "113 bis 125 nach Christus", "12 €" ->
    "12 euros"); numbers themselves stay digits (every voice reads them). `cjk_punctuation`: CJK
    stops and quotes as Latin ones, for voices that do not pause at "，" and "。" (espeak-ng)."""
    lang = _base(lang)
    stop = text.rstrip().endswith(tuple(_END))
    for pattern, words in _ABBREVIATIONS_SPOKEN.get(lang, ()):
        text = pattern.sub(words, text)
    units = _UNITS.get(lang)
    if units:
        text = _EURO_BEFORE.sub(lambda m: f"{m.group(1)} €", text) if "€" in units else text
        joiner = "" if lang in ("zh", "ja") else " "
        text = _UNIT_RE.sub(lambda m: f"{m.group(1)}{joiner}{units[m.group(2)]}" if m.group(2) in units
                            else m.group(0), text)
    if lang in _RANGE:
        text = _RANGE_RE.sub(lambda m: f"{m.group(1)}{_RANGE[lang]}{m.group(2)}", text)
    if cjk_punctuation:
        text = " ".join(text.translate(_CJK_PUNCT).split())
    if stop and not text.rstrip().endswith(tuple(_END)):
        text = text.rstrip() + "."  # "… 608 d.C." -> "… 608 dopo Cristo." still ends a sentence
    return text


# Abbreviations after which a full stop does not end a sentence (lowercase, without the stop).
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "st", "mt", "jr", "sr", "vs", "etc", "e.g", "i.e", "approx", "no", "nos",
    "fig", "ca", "cf", "inc", "ltd", "co", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept",
    "oct", "nov", "dec", "mme", "mlle", "m", "av", "bd", "z.b", "bzw", "usw", "nr", "str", "hr", "fr", "dipl",
    "sra", "srta", "dra", "pág", "sig", "ing", "dott", "sig.ra", "gen", "col", "capt", "rev", "ave", "blvd",
}
_BOUNDARY = re.compile(
    rf"(?P<cjk>[。！？!?．]+)(?=[^{_END}」』”’\"')）\]\s])"  # CJK stops need no space (not inside 「quotes」)
    rf"|(?P<latin>[.!?…。！？]+(?:\s[»›])?[\"'”’“»«›)\]」』）]*)(?=\s)"  # Latin stops need a space after them
    r"|(?P<line>\n+)"
)


def split_sentences(text: str, *, max_chars: int = 300) -> list[str]:
    """Sentences of `text`, for speaking one at a time. Knows CJK stops (。！？) and common
    abbreviations ("Dr.", "z.B."); sentences longer than `max_chars` are cut at a comma."""
    pieces: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        if m.group("latin"):
            before = text[start:m.start()].split()
            word = before[-1].lower().strip("(\"'“‘«") if before else ""
            stop = m.group("latin")
            if stop.startswith(".") and not stop.startswith("..") and (
                    word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())):
                continue  # "Dr. Smith", "J. F. Kennedy"
        pieces.append(text[start:m.end()])
        start = m.end()
    pieces.append(text[start:])
    sentences: list[str] = []
    for piece in pieces:
        piece = " ".join(piece.split())
        if not piece:
            continue
        if sentences and not any(c.isalnum() for c in piece):
            sentences[-1] += piece  # a stray "…" or ")"
            continue
        sentences.extend(_cut_long(piece, max_chars))
    return sentences


_CLAUSE_END = re.compile(r"[,;:](?=\s)|[，、；：]")


def split_clauses(sentence: str, *, min_chars: int = 24, min_cjk: int = 8) -> list[str]:
    """A sentence in the clauses a voice can say one after another, cut after a comma, semicolon or
    colon (", " but never "1,5") where both sides keep at least `min_chars` characters (`min_cjk` for
    CJK text): the first clause's audio is ready sooner than the whole sentence's, which matters for
    a voice that takes about half the audio's duration to make it (Kokoro on two cores)."""
    least = min_cjk if re.search(f"[{_CJK_CHARS}]", sentence) else min_chars
    pieces, start = [], 0
    for m in _CLAUSE_END.finditer(sentence):
        if m.end() - start >= least and len(sentence) - m.end() >= least:
            pieces.append(sentence[start:m.end()].strip())
            start = m.end()
    pieces.append(sentence[start:].strip())
    return [p for p in pieces if p]


def _cut_long(sentence: str, max_chars: int) -> list[str]:
    out = []
    while len(sentence) > max_chars:
        window = sentence[:max_chars]
        cut = max(window.rfind(", "), window.rfind("; "), window.rfind("，"), window.rfind("、"))
        if cut < max_chars // 3:
            cut = window.rfind(" ")
        if cut <= 0:
            break
        out.append(sentence[:cut + 1].strip())
        sentence = sentence[cut + 1:].strip()
    if sentence:
        out.append(sentence)
    return out
