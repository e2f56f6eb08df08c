"""IVF over scalar-quantised residuals (FAISS IndexIVFScalarQuantizer), the shared body of the
`ivf_sq8` and `ivf_fp16` kinds: a quarter or half of the float32 bytes per vector in the lists,
the same nprobe knob as IVF-Flat, and an exact re-rank of the survivors."""

from __future__ import annotations

from typing import Any

import numpy as np

from plexrec.serving.index.faiss_ivf import IVFNprobe, ivf_lists, train_sample
from plexrec.serving.index.rerank import RerankedIndex


class IVFScalarQuantized(IVFNprobe, RerankedIndex):
    default_depth = 2
    quantizer_type = "QT_8bit"

    def _build(self, data: np.ndarray, width: int) -> Any:
        import faiss

        config = self.config
        nlist = ivf_lists(self.size, config)
        index = faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlatIP(width), width, nlist, getattr(faiss.ScalarQuantizer,
                                                            self.quantizer_type),
            faiss.METRIC_INNER_PRODUCT)
        index.train(train_sample(data, nlist * 40, config.seed))
        index.add(data)
        index.nprobe = config.ivf_nprobe
        return index
