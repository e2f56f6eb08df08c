"""The store the gRPC service reads: an online store (Redis) in front, the local snapshot behind.

Read path for a batch of ids of one version and entity:
1. published version: the online store's published rows (one round trip);
2. ids still missing: the online store's write-back cache;
3. still missing: rows of the local snapshot, then written back to the cache.

Concurrent misses of the same (version, entity, id) load once (single flight). An online-store
failure trips a circuit breaker: for its cooldown every look-up goes straight to the snapshot,
then the online store is tried again. Only when it fails and the version has no local snapshot
is the look-up unavailable.

`prefer_snapshot=True` inverts the order for versions on local disk (the online store only for
versions that are not): the memory map answers in ~10-30 us where the Redis round trip costs
~75-230 us in-process; both hold the same bytes (the snapshot is sha256-verified at load). The
price: reads then touch this replica's page cache and the online store's hit statistics no
longer reflect this replica's traffic."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, cast

import numpy as np

from plexrec.serving.stores.base import (
    OnlineStore,
    OnlineStoreError,
    StoreCorrupt,
    StoreStats,
    StoreUnavailable,
    VersionView,
)
from plexrec.serving.stores.breaker import CircuitBreaker
from plexrec.serving.stores.snapshot import SnapshotStore

log = logging.getLogger(__name__)


def _all_rows(blobs: list[Any], row_bytes: int) -> bool:
    """True when every value is a full vector (no miss, no truncated or foreign value)."""
    return None not in blobs and set(map(len, blobs)) == {row_bytes}


def _usable(view: VersionView, values: list[bytes | None]) -> list[bool]:
    """Which values are whole rows whose content passes the codec's check (a scale that is not
    finite and > 0 is as unusable as a truncated value)."""
    row_bytes = view.row_bytes
    ok = [v is not None and len(v) == row_bytes for v in values]
    whole = [i for i, good in enumerate(ok) if good]
    if whole:
        mat = np.frombuffer(b"".join(cast(bytes, values[i]) for i in whole),
                            dtype=np.uint8).reshape(len(whole), row_bytes)
        for j in np.flatnonzero(view.codec.bad_rows(mat, view.width)).tolist():
            ok[whole[j]] = False
    return ok


def _corrupt_error(view: VersionView, entity: str, ids: list[int]) -> StoreCorrupt:
    shown = ", ".join(map(str, ids[:5])) + (", ..." if len(ids) > 5 else "")
    return StoreCorrupt(f"Redis holds malformed vectors of version {view.version} ({entity} ids "
                        f"{shown}; each must be {view.row_bytes} bytes of {view.codec.name}"
                        f"{' with a finite scale > 0' if view.codec.has_scale else ''}) and "
                        "this server has no local copy to serve them from")


class FallbackStore:
    """Batch look-ups of (version, entity, ids) -> found mask + vectors, in request order."""

    def __init__(self, online: OnlineStore | None, *, breaker_cooldown_s: float,
                 prefer_snapshot: bool = False, snapshot: SnapshotStore | None = None) -> None:
        self.online = online
        self.snapshot = snapshot or SnapshotStore()
        self.prefer_snapshot = prefer_snapshot
        self.breaker = CircuitBreaker(breaker_cooldown_s)
        self._inflight: dict[tuple[str, str, int], asyncio.Future] = {}
        self._writebacks: set[asyncio.Task] = set()
        self._loads: set[asyncio.Task] = set()
        self._writing: set[tuple[str, str, int]] = set()
        self._stats = {"redis_hits": 0, "cache_hits": 0, "redis_errors": 0,
                       "redis_malformed": 0}
        self._reported: set[tuple[str, str, str]] = set()

    @property
    def online_usable(self) -> bool:
        return self.online is not None and not self.breaker.is_open

    def stats(self) -> StoreStats:
        return StoreStats(**self._stats, snapshot_reads=self.snapshot.reads,
                          breaker_open=self.breaker.is_open)

    async def lookup(self, view: VersionView, entity: str, ids: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """(found bool [n], vectors float32 [found.sum(), width]) for ids in request order
        (duplicates allowed), decoded from the version's stored dtype. Raises StoreUnavailable
        when nothing can answer.

        The hot paths (all ids published online, or all read from the local snapshot) are
        vectorised: one gather or one join, no per-id Python work beyond the request."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if self._snapshot_first(view):
            return self.snapshot.lookup_now(view, entity, ids)
        found, rows = await self._online_rows(view, entity, ids)
        return found, view.codec.decode_rows(rows, view.width, view.rotation)

    async def lookup_stored(self, view: VersionView, entity: str, ids: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray]:
        """(found bool [n], stored rows uint8 [found.sum(), row_bytes]) in request order: the
        codes and scales as Redis holds them, for clients that decode themselves."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if self._snapshot_first(view):
            return self.snapshot.stored_now(view, entity, ids)
        return await self._online_rows(view, entity, ids)

    def _snapshot_first(self, view: VersionView) -> bool:
        return not self.online_usable or (self.prefer_snapshot and view.snapshot is not None)

    async def _online_rows(self, view: VersionView, entity: str, ids: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
        online = cast(OnlineStore, self.online)
        n = ids.size
        row_bytes = view.row_bytes
        blobs: list[bytes | None] = [None] * n
        if view.published:
            try:
                order, values = await online.read_published(view, entity, ids)
            except OnlineStoreError as exc:
                self._online_failed(exc)
                return self.snapshot.stored_now(view, entity, ids)
            if _all_rows(values, row_bytes):
                mat = np.frombuffer(b"".join(cast(list[bytes], values)),
                                    dtype=np.uint8).reshape(n, row_bytes)
                if not view.codec.bad_rows(mat, view.width).any():
                    self._stats["redis_hits"] += n
                    if order is not None:
                        out = np.empty_like(mat)
                        out[order] = mat
                        mat = out
                    return np.ones(n, dtype=bool), mat
            positions = range(n) if order is None else order.tolist()
            malformed: list[int] = []
            for pos, v, ok in zip(positions, values, _usable(view, values), strict=True):
                if ok:
                    blobs[pos] = v
                elif v is not None:
                    malformed.append(int(ids[pos]))
            self._stats["redis_hits"] += n - blobs.count(None)
            if malformed:
                self._malformed(view, entity, "published", malformed)
                if view.snapshot is None:
                    raise _corrupt_error(view, entity, malformed)
        miss_pos = [i for i, b in enumerate(blobs) if b is None]
        uniq, inverse = np.unique(ids[miss_pos], return_inverse=True)
        loaded = await self._load_misses(view, entity, uniq)
        for pos, j in zip(miss_pos, inverse.tolist(), strict=True):
            blobs[pos] = loaded[j]
        found = np.fromiter((b is not None for b in blobs), dtype=bool, count=n)
        mat = np.frombuffer(b"".join(b for b in blobs if b is not None),
                            dtype=np.uint8).reshape(-1, row_bytes)
        return found, mat

    async def _load_misses(self, view: VersionView, entity: str, ids: np.ndarray
                           ) -> list[bytes | None]:
        """Single flight: the first request for a key loads it, concurrent ones await it.

        The load runs in its own task and every request awaits through asyncio.shield, so a
        cancelled request (deadline, disconnect), owner or waiter, neither aborts the load
        nor cancels the future the other requests wait on."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future] = []
        mine: list[int] = []
        for pos, id_ in enumerate(ids.tolist()):
            key = (view.version, entity, id_)
            fut = self._inflight.get(key)
            if fut is None:
                fut = loop.create_future()
                self._inflight[key] = fut
                mine.append(pos)
            futures.append(fut)
        if mine:
            own_ids = ids[mine]
            task = asyncio.create_task(self._load(view, entity, own_ids))
            self._loads.add(task)
            task.add_done_callback(self._loads.discard)
            task.add_done_callback(functools.partial(
                self._settle, view.version, entity, own_ids.tolist(),
                [futures[pos] for pos in mine]))
            await asyncio.shield(task)
        return [await asyncio.shield(f) for f in futures]

    def _settle(self, version: str, entity: str, own_ids: list[int],
                futures: list[asyncio.Future], task: asyncio.Task) -> None:
        """Fills the waiters' futures from the load task, whatever became of its owner."""
        for id_, fut in zip(own_ids, futures, strict=True):
            if self._inflight.get((version, entity, id_)) is fut:
                del self._inflight[(version, entity, id_)]
        if task.cancelled():
            exc: BaseException | None = StoreUnavailable(
                f"look-up of {entity} ids of version {version} was cancelled")
        else:
            exc = task.exception()
            if exc is not None and not isinstance(exc, StoreUnavailable):
                exc = StoreUnavailable(f"look-up of {entity} ids of version {version} "
                                       f"failed: {type(exc).__name__}: {exc}")
        values = task.result() if exc is None else [None] * len(futures)
        for fut, value in zip(futures, values, strict=True):
            if fut.done():
                continue
            if exc is None:
                fut.set_result(value)
            else:
                fut.set_exception(exc)
                fut.exception()

    async def _load(self, view: VersionView, entity: str, ids: np.ndarray
                    ) -> list[bytes | None]:
        values: list[bytes | None] = [None] * ids.size
        online_ok = self.online_usable
        if online_ok:
            try:
                values = await cast(OnlineStore, self.online).read_cache(view, entity, ids)
                usable = _usable(view, values)
                bad = [int(i) for i, v, ok in zip(ids.tolist(), values, usable, strict=True)
                       if v is not None and not ok]
                if bad:
                    self._malformed(view, entity, "cached", bad)
                    values = [v if ok else None for v, ok in zip(values, usable, strict=True)]
                self._stats["cache_hits"] += sum(v is not None for v in values)
            except OnlineStoreError as exc:
                self._online_failed(exc)
                online_ok = False
        miss = [i for i, v in enumerate(values) if v is None]
        if not miss:
            return values
        fresh = self.snapshot.rows(view, entity, ids[miss], required=not online_ok)
        writes: list[tuple[int, bytes]] = []
        for i, blob in zip(miss, fresh, strict=True):
            values[i] = blob
            if blob is not None:
                writes.append((int(ids[i]), blob))
        if writes and online_ok:
            self._write_back(view, entity, writes)
        return values

    def _write_back(self, view: VersionView, entity: str, writes: list[tuple[int, bytes]]) -> None:
        todo = [(i, b) for i, b in writes if (view.version, entity, i) not in self._writing]
        if not todo:
            return
        marks = [(view.version, entity, i) for i, _ in todo]
        self._writing.update(marks)
        task = asyncio.create_task(self._do_write_back(view, entity, todo, marks))
        self._writebacks.add(task)
        task.add_done_callback(self._writebacks.discard)

    async def _do_write_back(self, view: VersionView, entity: str,
                             todo: list[tuple[int, bytes]], marks: list[Any]) -> None:
        try:
            await cast(OnlineStore, self.online).write_cache(view, entity, todo)
        except OnlineStoreError as exc:
            self._online_failed(exc)
        finally:
            self._writing.difference_update(marks)

    def _malformed(self, view: VersionView, entity: str, where: str, ids: list[int]) -> None:
        """Counted every time, logged once per version, entity and kind of value."""
        self._stats["redis_malformed"] += len(ids)
        key = (view.version, entity, where)
        if key not in self._reported:
            self._reported.add(key)
            log.error("Redis holds %d malformed %s %s vectors of version %s (expected %d bytes "
                      "of %s with a valid scale; first id %d); %s", len(ids), where, entity,
                      view.version, view.row_bytes, view.codec.name, ids[0],
                      "serving them from the local snapshot" if view.snapshot is not None
                      else "answering DATA_LOSS for them")

    def _online_failed(self, exc: BaseException) -> None:
        self._stats["redis_errors"] += 1
        self.breaker.trip(exc)

    async def close(self) -> None:
        if self._loads:
            await asyncio.gather(*self._loads, return_exceptions=True)
        if self._writebacks:
            await asyncio.gather(*self._writebacks, return_exceptions=True)
        if self.online is not None:
            await self.online.close()
