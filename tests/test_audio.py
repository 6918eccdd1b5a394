"""audio.to_mono_16k: every format and shape in, mono float32 16 kHz out; bad input refused kindly."""

import io
import shutil
import struct
import subprocess
import wave

import numpy as np
import pytest

from guide import audio
from guide.audio import MAX_SECONDS, SAMPLE_RATE, to_mono_16k
from guide.errors import GuideError

FFMPEG = shutil.which("ffmpeg")


def tone(freq=440.0, seconds=1.0, rate=44100, amplitude=0.5, channels=2) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as f:
        f.setnchannels(1 if pcm.ndim == 1 else pcm.shape[1])
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())
    return buf.getvalue()


def dominant_hz(wav: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return float(np.argmax(spectrum) * rate / len(wav))


def encode(tmp_path, ext: str, codec: str, source: bytes) -> bytes:
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed")
    src = tmp_path / "src.wav"
    src.write_bytes(source)
    out = tmp_path / f"clip.{ext}"
    proc = subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-y", "-i", str(src), "-c:a", codec, str(out)],
                          capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"this ffmpeg cannot encode {codec}: {proc.stderr.decode()[-200:]}")
    return out.read_bytes()


FORMATS = [("wav", "pcm_s16le"), ("flac", "flac"), ("ogg", "libvorbis"), ("opus", "libopus"),
           ("webm", "libopus"), ("mp3", "libmp3lame"), ("m4a", "aac"), ("aiff", "pcm_s16be")]


@pytest.mark.parametrize("ext,codec", FORMATS, ids=[f[0] for f in FORMATS])
def test_decodes_every_format_from_path_and_bytes(tmp_path, ext, codec):
    data = encode(tmp_path, ext, codec, wav_bytes(tone(rate=44100), 44100))
    path = tmp_path / f"clip.{ext}"
    wav = to_mono_16k(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) / SAMPLE_RATE - 1.0) < 0.06  # codecs pad or trim a few ms
    assert abs(dominant_hz(wav) - 440) < 5  # the tone survived decoding and resampling
    assert 0.4 < np.abs(wav).max() <= 1.0
    assert len(to_mono_16k(data)) == len(wav)
    assert len(to_mono_16k(str(path))) == len(wav)


def test_gradio_tuple_int16_stereo_at_48k():
    samples = (tone(rate=48000, freq=1000) * 32767).astype(np.int16)  # (n, 2)
    wav = to_mono_16k((48000, samples))
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - SAMPLE_RATE) < 40
    assert abs(dominant_hz(wav) - 1000) < 5
    assert abs(np.abs(wav).max() - 0.5) < 0.05  # int16 scaled to [-1, 1]


def test_channels_first_float_and_unsigned_arrays():
    first = tone(rate=22050, channels=2).T  # (2, n)
    assert abs(dominant_hz(to_mono_16k((22050, first))) - 440) < 5
    u8 = (tone(rate=8000, channels=1) * 127 + 128).astype(np.uint8)
    wav = to_mono_16k((8000, u8))
    assert abs(dominant_hz(wav) - 440) < 5 and abs(float(wav.mean())) < 0.02


def test_stereo_is_averaged_not_one_channel_dropped():
    left = tone(rate=16000, channels=1, freq=300)
    right = tone(rate=16000, channels=1, freq=700)
    wav = to_mono_16k((16000, np.stack([left, right], axis=1)))
    spectrum = np.abs(np.fft.rfft(wav))
    hz = np.fft.rfftfreq(len(wav), 1 / 16000)
    assert spectrum[np.argmin(abs(hz - 300))] > 0.3 * spectrum.max()
    assert spectrum[np.argmin(abs(hz - 700))] > 0.3 * spectrum.max()


def test_16k_array_passes_through_and_is_clipped():
    x = np.linspace(-2, 2, 16000, dtype=np.float32)
    wav = to_mono_16k(x)
    assert len(wav) == 16000 and wav.max() == 1.0 and wav.min() == -1.0
    quiet = tone(rate=16000, channels=1, amplitude=0.1)
    assert np.allclose(to_mono_16k(quiet), quiet)


def test_too_long_recordings_are_refused(tmp_path):
    with pytest.raises(GuideError, match=f"under {MAX_SECONDS} seconds"):
        to_mono_16k((8000, np.zeros(8000 * (MAX_SECONDS + 5), np.int16)))
    long_wav = wav_bytes(np.zeros(8000 * 70, np.float32), 8000)
    with pytest.raises(GuideError, match="70 seconds"):
        to_mono_16k(long_wav)
    data = encode(tmp_path, "ogg", "libvorbis", long_wav)  # a compressed file says its length too
    with pytest.raises(GuideError, match=f"under {MAX_SECONDS} seconds"):
        to_mono_16k(data)
    assert len(to_mono_16k((8000, np.zeros(8000 * 59, np.int16)))) == 16000 * 59


@pytest.mark.parametrize("data", [
    np.random.default_rng(0).bytes(4000),
    b"this is a text file pretending to be a recording\n" * 50,
    b"RIFF\x24\x00\x00\x00WAVEfmt ",  # a WAV header cut short
    b"\x89PNG\r\n\x1a\n" + bytes(200),
], ids=["random", "text", "cut-header", "png"])
def test_non_audio_gives_a_friendly_guide_error(data):
    with pytest.raises(GuideError) as e:
        to_mono_16k(data)
    message = str(e.value)
    assert "record" in message.lower() and "Traceback" not in message and "av." not in message


def test_empty_and_missing_recordings(tmp_path):
    with pytest.raises(GuideError, match="empty"):
        to_mono_16k(b"")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(GuideError, match="empty"):
        to_mono_16k(empty)
    with pytest.raises(GuideError, match="find the recording"):
        to_mono_16k(tmp_path / "nope.ogg")
    with pytest.raises(GuideError, match="empty"):
        to_mono_16k((16000, np.zeros(0, np.int16)))


def test_truncated_file_keeps_what_was_decoded(tmp_path):
    data = encode(tmp_path, "mp3", "libmp3lame", wav_bytes(tone(seconds=3.0, rate=44100), 44100))
    wav = to_mono_16k(data[: len(data) // 2])
    assert 1.0 < len(wav) / SAMPLE_RATE < 2.0 and abs(dominant_hz(wav) - 440) < 5


def test_wrong_types_are_programmer_errors():
    with pytest.raises(TypeError):
        to_mono_16k(12345)
    with pytest.raises(ValueError):
        to_mono_16k((0, np.zeros(10)))


def test_ffmpeg_fallback_matches_pyav(tmp_path):
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed")
    data = encode(tmp_path, "flac", "flac", wav_bytes(tone(rate=44100), 44100))
    via_ffmpeg = audio._decode_ffmpeg(data, MAX_SECONDS)
    assert abs(len(via_ffmpeg) - SAMPLE_RATE) < 40 and abs(dominant_hz(via_ffmpeg) - 440) < 5
    with pytest.raises(GuideError):
        audio._decode_ffmpeg(b"not audio at all" * 20, MAX_SECONDS)


def test_resample_keeps_pitch_and_length():
    x = tone(rate=44100, channels=1, freq=2000)
    y = audio.resample(x, 44100, 16000)
    assert abs(len(y) - 16000) < 40 and abs(dominant_hz(y) - 2000) < 5


def test_long_recordings_are_measured_as_a_visitor_would_say():
    with pytest.raises(GuideError, match="That recording is 10 minutes long; please keep your question under 60"):
        to_mono_16k(wav_bytes(np.zeros(8000 * 600, np.float32), 8000))
    from guide.messages import duration

    assert duration(70) == "70 seconds" and duration(600) == "10 minutes" and duration(600, "de") == "10 Minuten"
    assert duration(3 * 3600) == "3 hours"


def test_a_header_that_lies_about_the_length_is_decoded_not_believed():
    data = bytearray(wav_bytes(np.full(8000, 0.1, np.float32), 8000))  # 1 s of sound...
    struct.pack_into("<I", data, 40, 8000 * 2 * 3600 * 3)  # ...whose header says 3 hours of it
    wav = to_mono_16k(bytes(data))
    assert abs(len(wav) / SAMPLE_RATE - 1.0) < 0.1 and abs(float(wav.mean()) - 0.1) < 0.01
