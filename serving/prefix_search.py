"""Retrieval at a Matryoshka prefix width: score items by the first `width` coordinates only.

The version's candidate index is built on the full vectors, and neither its coarse quantiser nor
a compressed or binary code says anything reliable about a prefix, so a prefix query is answered
by exact search (serving.index.top_k_exact) over a contiguous copy of the decoded item matrix's
first `width` columns, each row L2-normalised again: the two-tower trains prefixes as cosines
(models/two_tower.prefix), and re-normalising the query would change no order. The copy is made on first use and kept per width, the most recently used
`max_widths` of them (each costs items x width x 4 bytes), so repeated queries at a width pay
one matmul, not a strided gather."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from plexrec.serving.index import top_k_exact

MAX_WIDTHS = 4


class PrefixSearch:
    """Exact top-k by the inner product of prefixes, over one version's items."""

    def __init__(self, items: np.ndarray, max_widths: int = MAX_WIDTHS) -> None:
        self.items = items
        self.max_widths = max_widths
        self._prefixes: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def matrix(self, width: int) -> np.ndarray:
        """float32 [items, width], unit rows, C-contiguous, cached."""
        with self._lock:
            mat = self._prefixes.get(width)
            if mat is not None:
                self._prefixes.move_to_end(width)
                return mat
        cut = np.asarray(self.items, dtype=np.float32)[:, :width]
        norms = np.linalg.norm(cut, axis=1, keepdims=True)
        mat = np.ascontiguousarray(cut / np.where(norms > 0, norms, 1.0))
        with self._lock:
            self._prefixes[width] = mat
            while len(self._prefixes) > self.max_widths:
                self._prefixes.popitem(last=False)
        return mat

    def search(self, queries: np.ndarray, k: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [B, k'], rows [B, k']) best first, like CandidateIndex.search."""
        return top_k_exact(self.matrix(width), np.asarray(queries)[:, :width], k)
