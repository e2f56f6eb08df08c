"""Candidate indexes over item vectors: exact inner product for small corpora, FAISS above a
size threshold (exact search costs O(items) per query, FAISS roughly O(log items)). A FAISS index
is always built together with a recall measurement against exact search, so an index that
quietly loses good candidates shows up in the logs and in GetModelInfo. The kinds are listed in
serving/index_registry.py."""

from __future__ import annotations

import importlib
import logging
import time

import numpy as np

from plexrec.serving.index.base import CandidateIndex, recall_at_k, top_k_exact
from plexrec.serving.index.config import IndexConfig
from plexrec.serving.index.exact import ExactIndex
from plexrec.serving.index.faiss_index import FaissIndex
from plexrec.serving.index_registry import INDEXES

log = logging.getLogger(__name__)

__all__ = ["CandidateIndex", "ExactIndex", "FaissIndex", "IndexConfig", "build_index",
           "index_class", "recall_at_k", "top_k_exact", "tune_effort"]


def index_class(kind: str) -> type:
    module, _, name = INDEXES[kind].partition(":")
    cls: type = getattr(importlib.import_module(module), name)
    return cls


def build_index(items: np.ndarray, config: IndexConfig,
                sample_queries: np.ndarray | None = None) -> CandidateIndex:
    """Exact below the threshold, FAISS above it. The FAISS index's recall@k is measured on
    `sample_queries` (e.g. user vectors; perturbed item vectors when none are given), and its
    search effort (efSearch / nprobe / re-rank depth) is doubled until it reaches
    `target_recall` or `max_search_effort`: the right effort depends on the corpus, which is
    only known here. A kind may then hand over to another (`auto`), which is tuned the same way."""
    if items.shape[0] < config.exact_threshold:
        return ExactIndex(items)
    index: FaissIndex = index_class(config.kind)(items, config)
    queries = _recall_queries(items, config, sample_queries)
    started = time.perf_counter()
    k = min(config.recall_k, index.size)
    _, exact = top_k_exact(items, queries, k)
    recall = tune_effort(index, items, queries, exact, config)
    replacement = index.replacement(recall)
    if replacement is not None:
        index = replacement
        recall = tune_effort(index, items, queries, exact, config)
    index.metrics[f"index_recall_at_{config.recall_k}"] = recall
    index.metrics["index_recall_queries"] = float(len(queries))
    index.metrics["index_search_effort"] = float(index.effort)
    log.info("built %s index over %d items in %.1fs; recall@%d vs exact = %.4f at effort %d "
             "(%d queries, %.1fs)", index.kind, index.size, index.metrics["index_build_seconds"],
             config.recall_k, recall, index.effort, len(queries), time.perf_counter() - started)
    if recall < config.target_recall:
        log.warning("%s index recall@%d %.4f is below the target %.2f even at effort %d",
                    index.kind, config.recall_k, recall, config.target_recall, index.effort)
    return index


def tune_effort(index: FaissIndex, items: np.ndarray, queries: np.ndarray, exact: np.ndarray,
                config: IndexConfig) -> float:
    """Doubles the index's effort until recall@k against `exact` reaches the target, the effort
    reaches `max_search_effort` or the index refuses a higher one; returns the final recall."""
    k = exact.shape[1]
    recall = recall_at_k(index, items, queries, k, exact)
    while recall < config.target_recall and index.effort * 2 <= config.max_search_effort:
        previous = index.effort
        index.set_effort(previous * 2)
        if index.effort == previous:
            break
        recall = recall_at_k(index, items, queries, k, exact)
        log.info("%s: effort %d -> %d, recall@%d = %.4f", index.kind, previous, index.effort,
                 k, recall)
    return recall


def _recall_queries(items: np.ndarray, config: IndexConfig,
                    sample_queries: np.ndarray | None) -> np.ndarray:
    rng = np.random.default_rng(config.seed)
    if sample_queries is not None and len(sample_queries) > 0:
        pick = rng.choice(len(sample_queries), min(config.recall_queries, len(sample_queries)),
                          replace=False)
        return np.asarray(sample_queries[np.sort(pick)], dtype=np.float32)
    pick = np.sort(rng.choice(items.shape[0], min(config.recall_queries, items.shape[0]),
                              replace=False))
    base = np.asarray(items[pick], dtype=np.float32)
    scale = float(np.std(base)) or 1.0
    return base + rng.normal(0.0, 0.5 * scale, size=base.shape).astype(np.float32)
