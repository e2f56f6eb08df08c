"""What every candidate index answers, and exact search: the reference every approximate index is
measured against (recall@k)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

_EXACT_BLOCK_BYTES = 64 << 20


class CandidateIndex(Protocol):
    kind: str
    metrics: dict[str, float]

    @property
    def size(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [B, k'], rows [B, k']) best first, k' = min(k, size); rows are item rows of
        the snapshot (-1 pads a row FAISS could not fill)."""
        ...


def top_k_exact(vectors: np.ndarray, queries: np.ndarray, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product: one matmul + argpartition, in query blocks so the score
    matrix stays under ~64 MB whatever the corpus size."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = vectors.shape[0]
    k = min(int(k), n)
    b = queries.shape[0]
    out_scores = np.empty((b, k), dtype=np.float32)
    out_rows = np.empty((b, k), dtype=np.int64)
    if k == 0:
        return out_scores, out_rows
    block = max(1, _EXACT_BLOCK_BYTES // (4 * max(n, 1)))
    for start in range(0, b, block):
        q = queries[start:start + block]
        with np.errstate(over="ignore", invalid="ignore"):  # the server rejects such scores
            scores = q @ vectors.T
        if k < n:
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(n), (q.shape[0], n))
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        out_rows[start:start + block] = np.take_along_axis(part, order, axis=1)
        out_scores[start:start + block] = np.take_along_axis(part_scores, order, axis=1)
    return out_scores, out_rows


def recall_at_k(index: CandidateIndex, vectors: np.ndarray, queries: np.ndarray, k: int,
                exact: np.ndarray | None = None) -> float:
    """Mean |approx top-k ∩ exact top-k| / k over the queries (`exact`: precomputed rows)."""
    k = min(k, vectors.shape[0])
    if k == 0 or len(queries) == 0:
        return 1.0
    if exact is None:
        _, exact = top_k_exact(vectors, queries, k)
    _, approx = index.search(queries, k)
    hits = [len(np.intersect1d(a[a >= 0], e)) for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(hits) / k)
