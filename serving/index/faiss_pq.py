"""PQ fast-scan over the whole corpus, then an exact re-rank: the index for vectors without
cluster structure. A scan of 4-bit codes costs about the same fraction of exact search on
every corpus (1M x 64 isotropic: recall@100 >= 0.95 at well over 10x exact QPS, where IVF-Flat
needs half the lists for 1.4x), and training takes seconds. Effort: the re-rank depth."""

from __future__ import annotations

from typing import Any

import numpy as np

from plexrec.serving.index.faiss_ivf import train_sample
from plexrec.serving.index.pq_codes import pq_subquantizers
from plexrec.serving.index.rerank import RerankedIndex


class PQIndex(RerankedIndex):
    kind = "faiss-pq"
    default_depth = 10

    def _build(self, data: np.ndarray, width: int) -> Any:
        import faiss

        m = pq_subquantizers(width, self.config)
        index = faiss.IndexPQFastScan(width, m, 4, faiss.METRIC_INNER_PRODUCT)
        index.train(train_sample(data, 50_000, self.config.seed))
        index.add(data)
        return index

    @property
    def effort(self) -> int:
        return self.depth

    def set_effort(self, value: int) -> None:
        self.depth = max(1, int(value))
