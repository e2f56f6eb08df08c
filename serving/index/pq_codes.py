"""The product-quantiser shape shared by `pq` and `ivf_pq`: 4-bit codes for FAISS's fast-scan
kernels (SIMD table look-ups, several times faster to scan than 8-bit PQ)."""

from __future__ import annotations

from plexrec.serving.index.config import IndexConfig


def pq_subquantizers(width: int, config: IndexConfig) -> int:
    """`pq_m`, or width/2 sub-quantisers of 4 bits: width/4 bytes a vector, 1/16 of float32.
    A `pq_m` that does not divide the width is a ValueError naming the key."""
    m = config.pq_m or max(1, width // 2)
    if width % m:
        raise ValueError(f"[index] pq_m = {m}: must divide the vector width {width}")
    return m
