"""Audio at the boundary: any recording in, mono float32 16 kHz samples in [-1, 1] out.

Decodes with PyAV (wav, ogg/opus, webm, mp3, flac, m4a, aiff... at any rate), or with the ffmpeg
command when PyAV is missing. Recordings longer than MAX_SECONDS and files that are not audio are
refused with a GuideError the visitor can read.
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
from os import PathLike
from pathlib import Path

import numpy as np

from .errors import GuideError, ModelUnavailable
from .messages import duration

__all__ = ["SAMPLE_RATE", "MAX_SECONDS", "to_mono_16k", "resample"]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # Hz, what Whisper hears
MAX_SECONDS = 60  # longer questions are refused
_SLACK = 0.5  # s; containers round their durations
_MIN_BYTES_PER_SECOND = 500  # 4 kbit/s, below any speech codec: a file smaller than its stated length lies

def _not_audio() -> GuideError:
    return GuideError.say("audio_not_audio")


def _empty() -> GuideError:
    return GuideError.say("audio_empty")


def _too_long(seconds: float, at_least: bool = False) -> GuideError:
    return GuideError.say("audio_too_long", length=lambda lang: duration(seconds, lang, at_least=at_least),
                          limit=f"{MAX_SECONDS:g}")


def to_mono_16k(source, *, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """float32[n] mono 16 kHz samples in [-1, 1] from a recording.

    `source`: a path (str / Path), the file's bytes, a (sample_rate, samples) tuple as Gradio's Audio
    component gives (int or float samples, shape (n,) or (n, channels)), or a float array already
    at 16 kHz. Raises GuideError for recordings over `max_seconds`, empty ones and non-audio input.
    """
    if isinstance(source, dict) and "path" in source:  # Gradio FileData as a dict
        source = source["path"]
    elif hasattr(source, "path") and not isinstance(source, (str, PathLike)):
        source = source.path
    if isinstance(source, tuple):
        if len(source) != 2:
            raise TypeError("an audio tuple must be (sample_rate, samples)")
        rate, samples = source
        if isinstance(rate, np.ndarray) and np.isscalar(samples):  # (samples, rate), as some libraries give
            rate, samples = samples, rate
        wav = _from_array(np.asarray(samples), int(rate), max_seconds)
    elif isinstance(source, np.ndarray):
        wav = _from_array(source, SAMPLE_RATE, max_seconds)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise _empty()
        wav = _decode(bytes(source), max_seconds)
    elif isinstance(source, (str, PathLike)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise GuideError.say("audio_missing", name=path.name)
        if path.stat().st_size == 0:
            raise _empty()
        wav = _decode(path, max_seconds)
    else:
        raise TypeError(f"audio must be a path, bytes or a (sample_rate, samples) tuple, not {type(source).__name__}")
    if wav.size == 0:
        raise _empty()
    wav = np.nan_to_num(wav, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.ascontiguousarray(np.clip(wav, -1.0, 1.0), dtype=np.float32)


def _from_array(samples: np.ndarray, rate: int, max_seconds: float) -> np.ndarray:
    if rate <= 0:
        raise ValueError(f"sample rate must be positive, got {rate}")
    if samples.ndim == 2:
        if samples.shape[0] <= 8 < samples.shape[1]:  # (channels, n) -> (n, channels)
            samples = samples.T
    elif samples.ndim != 1:
        raise ValueError(f"audio samples must be 1-D or 2-D, got shape {samples.shape}")
    if samples.dtype.kind == "u":  # unsigned PCM is centred on half its range
        info = np.iinfo(samples.dtype)
        half = (int(info.max) + 1) / 2
        samples = (samples.astype(np.float32) - half) / half
    elif samples.dtype.kind == "i":
        samples = samples.astype(np.float32) / float(-np.iinfo(samples.dtype).min)
    elif samples.dtype.kind == "f":
        samples = samples.astype(np.float32)
    else:
        raise _not_audio()
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    seconds = len(samples) / rate
    if seconds > max_seconds + _SLACK:
        raise _too_long(seconds)
    return resample(samples, rate, SAMPLE_RATE)


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 samples from `rate` to `target` Hz (PyAV's band-limited resampler; linear without it)."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if rate == target or samples.size == 0:
        return samples
    try:
        import av
        from av.audio.resampler import AudioResampler
    except ImportError:
        n = int(round(len(samples) * target / rate))
        return np.interp(np.arange(n) * rate / target, np.arange(len(samples)), samples).astype(np.float32)
    resampler = AudioResampler(format="flt", layout="mono", rate=target)
    out = []
    block = 1 << 16
    for i in range(0, len(samples), block):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[None, i:i + block]), format="flt",
                                           layout="mono")
        frame.sample_rate = rate
        out += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def _decode(source: bytes | Path, max_seconds: float) -> np.ndarray:
    try:
        import av  # noqa: F401
    except ImportError:
        return _decode_ffmpeg(source, max_seconds)
    return _decode_av(source, max_seconds)


def _decode_av(source: bytes | Path, max_seconds: float) -> np.ndarray:
    import av
    from av.audio.resampler import AudioResampler

    limit = int((max_seconds + _SLACK) * SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    n = 0
    try:
        container = av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source), mode="r",
                            metadata_errors="ignore")
    except (av.FFmpegError, ValueError, OSError, EOFError) as e:
        raise _not_audio() from e
    with container:
        if not container.streams.audio:
            raise GuideError.say("audio_silent")
        stream = container.streams.audio[0]
        if stream.duration and stream.time_base:
            declared = float(stream.duration * stream.time_base)
        else:
            declared = container.duration / 1e6 if container.duration else 0.0
        size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
        if declared > max_seconds + _SLACK and size >= declared * _MIN_BYTES_PER_SECOND:
            raise _too_long(declared)  # refused before decoding; a header that lies about its length is decoded
        resampler = AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            for frame in container.decode(stream):
                frame.pts = None  # some streams (webm from browsers) carry pts the resampler rejects
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    n += chunks[-1].size
                if n > limit:
                    raise _too_long(max_seconds, at_least=True)
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except (av.FFmpegError, ValueError, EOFError) as e:
            if n < SAMPLE_RATE // 2:  # less than half a second decoded: not a usable recording
                raise _not_audio() from e
            log.warning("recording truncated or damaged after %.1f s (%s); using what was decoded",
                        n / SAMPLE_RATE, e)
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def _decode_ffmpeg(source: bytes | Path, max_seconds: float) -> np.ndarray:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise ModelUnavailable("decoding audio needs PyAV or ffmpeg: run `pip install av` or `apt-get install ffmpeg`")
    limit = max_seconds + _SLACK
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-i",
           "pipe:0" if isinstance(source, bytes) else str(source),
           "-t", f"{limit + 1:.1f}", "-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "pipe:1"]
    proc = subprocess.run(cmd, input=source if isinstance(source, bytes) else None, capture_output=True, check=False)
    wav = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)
    if proc.returncode != 0 and wav.size < SAMPLE_RATE // 2:
        log.debug("ffmpeg failed: %s", proc.stderr.decode(errors="replace")[-500:])
        raise _not_audio()
    if wav.size > limit * SAMPLE_RATE:
        raise _too_long(max_seconds, at_least=True)
    return wav
