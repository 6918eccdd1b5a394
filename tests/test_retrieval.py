import json
import os

import numpy as np
import pytest

from guide.retrieval import BM25, HashingEmbedder, HybridIndex, build_index, ensure_index, read_manifest, tokenize
from guide.tours import load_tour, tour_passages

from .conftest import MINITOUR


def test_tokenize_folds_accents_and_splits_cjk_into_bigrams():
    assert tokenize("Sacré-Cœur") == ["sacre", "coeur"]
    tokens = tokenize("埃菲尔铁塔有多高")
    assert "铁塔" in tokens and "埃" in tokens
    kana = tokenize("エッフェル塔")
    assert "エッフェル塔" not in kana and "ェル" in kana and "塔" in kana  # kana runs are split too


def test_bm25_ranks_the_passage_with_the_rare_term_first():
    bm25 = BM25.build(["the tower is tall", "the museum holds the mona lisa", "a bridge over the river"])
    scores = bm25.scores("Where is the Mona Lisa?")
    assert int(np.argmax(scores)) == 1
    assert bm25.scores("zeppelin").max() == 0


def test_bm25_finds_chinese_text_without_spaces():
    bm25 = BM25.build(["卢浮宫是世界上参观人数最多的博物馆", "埃菲尔铁塔高330米"])
    assert int(np.argmax(bm25.scores("铁塔多高"))) == 1


@pytest.fixture
def index(tmp_path):
    return build_index(load_tour(MINITOUR), HashingEmbedder(), tmp_path, progress=False)


def search(index, text, **kw):
    return index.search(text, HashingEmbedder().embed_queries([text])[0], **kw)


def test_search_finds_the_right_attraction_and_prefers_the_visitors_language(index):
    hits = search(index, "Mona Lisa glass pyramid", k=3, lang="de")
    assert hits[0].passage.attraction == "louvre"
    assert hits[0].passage.lang == "de"  # the German version of the same paragraph
    assert len({(h.passage.attraction, h.passage.kind, h.passage.id.rsplit("/", 1)[-1]) for h in hits}) == len(hits)


def test_filter_by_attraction(index):
    hits = search(index, "Mona Lisa", k=5, attractions=["pont-neuf"])
    assert hits and all(h.passage.attraction == "pont-neuf" for h in hits)
    assert search(index, "Mona Lisa", attractions=["no-such-place"]) == []


def test_index_round_trip_and_manifest(tmp_path, index):
    loaded = HybridIndex.load(tmp_path / "minitour")
    assert [p.id for p in loaded.passages] == [p.id for p in index.passages]
    manifest = read_manifest(tmp_path / "minitour")
    assert manifest["embedder"] == "hashing" and manifest["dim"] == 256
    assert manifest["n_passages"] == len(tour_passages(load_tour(MINITOUR)))
    assert {"faiss", "numpy", "guide"} <= set(manifest["versions"])
    assert search(loaded, "oldest bridge Seine", k=1)[0].passage.attraction == "pont-neuf"


def test_stale_index_is_rebuilt_and_fresh_one_reused(tmp_path):
    tour_dir = tmp_path / "tours" / "minitour"
    tour_dir.mkdir(parents=True)
    text = (MINITOUR / "tour.yaml").read_text()
    (tour_dir / "tour.yaml").write_text(text)
    root = tmp_path / "indexes"
    first = ensure_index(load_tour(tour_dir), HashingEmbedder(), root, progress=False)
    build_dir = (root / "minitour" / "CURRENT").read_text()
    ensure_index(load_tour(tour_dir), HashingEmbedder(), root, progress=False)
    assert (root / "minitour" / "CURRENT").read_text() == build_dir  # fresh: reused, not rebuilt
    (tour_dir / "tour.yaml").write_text(text.replace("completed in 1607", "completed in 1607 under Henri IV"))
    second = ensure_index(load_tour(tour_dir), HashingEmbedder(), root, progress=False)
    assert (root / "minitour" / "CURRENT").read_text() != build_dir
    assert any("Henri IV" in p.text for p in second.passages)
    assert not any("Henri IV" in p.text for p in first.passages)
    assert len([d for d in (root / "minitour").iterdir() if d.is_dir()]) == 1  # old builds cleaned up


def test_crash_mid_build_leaves_previous_index_usable(tmp_path, index, monkeypatch):
    before = (tmp_path / "minitour" / "CURRENT").read_text()

    def explode(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dumps", explode)
    with pytest.raises(OSError):
        index.save(tmp_path / "minitour")
    monkeypatch.undo()
    assert (tmp_path / "minitour" / "CURRENT").read_text() == before
    assert HybridIndex.load(tmp_path / "minitour").passages
    assert not [d for d in os.listdir(tmp_path / "minitour") if d.startswith(".build-")]


def test_large_corpus_uses_hnsw(monkeypatch):
    import guide.retrieval as r

    monkeypatch.setattr(r, "HNSW_THRESHOLD", 100)
    tour = load_tour(MINITOUR)
    from dataclasses import replace

    passages = [replace(p, id=f"{p.id}-{i}", attraction=f"a{i}") for i in range(10) for p in tour_passages(tour)]
    vectors = np.random.default_rng(0).standard_normal((len(passages), 256)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = HybridIndex.build(passages, HashingEmbedder(), vectors=vectors, progress=False)
    assert index.manifest["dense_index"] == "hnsw"
    hits = index.search("zzz", vectors[57], k=3)  # no word matches: the dense ranking decides
    assert hits[0].passage.id == passages[57].id and hits[0].dense > 0.99


@pytest.mark.slow
def test_cross_lingual_retrieval_with_e5(tmp_path):
    """A German or Chinese question finds the passage even where only English text covers it."""
    from guide.retrieval import load_embedder

    e5 = load_embedder("e5-small")
    tour = load_tour(MINITOUR)
    english_only = [p for p in tour_passages(tour) if p.lang == "en"]
    index = HybridIndex.build(english_only, e5, progress=False)
    for question, expected in [
        ("Wer hat die Glaspyramide entworfen?", "louvre"),
        ("Welche ist die älteste Brücke über die Seine?", "pont-neuf"),
        ("埃菲尔铁塔有多高？", "eiffel-tower"),
        ("¿Dónde está la Mona Lisa?", "louvre"),
    ]:
        hits = index.search(question, e5.embed_queries([question])[0], k=1)
        assert hits[0].passage.attraction == expected, question


def _current(root):
    folder = root / "minitour"
    return folder / (folder / "CURRENT").read_text().strip()


def test_manifest_records_every_file_and_load_checks_them(tmp_path, index):
    from guide.retrieval import verify_files

    build = _current(tmp_path)
    files = read_manifest(tmp_path / "minitour")["files"]
    assert set(files) == {"dense.faiss", "bm25.npz", "passages.jsonl"}
    assert all(f["bytes"] == (build / name).stat().st_size and len(f["sha256"]) == 64 for name, f in files.items())
    verify_files(build, files)  # as written: fine
    data = (build / "bm25.npz").read_bytes()
    (build / "bm25.npz").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="bm25.npz is .* bytes, .* were written"):
        HybridIndex.load(tmp_path / "minitour")
    (build / "bm25.npz").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, one bit flipped
    with pytest.raises(ValueError, match="bm25.npz changed since it was written"):
        HybridIndex.load(tmp_path / "minitour")
    (build / "bm25.npz").unlink()
    with pytest.raises(ValueError, match="bm25.npz is missing"):
        HybridIndex.load(tmp_path / "minitour")


def test_passages_cut_at_a_line_end_are_caught_by_the_counts(tmp_path, index):
    build = _current(tmp_path)
    manifest = json.loads((build / "manifest.json").read_text())
    del manifest["files"]  # an index written before files were recorded: only the counts can tell
    (build / "manifest.json").write_text(json.dumps(manifest))
    lines = (build / "passages.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (build / "passages.jsonl").write_text("".join(lines[: len(lines) // 2]), encoding="utf-8")
    with pytest.raises(ValueError, match="disagree on the number of passages"):
        HybridIndex.load(tmp_path / "minitour")


@pytest.mark.parametrize("name", ["dense.faiss", "bm25.npz", "passages.jsonl", "manifest.json"])
def test_truncated_index_file_is_rebuilt_by_ensure_index(tmp_path, name, caplog):
    tour = load_tour(MINITOUR)
    first = ensure_index(tour, HashingEmbedder(), tmp_path, progress=False)
    path = _current(tmp_path) / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    caplog.set_level("INFO", logger="guide.retrieval")
    again = ensure_index(tour, HashingEmbedder(), tmp_path, progress=False)
    assert "indexed tour minitour" in caplog.text
    assert [p.id for p in again.passages] == [p.id for p in first.passages]
    assert search(again, "oldest bridge Seine", k=1)[0].passage.attraction == "pont-neuf"
    assert HybridIndex.load(tmp_path / "minitour").passages  # and what is on disk now is whole


def test_lexical_support_is_a_word_in_common_with_an_attractions_texts(index):
    assert index.lexical_support("Mona Lisa", "louvre") > 0
    assert index.lexical_support("Mona Lisa", "eiffel-tower") == 0
    assert index.lexical_support("¿Qué extensión tiene hoy?", "eiffel-tower") == 0  # no word of en/de texts
    assert index.lexical_support("Mona Lisa", "no-such-attraction") == 0
