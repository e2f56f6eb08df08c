"""Candidate indexes: exact search is exact; FAISS above the threshold keeps recall@k >= 0.95."""

from __future__ import annotations

import numpy as np
import pytest

from plexrec.serving.index import ExactIndex, IndexConfig, build_index, index_class, top_k_exact
from plexrec.serving.index.faiss_index import FaissIndex
from plexrec.serving.index_registry import INDEXES


def clustered(n: int, width: int, seed: int, clusters: int = 1000) -> np.ndarray:
    """Embedding-like data: many clusters plus noise (uniform random vectors have no
    neighbourhood structure for any ANN index to exploit)."""
    centers = np.random.default_rng(99).normal(size=(clusters, width))
    rng = np.random.default_rng(seed)
    return (centers[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, width))).astype(
        np.float32)


def test_exact_matches_brute_force_order() -> None:
    rng = np.random.default_rng(1)
    items = rng.normal(size=(500, 16)).astype(np.float32)
    queries = rng.normal(size=(7, 16)).astype(np.float32)
    scores, rows = top_k_exact(items, queries, 20)
    full = queries @ items.T
    for q in range(7):
        want = np.argsort(-full[q], kind="stable")[:20]
        np.testing.assert_array_equal(rows[q], want)
        np.testing.assert_allclose(scores[q], full[q, want], rtol=1e-6)


def test_k_larger_than_corpus_returns_everything_sorted() -> None:
    items = np.eye(4, dtype=np.float32)
    scores, rows = ExactIndex(items).search(np.array([[0.1, 0.4, 0.3, 0.2]], np.float32), 10)
    assert rows.tolist() == [[1, 2, 3, 0]]
    assert scores.shape == (1, 4)


def test_small_corpus_is_exact_large_is_faiss() -> None:
    items = clustered(3000, 16, 0)
    assert build_index(items, IndexConfig(exact_threshold=5000)).kind == "exact"
    index = build_index(items, IndexConfig(exact_threshold=1000, kind="ivf"))
    assert index.kind == "faiss-ivf"
    assert "index_recall_at_100" in index.metrics


@pytest.mark.parametrize("kind", tuple(INDEXES))
def test_faiss_recall_at_100_above_095(kind: str) -> None:
    items = clustered(20_000, 64, 2, clusters=200)
    queries = clustered(100, 64, 3, clusters=200)
    config = IndexConfig(exact_threshold=1000, kind=kind, recall_queries=100)
    index = build_index(items, config, sample_queries=queries)
    assert isinstance(index, FaissIndex)
    _, exact = top_k_exact(items, queries, 100)
    _, approx = index.search(queries, 100)
    recall = np.mean([len(np.intersect1d(a, e)) / 100 for a, e in zip(approx, exact,
                                                                       strict=True)])
    assert recall >= 0.95
    assert index.metrics["index_recall_at_100"] == pytest.approx(recall)


def test_hnsw_handles_k_above_ef_search() -> None:
    items = clustered(5000, 8, 4)
    index = index_class("hnsw")(items, IndexConfig(exact_threshold=10, kind="hnsw",
                                                      hnsw_ef_search=16))
    _, rows = index.search(items[:2], 300)
    assert rows.shape == (2, 300)
    assert (rows >= 0).all() and len(np.unique(rows[0])) == 300


def test_ivf_search_effort_is_raised_until_target_recall() -> None:
    items = clustered(20_000, 64, 5, clusters=200)
    queries = clustered(100, 64, 6, clusters=200)
    config = IndexConfig(exact_threshold=1000, kind="ivf", ivf_nlist=512, ivf_nprobe=1,
                         recall_queries=100)
    index = build_index(items, config, sample_queries=queries)
    assert isinstance(index, FaissIndex)
    assert index.effort > 1 and index.metrics["index_search_effort"] == index.effort
    assert index.metrics["index_recall_at_100"] >= 0.95
    capped = build_index(items, config.model_copy(update={"max_search_effort": 1}),
                         sample_queries=queries)
    assert capped.effort == 1 and capped.metrics["index_recall_at_100"] < 0.95
