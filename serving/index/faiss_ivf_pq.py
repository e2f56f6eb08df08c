"""IVF-PQ with 4-bit fast-scan codes and an exact re-rank: the high-compression end (width/4
bytes of code a vector at the default `pq_m`, plus FAISS's 8-byte id per list entry). Effort:
nprobe; re-rank depth `rerank_factor` (default 20k candidates for k: 4-bit residual
codes of isotropic vectors need it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from plexrec.serving.index.faiss_ivf import IVFNprobe, ivf_lists, train_sample
from plexrec.serving.index.pq_codes import pq_subquantizers
from plexrec.serving.index.rerank import RerankedIndex


class IVFPQIndex(IVFNprobe, RerankedIndex):
    kind = "faiss-ivf-pq"
    default_depth = 20

    def _build(self, data: np.ndarray, width: int) -> Any:
        import faiss

        config = self.config
        nlist = ivf_lists(self.size, config)
        m = pq_subquantizers(width, config)
        index = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(width), width, nlist, m, 4,
                                         faiss.METRIC_INNER_PRODUCT)
        index.train(train_sample(data, nlist * 40, config.seed))
        index.add(data)
        index.nprobe = config.ivf_nprobe
        return index
