"""The compressed index kinds (issue 17): each reaches recall@100 >= 0.95 against exact float32
search on a small corpus, answers with exact float32 scores after its re-rank, and `auto` keeps
IVF-Flat on clustered vectors and falls back to PQ fast-scan on isotropic ones."""

from __future__ import annotations

import numpy as np
import pytest

from plexrec.features.config import parse_section
from plexrec.features.errors import ConfigError
from plexrec.serving.index import IndexConfig, build_index, index_class, top_k_exact
from plexrec.serving.index.faiss_index import FaissIndex
from plexrec.serving.index.rerank import RerankedIndex, rerank

WIDTH = 32


def corpus(n: int, seed: int, *, clusters: int = 100, noise: float = 0.5) -> np.ndarray:
    centers = np.random.default_rng(7).normal(size=(clusters, WIDTH))
    rng = np.random.default_rng(seed)
    return (centers[rng.integers(0, clusters, n)]
            + noise * rng.normal(size=(n, WIDTH))).astype(np.float32)


ITEMS = corpus(5000, 1)
TUNE = corpus(100, 2)
HELD_OUT = corpus(50, 3)


def built(kind: str, **options: object) -> FaissIndex:
    config = IndexConfig(exact_threshold=0, kind=kind, recall_queries=100, **options)
    index = build_index(ITEMS, config, sample_queries=TUNE)
    assert isinstance(index, FaissIndex)
    return index


def check_recall_and_exact_scores(index: FaissIndex) -> None:
    """Recall@100 >= 0.95 on held-out queries; scores equal float32 inner products, best first."""
    _, exact = top_k_exact(ITEMS, HELD_OUT, 100)
    scores, rows = index.search(HELD_OUT, 100)
    recall = np.mean([len(np.intersect1d(a, e)) / 100 for a, e in zip(rows, exact, strict=True)])
    assert recall >= 0.95
    assert (rows >= 0).all()
    want = np.einsum("bkd,bd->bk", ITEMS[rows], HELD_OUT)
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    assert index.metrics["index_recall_at_100"] >= 0.95


def test_ivf_sq8_recall_and_exact_scores() -> None:
    index = built("ivf_sq8")
    assert index.kind == "faiss-ivf-sq8"
    check_recall_and_exact_scores(index)


def test_ivf_fp16_recall_and_exact_scores() -> None:
    index = built("ivf_fp16")
    assert index.kind == "faiss-ivf-fp16"
    check_recall_and_exact_scores(index)


def test_ivf_pq_recall_and_exact_scores() -> None:
    index = built("ivf_pq")
    assert index.kind == "faiss-ivf-pq"
    check_recall_and_exact_scores(index)


def test_pq_recall_exact_scores_and_sixteenth_of_float32() -> None:
    index = built("pq")
    assert index.kind == "faiss-pq"
    check_recall_and_exact_scores(index)
    assert index.nbytes() < ITEMS.nbytes / 15


@pytest.mark.parametrize("itq", [True, False])
def test_binary_codes_are_a_32nd_of_float32_and_rerank_to_095(itq: bool) -> None:
    index = built("binary", binary_itq=itq)
    assert index.kind == "faiss-binary"
    check_recall_and_exact_scores(index)
    assert index.nbytes() <= ITEMS.nbytes // 32 + 64


def test_auto_keeps_ivf_on_clustered_and_falls_back_on_isotropic() -> None:
    items = corpus(20_000, 4, clusters=50, noise=0.2)
    queries = corpus(100, 5, clusters=50, noise=0.2)
    config = IndexConfig(exact_threshold=0, recall_queries=100, auto_max_scan=0.1)
    clustered = build_index(items, config, sample_queries=queries)
    assert clustered.kind == "faiss-ivf"
    assert clustered.metrics["index_auto_ivf_scan"] <= 0.1
    rng = np.random.default_rng(6)
    iso = rng.standard_normal((20_000, WIDTH), dtype=np.float32)
    isotropic = build_index(iso, config, sample_queries=rng.standard_normal(
        (100, WIDTH), dtype=np.float32))
    assert isotropic.kind == "faiss-pq"
    assert isotropic.metrics["index_auto_ivf_recall"] < 0.95
    assert isotropic.metrics["index_recall_at_100"] >= 0.95


def test_rerank_pads_missing_candidates() -> None:
    vectors = np.eye(4, dtype=np.float32)
    query = np.array([[0.1, 0.4, 0.3, 0.2]], np.float32)
    scores, rows = rerank(vectors, query, np.array([[2, -1, 1, -1]]), 3)
    assert rows.tolist() == [[1, 2, -1]]
    np.testing.assert_allclose(scores[0, :2], [0.4, 0.3])
    assert np.isfinite(scores).all()


def test_rerank_factor_sets_the_first_stage_depth() -> None:
    index = index_class("ivf_sq8")(ITEMS, IndexConfig(kind="ivf_sq8", rerank_factor=7))
    assert isinstance(index, RerankedIndex) and index.depth == 7
    assert index_class("pq")(ITEMS, IndexConfig(kind="pq")).effort == 10


@pytest.mark.parametrize(("key", "value"), [
    ("rerank_factor", -1), ("pq_m", -2), ("itq_iterations", -1), ("auto_max_scan", 0.0),
    ("auto_max_scan", 1.5), ("auto_fallback", "auto"), ("auto_fallback", "nope"),
    ("kind", "nope"), ("ivf_nprobe", 0), ("target_recall", 1.2), ("binary_itq", "yes")])
def test_bad_index_config_values_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        parse_section(IndexConfig, {key: value}, "server.toml")


def test_pq_m_that_does_not_divide_the_width_names_the_key() -> None:
    with pytest.raises(ValueError, match="pq_m = 5"):
        index_class("pq")(ITEMS, IndexConfig(kind="pq", pq_m=5))
