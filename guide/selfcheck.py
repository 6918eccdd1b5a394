"""Start-up self-checks of the native models, each in a child process.

CTranslate2 (faster-whisper) and onnxruntime (Piper, Kokoro) are native code too: on a CPU their
build mishandles, they end the process with a signal. So before the guide serves with one, a child
process loads it and runs one short decode; a crash or a hang there is reported (by `python -m
guide doctor` and in the app's notice) and the stage falls back — Whisper on torch instead of
CTranslate2, espeak-ng instead of the crashed voice — instead of taking the server down later.
The LLM's check is its supervised server's first decode (guide.llm_server).

A result is cached per machine and library version (`<cache_dir>/selfcheck.json`), so a restart
does not pay for the checks again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from .config import GuideConfig, cpu_flags, load_config

__all__ = ["Check", "check_asr", "check_tts", "run_checks"]

log = logging.getLogger(__name__)

CHILD = [sys.executable, "-m", "guide.selfcheck"]  # the child's command, STAGE and its arguments follow
LIBRARIES = ("ctranslate2", "faster-whisper", "onnxruntime", "piper-tts", "llama_cpp_python", "numpy")


@dataclass
class Check:
    """The outcome of one stage's self-check."""

    stage: str  # asr | tts
    status: str  # ok | crashed | hung | failed
    detail: str = ""  # what it ran, or how it failed
    seconds: float = 0.0
    broken: list[str] = field(default_factory=list)  # tts: the languages whose voice crashed

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def line(self) -> str:
        return f"{self.status} ({self.detail}, {self.seconds:.1f} s)" if self.detail else self.status


def _fingerprint(stage: str, config: GuideConfig, extra: str = "") -> str:
    """What the result depends on: the CPU, the libraries' versions and the models configured."""
    versions = []
    for name in LIBRARIES:
        try:
            versions.append(f"{name}={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name}=-")
    parts = [stage, platform.machine(), platform.python_version(), " ".join(sorted(cpu_flags())), *versions,
             config.asr, config.asr_backend, config.tts, extra]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _cache_file(config: GuideConfig) -> Path:
    return Path(config.cache_dir) / "selfcheck.json"


def _cached(config: GuideConfig, key: str) -> Check | None:
    try:
        data = json.loads(_cache_file(config).read_text())[key]
        return Check(**data)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store(config: GuideConfig, key: str, check: Check) -> None:
    path = _cache_file(config)
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        data = {}
    data[key] = asdict(check)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
    except OSError:
        log.warning("could not store the self-check result in %s", path)


def _child_env(config: GuideConfig) -> dict[str, str]:
    """The parent's configuration of the checked stages, for the child's load_config()."""
    env = {**os.environ, "GUIDE_PROFILE": config.profile, "GUIDE_ASR": config.asr,
           "GUIDE_ASR_BACKEND": config.asr_backend, "GUIDE_TTS": config.tts, "GUIDE_CACHE_DIR": str(config.cache_dir)}
    if config.device:
        env["GUIDE_DEVICE"] = config.device
    return env


def _run_child(stage: str, args: list[str], timeout: float,
               config: GuideConfig) -> tuple[str, list[str], str, float]:
    """Run `python -m guide.selfcheck STAGE ARGS`; returns (status, stdout lines, last stderr, seconds)."""
    t = time.perf_counter()
    cmd = [*CHILD, stage, *args]
    root = str(Path(__file__).resolve().parent.parent)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=root, stdin=subprocess.DEVNULL,
                              env=_child_env(config))
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return "hung", out.splitlines(), f"no result after {timeout:.0f} s", time.perf_counter() - t
    seconds = time.perf_counter() - t
    lines = proc.stdout.splitlines()
    err = (proc.stderr.strip().splitlines() or [""])[-1]
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return "crashed", lines, f"killed by {name}", seconds
    if proc.returncode != 0:
        return "failed", lines, err or f"exit status {proc.returncode}", seconds
    return "ok", lines, "", seconds


def check_asr(config: GuideConfig | None = None, *, timeout: float = 180.0, use_cache: bool = True) -> Check:
    """Load the configured Whisper in a child and decode one second of audio with it."""
    config = config or load_config()
    key = "asr:" + _fingerprint("asr", config)
    if use_cache and (hit := _cached(config, key)) is not None:
        return hit
    status, lines, why, seconds = _run_child("asr", [], timeout, config)
    detail = lines[-1] if status == "ok" and lines else why
    check = Check("asr", status, f"{config.asr} on {config.asr_backend}: {detail}", seconds)
    if status != "failed":  # a missing model is not a property of the machine: check again next time
        _store(config, key, check)
    return check


def check_tts(config: GuideConfig | None = None, languages: list[str] | tuple[str, ...] = ("en",), *,
              timeout: float = 180.0, use_cache: bool = True) -> Check:
    """Load the configured voices in a child and speak one word per language with each neural voice.

    A voice that crashes the child is marked broken and the rest are checked again without it.
    """
    config = config or load_config()
    langs = sorted(set(languages))
    key = "tts:" + _fingerprint("tts", config, ",".join(langs))
    if use_cache and (hit := _cached(config, key)) is not None:
        return hit
    broken: list[str] = []
    reasons: list[str] = []
    todo, total, status, why = list(langs), 0.0, "ok", ""
    spoken: list[str] = []
    while todo:
        status, lines, why, seconds = _run_child("tts", todo, timeout, config)
        total += seconds
        done = [ln.split()[1] for ln in lines if ln.startswith("ok ")]
        spoken += [ln[3:] for ln in lines if ln.startswith("ok ")]
        if status == "ok":
            break
        started = [ln.split()[1] for ln in lines if ln.startswith("start ")]
        culprit = next((lang for lang in started if lang not in done), None)
        if culprit is None:  # it failed before any voice spoke: loading itself is the problem
            break
        log.error("voice for %s %s in the self-check (%s)", culprit, status, why)
        broken.append(culprit)
        reasons.append(f"{culprit}: {status}, {why}")
        todo = [lang for lang in todo if lang not in done and lang != culprit]
        status = "ok" if not todo else status
    if broken:
        status, why = "crashed", f"voices that failed ({'; '.join(reasons)}): espeak-ng speaks those languages"
    detail = why or ", ".join(spoken)
    check = Check("tts", status, detail, total, broken)
    if status != "failed":
        _store(config, key, check)
    return check


def run_checks(config: GuideConfig | None = None, languages=("en",), *, use_cache: bool = True) -> dict[str, Check]:
    config = config or load_config()
    return {"asr": check_asr(config, use_cache=use_cache),
            "tts": check_tts(config, languages, use_cache=use_cache)}


# --- the child side ----------------------------------------------------------------------------------


def _test_audio(seconds: float = 1.0, rate: int = 16000) -> np.ndarray:
    """A vowel-like tone with syllable rhythm: passes voice-activity detection, so the decoder runs."""
    t = np.arange(int(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 700, 1100), start=1))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    return (0.2 * voice * envelope).astype(np.float32)


def _child_asr() -> None:
    from .asr import _TimeMap, load_asr

    config = load_config()
    asr = load_asr(config.asr, backend=config.asr_backend, cache_dir=config.cache_dir, device=config.device)
    wav = _test_audio()
    t = time.perf_counter()
    asr._language_probs(wav)  # the encoder
    asr._decode(wav, "en", _TimeMap([(0, len(wav))]))  # encoder + decoder with beam search
    print(f"decoded 1 s in {time.perf_counter() - t:.2f} s", flush=True)


def _child_tts(languages: list[str]) -> None:
    from .tts import load_tts

    voices = load_tts(load_config().tts)
    for lang in languages:
        print(f"start {lang}", flush=True)
        voice = voices.voice_for(lang)
        speech = voice.synthesize("Bonjour." if lang == "fr" else "Hello.", lang)
        if not len(speech.samples):
            raise SystemExit(f"the {lang} voice produced no samples")
        print(f"ok {lang} {getattr(voice, 'name', type(voice).__name__)}", flush=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING)
    stage, rest = (argv[0], argv[1:]) if argv else ("", [])
    if stage == "asr":
        _child_asr()
    elif stage == "tts":
        _child_tts(rest or ["en"])
    else:
        raise SystemExit("usage: python -m guide.selfcheck asr|tts [LANG ...]")


if __name__ == "__main__":
    main()
