"""IVF-Flat, the default above the exact threshold: on 1M x 64 it builds in ~8 s on 2 cores
(sqrt(n) lists) against ~4 min for HNSW (M=32), which matters for hot swaps, and its recall
rises with nprobe."""

from __future__ import annotations

from typing import Any

import numpy as np

from plexrec.serving.index.faiss_index import FaissIndex


class IVFIndex(FaissIndex):
    kind = "faiss-ivf"

    def _build(self, data: np.ndarray, width: int) -> Any:
        import faiss

        config = self.config
        nlist = config.ivf_nlist or max(1, min(int(np.sqrt(self.size)), self.size // 39))
        quantizer = faiss.IndexFlatIP(width)
        index = faiss.IndexIVFFlat(quantizer, width, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(config.seed)
        train_n = min(self.size, max(nlist * 40, 10_000))
        index.train(data[np.sort(rng.choice(self.size, train_n, replace=False))])
        index.add(data)
        index.nprobe = config.ivf_nprobe
        return index

    @property
    def effort(self) -> int:
        return int(self._index.nprobe)

    def set_effort(self, value: int) -> None:
        self._index.nprobe = int(min(value, self._index.nlist))
