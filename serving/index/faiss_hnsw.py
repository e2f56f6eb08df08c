"""HNSW over inner product. Slow to build (~4 min on 1M x 64, M=32) and measured at a recall@100
plateau of ~0.92 on the benchmark corpus that no efSearch lifted; on 1M x 64 isotropic vectors
(M=16) it stayed below 0.65 at efSearch 1024, on raw, normalised or L2-reduced vectors alike.
Kept for corpora where its query speed pays; `auto` never picks it."""

from __future__ import annotations

from typing import Any

import numpy as np

from plexrec.serving.index.faiss_index import FaissIndex


class HNSWIndex(FaissIndex):
    kind = "faiss-hnsw"

    def _build(self, data: np.ndarray, width: int) -> Any:
        import faiss

        config = self.config
        index = faiss.IndexHNSWFlat(width, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        index.add(data)
        index.hnsw.efSearch = config.hnsw_ef_search
        return index

    @property
    def effort(self) -> int:
        return int(self._index.hnsw.efSearch)

    def set_effort(self, value: int) -> None:
        self._index.hnsw.efSearch = int(value)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k <= self._index.hnsw.efSearch:
            return super()._search(queries, k)
        import faiss

        params = faiss.SearchParametersHNSW(efSearch=k)  # type: ignore[attr-defined]
        result: tuple[np.ndarray, np.ndarray] = self._index.search(queries, k, params=params)
        return result
