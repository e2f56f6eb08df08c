"""IVF with int8 scalar-quantised vectors (one byte a dimension, per-dimension ranges learned at
build time) and an exact float32 re-rank of 2k candidates: the int8 snapshot's index."""

from __future__ import annotations

from plexrec.serving.index.ivf_sq import IVFScalarQuantized


class IVFSQ8Index(IVFScalarQuantized):
    kind = "faiss-ivf-sq8"
    quantizer_type = "QT_8bit"
