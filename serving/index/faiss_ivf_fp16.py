"""IVF with float16 vectors in the lists and an exact float32 re-rank of 2k candidates: the
float16 snapshot's index, half the bytes of IVF-Flat at the same recall."""

from __future__ import annotations

from plexrec.serving.index.ivf_sq import IVFScalarQuantized


class IVFFP16Index(IVFScalarQuantized):
    kind = "faiss-ivf-fp16"
    quantizer_type = "QT_fp16"
