"""The default kind: IVF-Flat where the corpus has the cluster structure IVF exploits, and the
`auto_fallback` kind (PQ fast-scan + re-rank) where it has not. The choice is made on the
measured nprobe that reaches the target recall on the build's recall queries: an IVF that must
scan more than `auto_max_scan` of the corpus cannot be much faster than exact search."""

from __future__ import annotations

import logging
import math

import numpy as np

from plexrec.serving.index.config import IndexConfig
from plexrec.serving.index.faiss_index import FaissIndex
from plexrec.serving.index.faiss_ivf import IVFIndex

log = logging.getLogger(__name__)


class AutoIndex(IVFIndex):
    """IVF-Flat whose nprobe stops at `auto_max_scan` of the lists; `replacement` then builds
    the fallback when that did not reach the target recall."""

    def __init__(self, vectors: np.ndarray, config: IndexConfig) -> None:
        self._vectors = vectors
        super().__init__(vectors, config)
        self.set_effort(self.effort)

    @property
    def max_nprobe(self) -> int:
        return max(1, math.floor(self.config.auto_max_scan * self._index.nlist))

    def set_effort(self, value: int) -> None:
        super().set_effort(min(value, self.max_nprobe))

    def replacement(self, recall: float) -> FaissIndex | None:
        self.metrics["index_auto_ivf_recall"] = recall
        self.metrics["index_auto_ivf_scan"] = self.effort / self._index.nlist
        if recall >= self.config.target_recall:
            return None
        from plexrec.serving.index import index_class

        log.info("auto: IVF reaches recall %.4f at nprobe %d of %d lists (the cap, %.0f%% of "
                 "the corpus); building %s instead", recall, self.effort, self._index.nlist,
                 100 * self.config.auto_max_scan, self.config.auto_fallback)
        chosen: FaissIndex = index_class(self.config.auto_fallback)(self._vectors, self.config)
        own = chosen.metrics["index_build_seconds"]
        chosen.metrics.update(self.metrics)
        chosen.metrics["index_build_seconds"] = own + self.metrics["index_build_seconds"]
        return chosen
