"""Vector look-ups: Redis as the shared cache, the local memory-mapped snapshot as the fallback.

Read path for a batch of ids of one version and entity:
1. published version: one HMGET per partition on the published hashes
   `plexrec:{ns:version:pN}:<entity>` (redis_keys.partition_key), all sent in one write on a
   dedicated connection (RedisLane: redis-py's pool and pipeline cost more Python time than
   the round trip itself); when every id hits, the reply bytes are joined straight into the
   matrix;
2. ids still missing: one pipelined MGET per partition on the write-back cache keys (below);
3. still missing: rows of the local snapshot (row_of on the memory map), then written back.

Write-back cache layout: one string key per id, `<partition_key>:cache:<id>` (same hash tag as
the published partition, so it lives in the same cluster slot), set with SET EX ttl + uniform
jitter. Retiring a version unlinks only its manifest and partitions; its cache keys expire with
their TTL, or go at the next publish's orphan sweep, which removes keys of uncommitted versions.
Per-id keys, not fields of a cache hash, because Redis expires whole keys: a shared cache hash
would keep every field alive as long as any field is touched.

Concurrent misses of the same (version, entity, id) load once (single flight). Redis failures
(connection refused, timeouts: short socket timeouts, no client retries) trip a circuit
breaker: for `breaker_cooldown_s` every look-up goes straight to the snapshot, then Redis is
tried again. Only when Redis fails and the version has no local snapshot is the look-up
unavailable.

`prefer_snapshot=True` inverts the order for versions on local disk (Redis only for versions
that are not): the memory map answers in ~10-30 us (one searchsorted, one gather) where the
Redis round trip costs ~75-230 us in-process; both hold the same bytes (the snapshot is
sha256-verified at load). The price: reads then touch this replica's page cache (a cold page is
a disk read on the event loop) and Redis hit statistics no longer reflect this replica's
traffic."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from plexrec.features.errors import PlexrecError
from plexrec.features.hashing import partition_of_one
from plexrec.models.snapshot import Snapshot
from plexrec.serving import redis_keys as rk

log = logging.getLogger(__name__)


class StoreUnavailable(PlexrecError):
    """Neither Redis nor a local snapshot can answer."""


class VersionView(Protocol):
    """What the store needs to know about a version (serving.versions.LoadedVersion)."""

    @property
    def version(self) -> str: ...
    @property
    def width(self) -> int: ...
    @property
    def partitions(self) -> int: ...
    @property
    def published(self) -> bool: ...
    @property
    def snapshot(self) -> Snapshot | None: ...


@dataclass(frozen=True)
class StoreStats:
    redis_hits: int
    cache_hits: int
    snapshot_reads: int
    redis_errors: int
    breaker_open: bool


class CircuitBreaker:
    """Open for `cooldown_s` after a failure; the next call after that tries Redis again."""

    def __init__(self, cooldown_s: float) -> None:
        self.cooldown_s = cooldown_s
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def trip(self, exc: BaseException) -> None:
        if not self.is_open:
            log.warning("Redis unavailable (%s: %s); serving from the local snapshot for %.1fs",
                        type(exc).__name__, exc, self.cooldown_s)
        self._open_until = time.monotonic() + self.cooldown_s


def connect_async(redis_url: str, timeout_s: float, max_connections: int = 64) -> aioredis.Redis:
    """A client that fails fast: short socket timeouts and no retries (the breaker decides)."""
    return aioredis.Redis.from_url(
        redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0), retry_on_timeout=False, max_connections=max_connections)


def _timeout_of(client: aioredis.Redis) -> float:
    """The client's socket timeout (connect_async sets it), else a bound a look-up never needs."""
    return float(client.connection_pool.connection_kwargs.get("socket_timeout") or 5.0)


@functools.lru_cache(maxsize=64)
def partition_keys(namespace: str, version: str, partitions: int, entity: str
                   ) -> tuple[bytes, ...]:
    """Every partition key of a (version, entity), built, validated and encoded once, not per
    request (redis-py passes bytes arguments through without re-encoding)."""
    return tuple(rk.partition_key(namespace, version, p, entity).encode()
                 for p in range(partitions))


def cache_key(namespace: str, version: str, partition: int, entity: str, id_: int) -> str:
    return f"{rk.partition_key(namespace, version, partition, entity)}:cache:{id_}"


def _all_rows(blobs: list[Any], row_bytes: int) -> bool:
    """True when every value is a full vector (no miss, no truncated or foreign value)."""
    return None not in blobs and set(map(len, blobs)) == {row_bytes}


def pack_hmget(key: bytes, ids: list[int]) -> bytes:
    """The RESP encoding of `HMGET key id...` (ids as decimal ASCII, the hash field names)."""
    head = b"*%d\r\n$5\r\nHMGET\r\n$%d\r\n%s\r\n" % (len(ids) + 2, len(key), key)
    return head + b"".join([b"$%d\r\n%s\r\n" % (len(f), f) for f in map(b"%d".__mod__, ids)])


class RedisLane:
    """Dedicated connections for the hot HMGET path. redis-py 8's pool and pipeline cost ~15 us
    per command plus ~60 us per request in Python (observability hooks, a lock, a timeout per
    reply); here a request is one packed write, N replies taken from hiredis' buffer and one
    timeout around the whole exchange. Connections come from the client's own connection
    settings (auth, db, TLS); a connection that saw any error or cancellation is dropped, since
    unread replies may be left on it."""

    def __init__(self, client: aioredis.Redis, timeout_s: float, max_idle: int = 32) -> None:
        pool = client.connection_pool
        self._kwargs = {**pool.connection_kwargs, "socket_timeout": None}
        self._connection_class = pool.connection_class
        self.timeout_s = timeout_s
        self.max_idle = max_idle
        self._idle: list[Any] = []

    async def execute(self, packed: bytes, replies: int) -> list[Any]:
        conn = self._idle.pop() if self._idle else self._connection_class(**self._kwargs)
        try:
            async with asyncio.timeout(self.timeout_s):
                await conn.send_packed_command(packed, check_health=False)
                out = [await conn.read_response() for _ in range(replies)]
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        if len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            await conn.disconnect(nowait=True)
        return out

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.disconnect(nowait=True)


class VectorStore:
    """Batch look-ups of (version, entity, ids) -> found mask + vectors, in request order."""

    def __init__(self, client: aioredis.Redis | None, namespace: str, *, ttl_s: float,
                 jitter_s: float, breaker_cooldown_s: float, prefer_snapshot: bool = False
                 ) -> None:
        self.client = client
        self.lane = RedisLane(client, _timeout_of(client)) if client is not None else None
        self.prefer_snapshot = prefer_snapshot
        self.namespace = namespace
        self.ttl_s, self.jitter_s = ttl_s, jitter_s
        self.breaker = CircuitBreaker(breaker_cooldown_s)
        self._inflight: dict[tuple[str, str, int], asyncio.Future] = {}
        self._writebacks: set[asyncio.Task] = set()
        self._loads: set[asyncio.Task] = set()
        self._writing: set[tuple[str, str, int]] = set()
        self._stats = {"redis_hits": 0, "cache_hits": 0, "snapshot_reads": 0, "redis_errors": 0}

    @property
    def redis_usable(self) -> bool:
        return self.client is not None and not self.breaker.is_open

    def stats(self) -> StoreStats:
        return StoreStats(**self._stats, breaker_open=self.breaker.is_open)

    async def lookup(self, view: VersionView, entity: str, ids: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """(found bool [n], vectors float32 [found.sum(), width]) for ids in request order
        (duplicates allowed). Raises StoreUnavailable when nothing can answer.

        The hot paths (all ids published in Redis, or all read from the local snapshot) are
        vectorised: one gather or one join, no per-id Python work beyond the HMGET arguments."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if not self.redis_usable or (self.prefer_snapshot and view.snapshot is not None):
            return self._snapshot_matrix(view, entity, ids)
        n = ids.size
        row_bytes = view.width * 4
        blobs: list[bytes | None] = [None] * n
        if view.published:
            try:
                order, values = await self._hmget(view, entity, ids)
            except (TimeoutError, RedisError, OSError) as exc:
                self._redis_failed(exc)
                return self._snapshot_matrix(view, entity, ids)
            if _all_rows(values, row_bytes):
                self._stats["redis_hits"] += n
                mat = np.frombuffer(b"".join(cast(list[bytes], values)), dtype="<f4").reshape(n, view.width)
                if order is not None:
                    out = np.empty_like(mat)
                    out[order] = mat
                    mat = out
                return np.ones(n, dtype=bool), mat
            positions = range(n) if order is None else order.tolist()
            for pos, v in zip(positions, values, strict=True):
                if v is not None and len(v) == row_bytes:
                    blobs[pos] = v
            self._stats["redis_hits"] += n - blobs.count(None)
        miss_pos = [i for i, b in enumerate(blobs) if b is None]
        uniq, inverse = np.unique(ids[miss_pos], return_inverse=True)
        loaded = await self._load_misses(view, entity, uniq)
        for pos, j in zip(miss_pos, inverse.tolist(), strict=True):
            blobs[pos] = loaded[j]
        found = np.fromiter((b is not None for b in blobs), dtype=bool, count=n)
        mat = np.frombuffer(b"".join(b for b in blobs if b is not None),
                            dtype="<f4").reshape(-1, view.width)
        return found, mat

    def _snapshot_matrix(self, view: VersionView, entity: str, ids: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
        """One searchsorted and one gather on the memory map (no per-row objects)."""
        snap = view.snapshot
        if snap is None:
            raise StoreUnavailable(f"version {view.version} is not on this server's disk "
                                   "and Redis is unavailable")
        if entity not in snap.entities:
            return np.zeros(ids.size, dtype=bool), np.empty((0, view.width), dtype="<f4")
        rows = snap.row_of(entity, ids)
        found = rows >= 0
        hit_rows = rows if found.all() else rows[found]
        self._stats["snapshot_reads"] += hit_rows.size
        mat = np.asarray(snap.vectors(entity))[hit_rows]
        return found, mat.astype("<f4", copy=False)

    async def _hmget(self, view: VersionView, entity: str, ids: np.ndarray
                     ) -> tuple[np.ndarray | None, list[bytes | None]]:
        """(order, values): values[j] belongs to ids[order[j]] (order None: request order).
        One HMGET per partition, all in one write (one round trip); duplicates are simply
        asked twice, which is cheaper than deduplicating the common, duplicate-free batch."""
        assert self.lane is not None
        keys = partition_keys(self.namespace, view.version, view.partitions, entity)
        if ids.size == 1:
            id_ = int(ids[0])
            key = keys[partition_of_one(id_, view.partitions)]
            return None, (await self.lane.execute(pack_hmget(key, [id_]), 1))[0]
        parts = rk.partition_of_ids(ids, view.partitions)
        order = np.argsort(parts, kind="stable")
        bounds = np.cumsum(np.bincount(parts, minlength=view.partitions)).tolist()
        sorted_ids = ids[order].tolist()
        packed = []
        lo = 0
        for part, hi in enumerate(bounds):
            if hi > lo:
                packed.append(pack_hmget(keys[part], sorted_ids[lo:hi]))
            lo = hi
        results = await self.lane.execute(b"".join(packed), len(packed))
        return order, [v for values in results for v in values]

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
        redis_ok = self.redis_usable
        if redis_ok:
            try:
                values = await self._mget_cache(view, entity, ids)
                self._stats["cache_hits"] += sum(v is not None for v in values)
            except (TimeoutError, RedisError, OSError) as exc:
                self._redis_failed(exc)
                redis_ok = False
        miss = [i for i, v in enumerate(values) if v is None]
        if not miss:
            return values
        fresh = self._from_snapshot(view, entity, ids[miss], required=not redis_ok)
        writes: list[tuple[int, bytes]] = []
        for i, blob in zip(miss, fresh, strict=True):
            values[i] = blob
            if blob is not None:
                writes.append((int(ids[i]), blob))
        if writes and redis_ok:
            self._write_back(view, entity, writes)
        return values

    async def _mget_cache(self, view: VersionView, entity: str, ids: np.ndarray
                          ) -> list[bytes | None]:
        assert self.client is not None
        parts = rk.partition_of_ids(ids, view.partitions).tolist()
        pkeys = partition_keys(self.namespace, view.version, view.partitions, entity)
        keys = [pkeys[p] + b":cache:%d" % i for p, i in zip(parts, ids.tolist(), strict=True)]
        if len(keys) == 1:
            return [cast(bytes | None, await self.client.get(keys[0]))]
        by_part: dict[int, list[int]] = {}
        for pos, p in enumerate(parts):
            by_part.setdefault(p, []).append(pos)
        async with self.client.pipeline(transaction=False) as pipe:
            for positions in by_part.values():
                pipe.mget([keys[i] for i in positions])
            results = await pipe.execute()
        out: list[bytes | None] = [None] * len(keys)
        row_bytes = view.width * 4
        for positions, vals in zip(by_part.values(), results, strict=True):
            for i, v in zip(positions, vals, strict=True):
                out[i] = v if v is not None and len(v) == row_bytes else None
        return out

    def _from_snapshot(self, view: VersionView, entity: str, ids: np.ndarray, *,
                       required: bool) -> list[bytes | None]:
        snap = view.snapshot
        if snap is None:
            if required:
                raise StoreUnavailable(f"version {view.version} is not on this server's disk "
                                       "and Redis is unavailable")
            return [None] * ids.size
        if entity not in snap.entities:
            return [None] * ids.size
        rows = snap.row_of(entity, ids)
        found = rows >= 0
        blobs = iter(rk.encode_vectors(np.asarray(snap.vectors(entity))[rows[found]]))
        self._stats["snapshot_reads"] += int(found.sum())
        return [next(blobs) if f else None for f in found.tolist()]

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
        assert self.client is not None
        try:
            ids = np.fromiter((i for i, _ in todo), dtype=np.int64, count=len(todo))
            parts = rk.partition_of_ids(ids, view.partitions).tolist()
            pkeys = partition_keys(self.namespace, view.version, view.partitions, entity)
            async with self.client.pipeline(transaction=False) as pipe:
                for p, (i, blob) in zip(parts, todo, strict=True):
                    ttl = int(self.ttl_s + random.uniform(0, self.jitter_s))
                    pipe.set(pkeys[p] + b":cache:%d" % i, blob, ex=max(ttl, 1))
                await pipe.execute()
        except (TimeoutError, RedisError, OSError) as exc:
            self._redis_failed(exc)
        finally:
            self._writing.difference_update(marks)

    def _redis_failed(self, exc: BaseException) -> None:
        self._stats["redis_errors"] += 1
        self.breaker.trip(exc)

    async def close(self) -> None:
        if self._loads:
            await asyncio.gather(*self._loads, return_exceptions=True)
        if self._writebacks:
            await asyncio.gather(*self._writebacks, return_exceptions=True)
        if self.lane is not None:
            await self.lane.close()
        if self.client is not None:
            await self.client.aclose()
