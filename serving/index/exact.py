"""Exact inner-product search: no build cost, O(items) per query; below the size threshold."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from plexrec.serving.index.base import top_k_exact


@dataclass
class ExactIndex:
    """Brute force over the memory-mapped matrix: exact, no build cost."""

    vectors: np.ndarray
    kind: str = "exact"
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.vectors.shape[0])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return top_k_exact(self.vectors, queries, k)
