"""Binary codes, as in Tencent's "Binary Embedding-based Retrieval": one sign bit a dimension
(1/32 of float32), after centring and an ITQ rotation learned at build time, searched by Hamming
distance in a FAISS IndexBinaryFlat, then an exact inner-product re-rank of the best
`k * depth` on float32. The query is rotated but not centred: q.(x - mean) orders items as q.x
does. Effort: the re-rank depth."""

from __future__ import annotations

from typing import Any

import numpy as np

from plexrec.models.vector_codecs import learn_itq_rotation
from plexrec.serving.index.faiss_ivf import train_sample
from plexrec.serving.index.rerank import RerankedIndex

_ENCODE_BLOCK = 262_144
_PARALLEL_QUERIES = 16


class BinaryIndex(RerankedIndex):
    kind = "faiss-binary"
    default_depth = 10

    def _build(self, data: np.ndarray, width: int) -> Any:
        import faiss

        if width % 8:
            raise ValueError(f"binary codes need a width divisible by 8, got {width}")
        config = self.config
        sample = train_sample(data, 50_000, config.seed)
        self._mean = sample.mean(axis=0, dtype=np.float64).astype(np.float32)
        self._rotation = (learn_itq_rotation(sample - self._mean, iterations=config.itq_iterations,
                                             seed=config.seed).T
                          if config.binary_itq else np.eye(width, dtype=np.float32))
        index = faiss.IndexBinaryFlat(width)
        index.use_heap = False  # type: ignore[attr-defined]  # counting selection: faster for big k
        for start in range(0, self.size, _ENCODE_BLOCK):
            index.add(self._codes(data[start:start + _ENCODE_BLOCK] - self._mean))
        return index

    def _codes(self, vectors: np.ndarray) -> np.ndarray:
        return np.packbits(vectors @ self._rotation >= 0, axis=1)

    @property
    def effort(self) -> int:
        return self.depth

    def set_effort(self, value: int) -> None:
        self.depth = max(1, int(value))

    def _candidates(self, queries: np.ndarray, n: int) -> np.ndarray:
        """A few queries are scanned on this thread alone: FAISS splits one query's Hamming
        scan over OpenMP threads, whose wake-ups cost more than they save, and on a loaded
        2-core machine spinning OpenMP threads made one query 10-70x slower (measured). The
        thread count is per calling thread, so other searches keep theirs."""
        import faiss

        codes = self._codes(queries)
        if len(codes) >= _PARALLEL_QUERIES:
            return np.asarray(self._index.search(codes, n)[1])
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return np.asarray(self._index.search(codes, n)[1])
        finally:
            faiss.omp_set_num_threads(threads)

    def nbytes(self) -> int:
        import faiss

        return int(faiss.serialize_index_binary(self._index).size)
