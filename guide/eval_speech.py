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
           "round_trip", "bench_speech", "format_table", "ROUND_TRIP_TEXTS", "tour_texts", "voices_report",
           "fold_script"]

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


_T2S: dict[str, str] | None = None


def fold_script(text: str, lang: str) -> str:
    """Chinese in simplified characters (Whisper base often writes traditional ones: 馆 as 館), so a
    round trip scores what was heard, not the script. Other languages unchanged. Needs misaki's
    conversion table (installed with the Mandarin voice); without it the text is returned as is."""
    global _T2S
    if _base_lang(lang) != "zh":
        return text
    if _T2S is None:
        try:
            from misaki.zh_normalization.char_convert import t2s_dict
        except ImportError:  # the Mandarin G2P is not installed: nothing to fold with
            t2s_dict = {}
        _T2S = dict(t2s_dict)
    return "".join(_T2S.get(c, c) for c in text)


def _base_lang(lang: str) -> str:
    return lang.replace("_", "-").split("-")[0].lower()


def round_trip(texts_by_lang: dict[str, Iterable[str]] | None = None, *, tts=None, asr=None,
               name: str = "whisper-base", backend: str = "faster-whisper", cache_dir: str | Path | None = None,
               progress: bool = True, details: list | None = None) -> list[dict]:
    """Synthesise each text, transcribe it back (language detected among the given ones), and score
    the character error rate per language: how intelligible the voice is to Whisper. Chinese is
    compared in simplified characters (fold_script). `details`, when a list, receives one
    (lang, text, heard, cer) tuple per sentence."""
    from .audio import to_mono_16k
    from .tts import load_tts

    texts_by_lang = {k: list(v) for k, v in (texts_by_lang or ROUND_TRIP_TEXTS).items()}
    tts = tts if tts is not None else load_tts("auto", cache_dir=cache_dir)
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
            ref = normalize_text(fold_script(text, lang), lang).replace(" ", "")
            hyp = normalize_text(fold_script(heard.text, lang), lang).replace(" ", "")
            errors += (err := edit_distance(list(ref), list(hyp)))
            units += len(ref)
            if details is not None:
                details.append((lang, text, heard.text, err / max(1, len(ref))))
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
    from .tts import PIPER_VOICES, EspeakNG, Kokoro, Piper, _piper_voice_path, kokoro_languages

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
             "de": "Der Eiffelturm wurde für die Weltausstellung 1889 gebaut und ist 330 Meter hoch.",
             "fr": "La tour Eiffel a été construite pour l'Exposition universelle de 1889 ; elle mesure 330 mètres."}
    synths = []
    try:
        synths.append(("espeak-ng", lambda: EspeakNG(), ("en", "de")))
    except Exception:  # noqa: BLE001
        pass
    for voice in PIPER_VOICES:
        if _piper_voice_path(voice) is not None:
            synths.append((f"piper ({voice})", lambda v=voice: Piper.load(v), ("en",)))
    if "fr" in kokoro_languages(cache_dir):
        synths.append(("kokoro (ff_siwis)", lambda: Kokoro.load(cache_dir=cache_dir, languages=["fr"]), ("fr",)))
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


def tour_texts(tours: Sequence[str] = ("paris", "rome"), *, per_language: int = 8,
               tours_dir: str | Path | None = None) -> dict[str, list[str]]:
    """Answer-like sentences for a round trip: the first sentence of each attraction's description,
    in every language of the tours, up to `per_language` each (the tours' own texts, not dev data)."""
    from .config import GuideConfig
    from .tours import load_tour
    from .tts import split_sentences

    root = Path(tours_dir) if tours_dir is not None else Path(GuideConfig().tours_dir)
    out: dict[str, list[str]] = {}
    for tour_id in tours:
        tour = load_tour(root / tour_id)
        for lang in tour.languages:
            bucket = out.setdefault(lang, [])
            for attraction in tour.attractions:
                text = attraction.descriptions.get(lang) or ""
                sentences = split_sentences(text)
                cjk = lang in CER_LANGUAGES
                for sentence in sentences[:2]:
                    if len(bucket) >= per_language:
                        break
                    if (8 if cjk else 25) <= len(sentence) <= (70 if cjk else 150) and sentence not in bucket:
                        bucket.append(sentence)
                        break
    return out


def voices_report(texts_by_lang: dict[str, Sequence[str]], setups: dict[str, object], *, asr=None,
                  name: str = "whisper-base", backend: str = "faster-whisper", cache_dir: str | Path | None = None,
                  progress: bool = True, details: list | None = None) -> list[dict]:
    """One row per language: the voice and round-trip CER of each TTS setup (label -> Voices), so
    setups can be compared on the same sentences and the same ears."""
    asr = _load(name, backend, cache_dir, asr)
    rows: dict[str, dict] = {}
    for label, tts in setups.items():
        for r in round_trip(texts_by_lang, tts=tts, asr=asr, progress=progress, details=details):
            row = rows.setdefault(r["lang"], {"lang": r["lang"], "sentences": r["texts"]})
            row[f"{label} voice"] = r["voice"]
            row[f"{label} CER"] = r["cer"]
            row[f"{label} RTF"] = r["tts_rtf"]
    return list(rows.values())


def machine() -> str:
    """The CPU (model, vector instruction sets, cores), for tables of measurements."""
    from .evaluate import machine_description

    return machine_description()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m guide.eval_speech voices`: the round-trip table of docs/VOICES.md — every language
    of the tours spoken by the best installed voice (and, with --baseline, by another setup),
    transcribed back by Whisper base, CER per language."""
    import argparse

    from .tts import load_tts

    parser = argparse.ArgumentParser(prog="python -m guide.eval_speech", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    voices = sub.add_parser("voices", help="TTS -> Whisper round trip per tour language")
    voices.add_argument("--tours", nargs="+", default=["paris", "rome"])
    voices.add_argument("--sentences", type=int, default=8, help="sentences per language")
    voices.add_argument("--tts", default="auto", help="the TTS setup to measure (load_tts name)")
    voices.add_argument("--baseline", default=None,
                        help="a second setup to compare, e.g. 'piper' (Piper for English, espeak-ng for the rest)")
    voices.add_argument("--raw-baseline", action="store_true",
                        help="the baseline without speech normalisation (as the guide spoke before it)")
    voices.add_argument("--languages", nargs="+", default=None)
    voices.add_argument("--details", action="store_true", help="also print each sentence and what was heard")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .config import GuideConfig

    config = GuideConfig()
    texts = tour_texts(args.tours, per_language=args.sentences)
    if args.languages:
        texts = {k: v for k, v in texts.items() if k in args.languages}
    setups = {}
    if args.baseline:
        base = load_tts(args.baseline, cache_dir=config.cache_dir)
        base.normalize = not args.raw_baseline
        setups["before"] = base
    setups["now" if args.baseline else args.tts] = load_tts(args.tts, cache_dir=config.cache_dir)
    details: list = []
    rows = voices_report(texts, setups, cache_dir=config.cache_dir, details=details if args.details else None)
    print(f"Round trip, Whisper base ({config.asr_backend}), tours {', '.join(args.tours)}, "
          f"{args.sentences} sentences a language; {machine()}\n")
    print(format_table(rows))
    for lang, text, heard, cer in details:
        print(f"- {lang} {cer:.2f} | {text} | {heard}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
