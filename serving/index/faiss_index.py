"""What the FAISS indexes share: build timing, the effort knob's interface, search, size, and the
hook through which a kind hands over to another once its recall has been measured."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from plexrec.serving.index.config import IndexConfig


class FaissIndex(ABC):
    """A FAISS inner-product index over the item matrix; subclasses build it and own the
    search-time effort knob (efSearch for HNSW, nprobe for IVF)."""

    kind = "faiss"

    def __init__(self, vectors: np.ndarray, config: IndexConfig) -> None:
        self.config = config
        self.size = int(vectors.shape[0])
        data = np.ascontiguousarray(vectors, dtype=np.float32)
        started = time.perf_counter()
        self._index: Any = self._build(data, int(vectors.shape[1]))
        self.metrics: dict[str, float] = {"index_build_seconds": time.perf_counter() - started}

    @abstractmethod
    def _build(self, data: np.ndarray, width: int) -> Any: ...

    @property
    @abstractmethod
    def effort(self) -> int: ...

    @abstractmethod
    def set_effort(self, value: int) -> None: ...

    def replacement(self, recall: float) -> FaissIndex | None:
        """Another index to use instead, given this one's tuned recall (`auto` hands over when
        IVF would have to scan too much of the corpus); None keeps this one."""
        return None

    def nbytes(self) -> int:
        """Bytes of the serialised FAISS index (codes, ids, centroids); not counted: the float32
        matrix the server holds anyway, which the re-ranking kinds read."""
        import faiss

        return int(faiss.serialize_index(self._index).size)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        result: tuple[np.ndarray, np.ndarray] = self._index.search(queries, k)
        return result

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(int(k), self.size)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if k == 0:
            return (np.empty((queries.shape[0], 0), np.float32),
                    np.empty((queries.shape[0], 0), np.int64))
        scores, rows = self._search(queries, k)
        return scores, rows.astype(np.int64, copy=False)
