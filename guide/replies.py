"""What the guide says instead of an answer: a recording it did not understand well enough, a photo it
did not recognise, the question a photo alone asks. Plain functions of the turn's data, in the
visitor's language."""

from __future__ import annotations

from .dialogue import DialogueState
from .lang import LANGUAGES, language_name, phrase
from .tours import Tour

__all__ = ["visitor_language", "not_heard", "not_recognised", "what_is_this", "WHAT_IS_THIS"]


def visitor_language(state: DialogueState, tour: Tour, transcript=None) -> str:
    """The language to address the visitor in before their question is understood: their choice, else
    a confident identification of their voice, else the language of earlier turns, else the tour's first."""
    if state.language_override:
        return state.language_override
    if transcript is not None and transcript.language in tour.languages and transcript.probability >= 0.8:
        return transcript.language
    return state.language or tour.languages[0]


def not_heard(transcript, why: str, tour: Tour, state: DialogueState) -> tuple[str, str]:
    """(message, its language) when a recording was not understood well enough to answer."""
    choices = ", ".join(language_name(c, native=True) for c in tour.languages)
    if why == "language":
        # said in the language the visitor seems to speak, when the guide has its phrases
        lang = transcript.detected if transcript.detected in LANGUAGES else visitor_language(state, tour)
        return phrase("heard_other_language", lang, language=language_name(transcript.detected, native=True),
                      choices=choices), lang
    lang = visitor_language(state, tour, transcript)
    heard = " ".join(transcript.text.split())
    if not heard:
        return phrase("not_heard", lang), lang
    if len(heard) > 160:
        heard = heard[:157].rstrip() + "…"
    return phrase("heard_unsure", lang, heard=heard), lang


WHAT_IS_THIS = {"en": "What is this?", "fr": "Qu'est-ce que c'est ?", "de": "Was ist das?", "es": "¿Qué es esto?",
                 "it": "Che cos'è?", "pt": "O que é isto?", "nl": "Wat is dit?", "zh": "这是什么？",
                 "ja": "これは何ですか？", "ko": "이것은 무엇입니까?"}


def not_recognised(rec, tour: Tour, lang: str) -> str:
    """What the guide says about a photo it did not recognise, in `lang`: the places it might be (the
    tour's names in that language) and what would help."""
    kind = getattr(rec, "hint_kind", "")
    if kind == "no-photos":
        return phrase("photo_hint_no-photos", lang)
    ids = list(getattr(rec, "nearest_ids", []) or [a for a, _ in (getattr(rec, "candidates", None) or [])][:3])
    names = []
    for a in ids:
        try:
            names.append(tour.attraction(a).name(lang))
        except KeyError:
            continue
    message = phrase("photo_unknown", lang, names=", ".join(names)) if names else phrase("photo_unknown_alone", lang)
    if kind in ("whole-building", "more-detail"):
        message += " " + phrase(f"photo_hint_{kind}", lang)
    return message


def what_is_this(lang: str) -> str:
    return WHAT_IS_THIS.get(lang, WHAT_IS_THIS["en"])
