"""The local memory-mapped snapshot as a store: one searchsorted and one gather, no per-row
objects (~10-30 us a batch). Every server replica holds the versions it serves on disk, so this
store answers whenever the online store cannot."""

from __future__ import annotations

import numpy as np

from plexrec.serving import redis_keys as rk
from plexrec.serving.stores.base import StoreUnavailable, VersionView


def _unavailable(view: VersionView) -> StoreUnavailable:
    return StoreUnavailable(f"version {view.version} is not on this server's disk and the "
                            "online store is unavailable")


class SnapshotStore:
    def __init__(self) -> None:
        self.reads = 0

    def _read(self, view: VersionView, entity: str, ids: np.ndarray, decode: bool
              ) -> tuple[np.ndarray, np.ndarray]:
        snap = view.snapshot
        if snap is None:
            raise _unavailable(view)
        if entity not in snap.entities:
            empty = (np.empty((0, view.width), dtype="<f4") if decode
                     else np.empty((0, view.row_bytes), dtype=np.uint8))
            return np.zeros(ids.size, dtype=bool), empty
        rows = snap.row_of(entity, ids)
        found = rows >= 0
        hit_rows = rows if found.all() else rows[found]
        self.reads += hit_rows.size
        read = snap.decode_rows if decode else snap.stored_rows
        return found, read(entity, hit_rows)

    def lookup_now(self, view: VersionView, entity: str, ids: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(found, vectors) from the memory map; StoreUnavailable without a local snapshot."""
        return self._read(view, entity, ids, decode=True)

    def stored_now(self, view: VersionView, entity: str, ids: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(found, stored rows uint8 [found, row_bytes]) from the memory map."""
        return self._read(view, entity, ids, decode=False)

    async def lookup(self, view: VersionView, entity: str, ids: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        return self.lookup_now(view, entity, np.asarray(ids, dtype=np.int64).reshape(-1))

    def rows(self, view: VersionView, entity: str, ids: np.ndarray, *,
             required: bool) -> list[bytes | None]:
        """Raw rows (None: absent), the form the online store's cache takes; without a local
        snapshot all None, or StoreUnavailable when nothing else can answer (`required`)."""
        snap = view.snapshot
        if snap is None:
            if required:
                raise _unavailable(view)
            return [None] * ids.size
        if entity not in snap.entities:
            return [None] * ids.size
        rows = snap.row_of(entity, ids)
        found = rows >= 0
        blobs = iter(rk.encode_rows(snap.stored_rows(entity, rows[found])))
        self.reads += int(found.sum())
        return [next(blobs) if f else None for f in found.tolist()]
