"""What was heard and how far to trust it: a Transcript and its Segments, the hallucination guard
(stock phrases, looping n-grams, low-confidence segments) and `doubt_about` (whether a transcript
is clear enough to answer). No model here: asr fills these in.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Segment", "Transcript", "filter_segments", "collapse_repeats", "is_hallucination", "doubt_about",
           "MIN_LANGUAGE_CONFIDENCE", "MIN_AVG_LOGPROB", "OTHER_LANGUAGE_CONFIDENCE"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the recording
    end: float  # seconds
    text: str
    avg_logprob: float = 0.0  # mean token log-probability of the decoded text
    no_speech_prob: float = 0.0  # Whisper's probability that the window holds no speech
    compression_ratio: float = 1.0  # gzip ratio of the text; > 2.4 means it loops


@dataclass(frozen=True)
class Transcript:
    text: str  # "" when nothing was said
    language: str  # ISO 639-1 code, chosen among the allowed languages
    probability: float  # of that language, renormalised over the allowed languages (1.0 when given)
    segments: tuple[Segment, ...] = ()  # the segments kept (text), with Whisper's confidence in each
    detected: str = ""  # Whisper's most probable language among all it knows ("" when the language was given)
    detected_probability: float = 0.0  # its probability, over all languages
    dropped: tuple[Segment, ...] = ()  # segments the hallucination guard removed


# --- hallucination guard -------------------------------------------------------------------------

# Phrases Whisper writes over silence, music or noise: subtitle credits and video outros it learnt
# from its training captions. Matched on folded text (lowercase, no accents or punctuation).
_HALLUCINATIONS = [re.compile(p) for p in (
    r"thanks? (you )?for watching", r"thank you for (watching|listening)", r"subtitles? (by|made by)",
    r"subtitled by", r"captions? by", r"transcribed by", r"amara ?org", r"please subscribe",
    r"(like and |don t forget to )subscribe", r"see you (in the )?next (video|time)",
    r"untertitel (im auftrag|der amara|von|vom)", r"untertitelung", r"zdf (fur|für) funk",
    r"sous titr", r"merci d avoir regarde", r"subtitulos (realizados|por)", r"gracias por ver",
    r"legendas (pela|por)", r"obrigad[oa] por (assistir|ver)", r"sottotitoli (creati|a cura)",
    r"grazie per la visione", r"ondertiteld door", r"bedankt voor het kijken",
    r"字幕", r"请不吝点赞", r"订阅", r"感谢观看", r"ご視聴ありがとうございました", r"チャンネル登録",
    r"시청해 ?주셔서 감사합니다", r"구독", r"mbc 뉴스",
)]
_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.casefold())
    text = unicodedata.normalize("NFC", "".join(c for c in text if not "\u0300" <= c <= "\u036f"))  # accents only
    return " ".join(re.sub(r"[^\w]+", " ", text).split())


def is_hallucination(text: str) -> bool:
    """True for the stock phrases Whisper invents over silence ("Thanks for watching!")."""
    folded = _fold(text)
    return bool(folded) and any(p.search(folded) for p in _HALLUCINATIONS)


def _cjk(text: str) -> bool:
    return any("\u3040" <= c <= "\u30ff" or "\u4e00" <= c <= "\u9fff" or "\uac00" <= c <= "\ud7af"
               for c in text)


def collapse_repeats(text: str, *, max_repeats: int = 2, max_n: int = 8) -> str:
    """Cut loops: an n-gram repeated more than `max_repeats` times in a row is kept `max_repeats` times.

    Words are the units, or characters in Chinese / Japanese text without spaces.
    """
    by_char = _cjk(text) and len(text.split()) <= 2
    units = list(text.strip()) if by_char else text.split()
    changed = True
    while changed:
        changed = False
        for n in range(1, max_n + 1):
            i = 0
            while i + n * (max_repeats + 1) <= len(units):
                gram = [_fold(u) for u in units[i:i + n]]
                j = i + n
                while j + n <= len(units) and [_fold(u) for u in units[j:j + n]] == gram:
                    j += n
                count = (j - i) // n
                if count > max_repeats and any(gram):
                    last, tail = i + n * max_repeats - 1, re.search(r"\W+$", units[j - 1])
                    if not by_char and tail and not re.search(r"\W$", units[last]):
                        units[last] += tail.group()  # keep the sentence's own stop: "today today?"
                    del units[i + n * max_repeats:j]
                    changed = True
                i += 1
    return ("" if by_char else " ").join(units)


def filter_segments(segments: Sequence[Segment], *, min_avg_logprob: float = -1.5,
                    no_speech_threshold: float = 0.6, no_speech_logprob: float = -0.8) -> list[Segment]:
    """Drop segments that are likely hallucinations and cut repeated n-grams in the rest."""
    return _screen(segments, min_avg_logprob=min_avg_logprob, no_speech_threshold=no_speech_threshold,
                   no_speech_logprob=no_speech_logprob)[0]


def _screen(segments: Sequence[Segment], *, min_avg_logprob: float = -1.5, no_speech_threshold: float = 0.6,
            no_speech_logprob: float = -0.8) -> tuple[list[Segment], list[Segment]]:
    """(kept, dropped): filter_segments, also returning what it dropped."""
    kept, dropped = [], []
    for s in segments:
        text = s.text.strip()
        why = None
        if not text:
            why = "empty"
        elif s.avg_logprob < min_avg_logprob:
            why = f"avg_logprob {s.avg_logprob:.2f}"
        elif s.no_speech_prob > no_speech_threshold and s.avg_logprob < no_speech_logprob:
            why = f"no_speech_prob {s.no_speech_prob:.2f}"
        elif is_hallucination(text):
            why = "stock phrase"
        if why:
            log.debug("dropped segment %r (%s)", text, why)
            if text:
                dropped.append(s)
            continue
        collapsed = collapse_repeats(text)
        if collapsed != text:
            log.debug("cut a repeated n-gram: %r -> %r", text, collapsed)
        kept.append(Segment(s.start, s.end, collapsed, s.avg_logprob, s.no_speech_prob, s.compression_ratio))
    return kept, dropped


# --- was it heard well enough to answer? -----------------------------------------------------------

# Measured with Whisper base (faster-whisper, float32, beam 5) on the 38 dev recordings (9 languages,
# detection among all 9) and on garbled input (`tests/test_speech_stream_slow.py` repeats it):
# - Whisper's own language confidence, over every language it knows: clean speech 0.90-1.00 (one to
#   twenty seconds); espeak-ng French, which Whisper base does not understand, 0.22-0.56.
# - mean token log-probability of the kept segments: clean speech -0.21 to -0.69; garbled -0.72 to -1.42.
# - a recording in a language outside the allowed ones (Italian, Korean, Portuguese on the Paris
#   tour; Chinese, Japanese, Korean, Portuguese on the Rome tour) was identified as that language
#   with 0.97-1.00 in all 18 cases, and none of the clean recordings was identified as a language
#   outside the nine.
# With the limits below no clean recording is refused and every garbled one is.
MIN_LANGUAGE_CONFIDENCE = 0.4  # below: the voice is not clearly speech in any language
MIN_AVG_LOGPROB = -0.8  # below: Whisper was unsure of the words it wrote
OTHER_LANGUAGE_CONFIDENCE = 0.8  # a language outside the allowed ones, identified at least this surely


def doubt_about(transcript: Transcript, languages: Sequence[str] | None = None) -> str | None:
    """Why a transcript should not be answered, or None when it can be.

    "language": the recording is clearly in a language outside `languages`; "unclear": Whisper
    was unsure (low language confidence or low token log-probability); "nothing": there was speech but
    every segment was dropped as a hallucination. An empty transcript of silence is None (nothing to doubt).
    """
    t = transcript
    if languages and t.detected and t.detected not in languages and \
            t.detected_probability >= OTHER_LANGUAGE_CONFIDENCE:
        return "language"
    if not t.segments:
        return "nothing" if t.dropped else None
    if t.detected and t.detected_probability < MIN_LANGUAGE_CONFIDENCE:
        return "unclear"
    weights = [max(s.end - s.start, 1e-3) for s in t.segments]
    logprob = sum(s.avg_logprob * w for s, w in zip(t.segments, weights)) / sum(weights)
    return "unclear" if logprob < MIN_AVG_LOGPROB else None


def _join(segments: Sequence[Segment]) -> str:
    out = ""
    for s in segments:
        t = s.text.strip()
        if out and not (_cjk(out[-1:]) and _cjk(t[:1])):
            out += " "
        out += t
    return out
