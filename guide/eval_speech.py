"""Speech evaluation: WER / CER per language on recorded clips, TTS -> ASR round trips, and
real-time factors of the ASR and TTS backends. Every function returns plain rows (dicts)."""

from __future__ import annotations

import csv
import logging
import re
import time
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

__all__ = ["normalize_text", "edit_distance", "error_rate", "CER_LANGUAGES", "read_transcripts", "evaluate_asr",
           "round_trip", "bench_speech", "format_table", "ROUND_TRIP_TEXTS"]

log = logging.getLogger(__name__)

CER_LANGUAGES = ("zh", "ja", "ko")  # scored by characters: no spaces between words (or unreliable ones)

# No numbers: Whisper writes "1889" for "eighteen eighty-nine", which would count as errors.
ROUND_TRIP_TEXTS: dict[str, list[str]] = {
    "en": ["Where is the main entrance of the cathedral?", "The museum is closed on Mondays."],
    "de": ["Guten Morgen, wo ist der Bahnhof?", "Das Museum ist am Montag geschlossen."],
    "fr": ["Bonjour, où est la gare?", "Le musée est fermé le lundi."],
    "es": ["Buenos días, ¿dónde está la estación?", "El museo está cerrado los lunes."],
}


def normalize_text(text: str, lang: str = "en") -> str:
    """Lowercase, NFKC, punctuation and symbols to spaces; for CER languages, also no spaces."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(c)[0] in "PSZ" else c for c in text)
    text = " ".join(text.split())
    if lang in CER_LANGUAGES:
        text = text.replace(" ", "")
    return text


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance (substitutions + deletions + insertions) between two sequences."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def _units(text: str, lang: str) -> list[str]:
    norm = normalize_text(text, lang)
    return list(norm) if lang in CER_LANGUAGES else norm.split()


def error_rate(ref: str, hyp: str, lang: str = "en", *, chars: bool | None = None) -> float:
    """WER (or CER for zh / ja / ko, or when `chars`) of one hypothesis against one reference."""
    use_chars = lang in CER_LANGUAGES if chars is None else chars
    r = list(normalize_text(ref, lang).replace(" ", "")) if use_chars else _units(ref, lang)
    h = list(normalize_text(hyp, lang).replace(" ", "")) if use_chars else _units(hyp, lang)
    return edit_distance(r, h) / max(1, len(r))


def read_transcripts(audio_dir: str | Path) -> list[tuple[Path, str, str]]:
    """(audio file, language, reference text) rows of `audio_dir`/transcripts.tsv (file, lang, transcript).
    Paths in the file may be relative to the folder or to its parent ("audio/en/x.flac")."""
    audio_dir = Path(audio_dir)
    tsv = audio_dir / "transcripts.tsv"
    if not tsv.is_file():
        raise FileNotFoundError(f"{tsv} not found: an ASR folder needs transcripts.tsv (file, lang, transcript)")
    rows = []
    with open(tsv, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            rel = Path(row["file"])
            for candidate in (audio_dir / rel, audio_dir.parent / rel, audio_dir / Path(*rel.parts[1:])):
                if candidate.is_file():
                    rows.append((candidate, row["lang"].strip(), row["transcript"].strip()))
                    break
            else:
                log.warning("%s: no such audio file, skipped", rel)
    return rows


def _load(name, backend, cache_dir, asr):
    if asr is not None:
        return asr
    from .asr import load_asr

    return load_asr(name, backend=backend, cache_dir=cache_dir)


def evaluate_asr(audio_dir: str | Path, *, asr=None, name: str = "whisper-base", backend: str = "faster-whisper",
                 cache_dir: str | Path | None = None, languages: Sequence[str] | None = None,
                 limit: int | None = None, progress: bool = True) -> list[dict]:
    """WER per language (CER for zh, ja, ko) and language-ID accuracy on a folder with transcripts.tsv.

    Language identification is restricted to `languages` (default: every language in the folder), as a
    tour restricts it to its own. One row per language plus an "all" row (clip-weighted averages)."""
    from .audio import to_mono_16k

    rows_in = read_transcripts(audio_dir)
    if limit:
        rows_in = rows_in[:limit]
    if not rows_in:
        raise ValueError(f"no audio with a transcript in {audio_dir}")
    asr = _load(name, backend, cache_dir, asr)
    candidates = list(languages or dict.fromkeys(lang for _, lang, _ in rows_in))
    stats: dict[str, dict] = defaultdict(lambda: dict(clips=0, errors=0, units=0, lang_ok=0, audio_s=0.0, asr_s=0.0))
    for path, lang, ref in tqdm(rows_in, desc="ASR eval", unit="clip", disable=not progress):
        wav = to_mono_16k(path)
        t = time.perf_counter()
        heard = asr.transcribe(wav, languages=candidates)
        elapsed = time.perf_counter() - t
        use_chars = lang in CER_LANGUAGES
        r = list(normalize_text(ref, lang)) if use_chars else normalize_text(ref, lang).split()
        h = list(normalize_text(heard.text, lang)) if use_chars else normalize_text(heard.text, lang).split()
        s = stats[lang]
        s["clips"] += 1
        s["errors"] += edit_distance(r, h)
        s["units"] += len(r)
        s["lang_ok"] += heard.language == lang
        s["audio_s"] += len(wav) / 16000
        s["asr_s"] += elapsed
        log.debug("%s [%s->%s] %s | %s", path.name, lang, heard.language, ref, heard.text)
    rows = []
    for lang in sorted(stats):
        s = stats[lang]
        rows.append({"lang": lang, "clips": s["clips"], "metric": "cer" if lang in CER_LANGUAGES else "wer",
                     "error_rate": s["errors"] / max(1, s["units"]), "lang_id": s["lang_ok"] / s["clips"],
                     "audio_s": s["audio_s"], "rtf": s["asr_s"] / max(1e-9, s["audio_s"])})
    total = sum(s["clips"] for s in stats.values())
    rows.append({"lang": "all", "clips": total, "metric": "mean",
                 "error_rate": sum(r["error_rate"] * r["clips"] for r in rows) / total,
                 "lang_id": sum(s["lang_ok"] for s in stats.values()) / total,
                 "audio_s": sum(s["audio_s"] for s in stats.values()),
                 "rtf": sum(s["asr_s"] for s in stats.values()) / max(1e-9, sum(s["audio_s"] for s in stats.values()))})
    return rows


def round_trip(texts_by_lang: dict[str, Iterable[str]] | None = None, *, tts=None, asr=None,
               name: str = "whisper-base", backend: str = "faster-whisper", cache_dir: str | Path | None = None,
               progress: bool = True) -> list[dict]:
    """Synthesise each text, transcribe it back (language detected among the given ones), and score
    the character error rate per language: how intelligible the voice is to Whisper."""
    from .audio import to_mono_16k
    from .tts import load_tts

    texts_by_lang = {k: list(v) for k, v in (texts_by_lang or ROUND_TRIP_TEXTS).items()}
    tts = tts if tts is not None else load_tts("auto")
    asr = _load(name, backend, cache_dir, asr)
    langs = list(texts_by_lang)
    rows = []
    for lang, texts in tqdm(texts_by_lang.items(), desc="TTS round trip", unit="lang", disable=not progress):
        errors = units = lang_ok = 0
        voice, tts_s, audio_s = "", 0.0, 0.0
        for text in texts:
            t = time.perf_counter()
            speech = tts.synthesize(text, lang)
            tts_s += time.perf_counter() - t
            audio_s += speech.duration
            voice = speech.voice
            heard = asr.transcribe(to_mono_16k((speech.sample_rate, speech.samples)), languages=langs)
            ref = normalize_text(text, lang).replace(" ", "")
            errors += edit_distance(list(ref), list(normalize_text(heard.text, lang).replace(" ", "")))
            units += len(ref)
            lang_ok += heard.language == lang
            log.debug("%s: %s | %s", lang, text, heard.text)
        rows.append({"lang": lang, "voice": voice, "texts": len(texts), "cer": errors / max(1, units),
                     "lang_id": lang_ok / max(1, len(texts)), "tts_rtf": tts_s / max(1e-9, audio_s)})
    return rows


def _bench_clips(dev_dir: Path | None) -> list[tuple[str, np.ndarray]]:
    from .audio import to_mono_16k

    if dev_dir is None:
        from .config import dev_data_dir

        dev_dir = dev_data_dir()
    audio = Path(dev_dir) / "audio"
    picks = ["en/whisper_jfk.flac", "de/picovoice_leopard_test_de.wav", "fr/fleurs-fr-000.ogg"]
    clips = [(p, to_mono_16k(audio / p)) for p in picks if (audio / p).is_file()]
    if clips:
        return clips
    from .tts import load_tts

    log.info("no dev audio at %s: benchmarking on synthesised speech", audio)
    tts = load_tts("espeak-ng")
    out = []
    for lang, texts in ROUND_TRIP_TEXTS.items():
        s = tts.synthesize(" ".join(texts), lang)
        out.append((f"espeak-{lang}", to_mono_16k((s.sample_rate, s.samples))))
    return out


def bench_speech(config=None, *, dev_dir: str | Path | None = None, runs: int = 1,
                 asr_backends: Sequence[str] = ("faster-whisper", "openai-whisper"),
                 beam_sizes: Sequence[int] = (5, 1), progress: bool = True) -> list[dict]:
    """Real-time factors (compute seconds / audio seconds; lower is faster): ASR per backend and beam
    size on the same weights and clips, TTS per installed backend. A backend that cannot load is
    reported, not fatal."""
    from .asr import load_asr
    from .tts import PIPER_VOICES, EspeakNG, Piper, _piper_voice_path

    name = getattr(config, "asr", "whisper-base")
    cache_dir = getattr(config, "cache_dir", None)
    clips = _bench_clips(Path(dev_dir) if dev_dir else None)
    audio_s = sum(len(w) for _, w in clips) / 16000
    rows = []
    for backend in asr_backends:
        try:
            t = time.perf_counter()
            asr = load_asr(name, backend=backend, cache_dir=cache_dir)
            load_s = time.perf_counter() - t
            asr.transcribe(clips[0][1][:16000 * 3])  # warm-up
        except Exception as e:  # noqa: BLE001 - reported in the table
            log.warning("ASR backend %s skipped: %s", backend, e)
            rows.append({"stage": "asr", "backend": backend, "model": name, "error": str(e)})
            continue
        for beam in beam_sizes:
            asr.beam_size = beam
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                for _, wav in tqdm(clips, desc=f"ASR {backend}, beam {beam}", unit="clip", disable=not progress):
                    asr.transcribe(wav)
                times.append(time.perf_counter() - t)
            compute = min(times)
            rows.append({"stage": "asr", "backend": f"{backend}, beam {beam}", "model": name, "load_s": load_s,
                         "audio_s": audio_s, "compute_s": compute, "rtf": compute / audio_s})
    texts = {"en": "The Eiffel Tower was built for the World's Fair of 1889, and it is 330 metres tall.",
             "de": "Der Eiffelturm wurde für die Weltausstellung 1889 gebaut und ist 330 Meter hoch."}
    synths = []
    try:
        synths.append(("espeak-ng", lambda: EspeakNG(), ("en", "de")))
    except Exception:  # noqa: BLE001
        pass
    for voice in PIPER_VOICES:
        if _piper_voice_path(voice) is not None:
            synths.append((f"piper ({voice})", lambda v=voice: Piper.load(v), ("en",)))
    for label, factory, langs in synths:
        try:
            t = time.perf_counter()
            synth = factory()
            load_s = time.perf_counter() - t
            synth.synthesize("Hello.", langs[0])  # warm-up
            spoken = compute = 0.0
            for lang in langs:
                for _ in range(runs):
                    t = time.perf_counter()
                    speech = synth.synthesize(texts[lang], lang)
                    compute += time.perf_counter() - t
                    spoken += speech.duration
            rows.append({"stage": "tts", "backend": label, "model": ",".join(langs), "load_s": load_s,
                         "audio_s": spoken, "compute_s": compute, "rtf": compute / max(1e-9, spoken)})
        except Exception as e:  # noqa: BLE001
            log.warning("TTS backend %s skipped: %s", label, e)
            rows.append({"stage": "tts", "backend": label, "error": str(e)})
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """A markdown table of rows (dicts); columns in first-seen order, floats to 3 decimals."""
    if not rows:
        return "(no rows)"
    columns = list(dict.fromkeys(k for r in rows for k in r))

    def cell(v) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.3f}"
        return re.sub(r"\s+", " ", str(v)).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
