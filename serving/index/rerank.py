"""Two-stage search for the compressed kinds: a cheap first stage over codes proposes
`k * depth` candidates, and an exact inner product over the float32 item matrix the server
already holds orders them. The answer's scores are then exact float32 scores, and the index keeps
no float32 copy of its own (FAISS's IndexRefineFlat would store a second one)."""

from __future__ import annotations

import numpy as np

from plexrec.serving.index.config import IndexConfig
from plexrec.serving.index.faiss_index import FaissIndex

_PAD_SCORE = np.finfo(np.float32).min


def rerank(vectors: np.ndarray, queries: np.ndarray, candidates: np.ndarray, k: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """(scores [B, k], rows [B, k]) best first: the candidates (-1 = none; no row twice, as FAISS
    returns them) ordered by their exact inner product with each query. Fewer than k candidates
    are padded with row -1 and FAISS's finite pad score, which the server's overflow check lets
    through."""
    b = queries.shape[0]
    out_scores = np.full((b, k), _PAD_SCORE, dtype=np.float32)
    out_rows = np.full((b, k), -1, dtype=np.int64)
    for i in range(b):
        rows = candidates[i][candidates[i] >= 0]
        if rows.size == 0:
            continue
        with np.errstate(over="ignore", invalid="ignore"):  # the server rejects such scores
            scores = np.take(vectors, rows, axis=0) @ queries[i]
        take = min(k, rows.size)
        part = np.argpartition(scores, -take)[-take:] if take < rows.size else np.arange(take)
        order = part[np.argsort(-scores[part], kind="stable")]
        out_scores[i, :take] = scores[order]
        out_rows[i, :take] = rows[order]
    return out_scores, out_rows


class RerankedIndex(FaissIndex):
    """A FAISS index over compressed codes whose top `k * depth` candidates are re-ranked
    exactly on the float32 rows. `default_depth` is the kind's own candidate multiplier, used
    when `[index] rerank_factor` is 0."""

    default_depth = 4

    def __init__(self, vectors: np.ndarray, config: IndexConfig) -> None:
        self._vectors = vectors
        self.depth = config.rerank_factor or self.default_depth
        super().__init__(vectors, config)

    def _candidates(self, queries: np.ndarray, n: int) -> np.ndarray:
        """Rows [B, n] of the first stage's best n (-1 pads)."""
        _, rows = self._index.search(queries, n)
        return np.asarray(rows)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        candidates = self._candidates(queries, min(self.size, k * self.depth))
        return rerank(self._vectors, queries, candidates, k)
