"""Vector look-ups: Redis as the shared cache, the local memory-mapped snapshot as the fallback.

Read path for a batch of ids of one version and entity:
1. published version: one pipelined HMGET per partition on the published hashes
   `plexrec:{ns:version:pN}:<entity>` (redis_keys.partition_key);
2. ids still missing: one pipelined MGET per partition on the write-back cache keys (below);
3. still missing: rows of the local snapshot (row_of on the memory map), then written back.

Write-back cache layout: one string key per id, `<partition_key>:cache:<id>` (same hash tag as
the published partition, so it lives in the same cluster slot and the publisher's sweep and
retirement of a version's keys cover it), set with SET EX ttl + uniform jitter. Per-id keys,
not fields of a cache hash, because Redis expires whole keys: a shared cache hash would keep
every field alive as long as any field is touched.

Concurrent misses of the same (version, entity, id) load once (single flight). Redis failures
(connection refused, timeouts: short socket timeouts, no client retries) trip a circuit
breaker: for `breaker_cooldown_s` every look-up goes straight to the snapshot, then Redis is
tried again. Only when Redis fails and the version has no local snapshot is the look-up
unavailable.

`prefer_snapshot=True` inverts the order for versions on local disk (Redis only for versions
that are not): the memory map answers in microseconds where a Redis round trip from Python costs
a few hundred; both hold the same bytes (the snapshot is sha256-verified at load)."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from features.errors import PlexrecError
from models.snapshot import Snapshot
from serving import redis_keys as rk

log = logging.getLogger(__name__)


class StoreUnavailable(PlexrecError):
    """Neither Redis nor a local snapshot can answer."""


class VersionView(Protocol):
    """What the store needs to know about a version (serving.versions.LoadedVersion)."""

    version: str
    width: int
    partitions: int
    published: bool
    snapshot: Snapshot | None


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


@functools.lru_cache(maxsize=64)
def partition_keys(namespace: str, version: str, partitions: int, entity: str
                   ) -> tuple[str, ...]:
    """Every partition key of a (version, entity), built and validated once, not per request."""
    return tuple(rk.partition_key(namespace, version, p, entity) for p in range(partitions))


def cache_key(namespace: str, version: str, partition: int, entity: str, id_: int) -> str:
    return f"{rk.partition_key(namespace, version, partition, entity)}:cache:{id_}"


class VectorStore:
    """Batch look-ups of (version, entity, ids) -> found mask + vectors, in request order."""

    def __init__(self, client: aioredis.Redis | None, namespace: str, *, ttl_s: float,
                 jitter_s: float, breaker_cooldown_s: float, prefer_snapshot: bool = False
                 ) -> None:
        self.client = client
        self.prefer_snapshot = prefer_snapshot
        self.namespace = namespace
        self.ttl_s, self.jitter_s = ttl_s, jitter_s
        self.breaker = CircuitBreaker(breaker_cooldown_s)
        self._inflight: dict[tuple[str, str, int], asyncio.Future] = {}
        self._writebacks: set[asyncio.Task] = set()
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
        (duplicates allowed). Raises StoreUnavailable when nothing can answer."""
        ids = np.asarray(ids, dtype=np.int64)
        uniq, inverse = np.unique(ids, return_inverse=True) if ids.size > 1 else (ids, None)
        blobs = await self._lookup_unique(view, entity, uniq)
        found_u = np.fromiter((b is not None for b in blobs), dtype=bool, count=len(blobs))
        width = view.width
        if found_u.all():
            mat = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), width)
        else:
            mat = np.frombuffer(b"".join(b for b in blobs if b is not None),
                                dtype="<f4").reshape(-1, width)
        if inverse is None:
            return found_u, mat
        found = found_u[inverse]
        if found_u.all():
            return found, mat[inverse]
        rank = np.cumsum(found_u) - 1
        return found, mat[rank[inverse[found]]]

    async def _lookup_unique(self, view: VersionView, entity: str, ids: np.ndarray
                             ) -> list[bytes | None]:
        n = ids.size
        if not self.redis_usable or (self.prefer_snapshot and view.snapshot is not None):
            return self._from_snapshot(view, entity, ids, required=True)
        blobs: list[bytes | None] = [None] * n
        if view.published:
            try:
                blobs = await self._hmget(view, entity, ids)
            except (TimeoutError, RedisError, OSError) as exc:
                self._redis_failed(exc)
                return self._from_snapshot(view, entity, ids, required=True)
            row_bytes = view.width * 4
            blobs = [b if b is not None and len(b) == row_bytes else None for b in blobs]
            hits = sum(b is not None for b in blobs)
            self._stats["redis_hits"] += hits
            if hits == n:
                return blobs
        miss_pos = [i for i, b in enumerate(blobs) if b is None]
        loaded = await self._load_misses(view, entity, ids[miss_pos])
        for pos, blob in zip(miss_pos, loaded, strict=True):
            blobs[pos] = blob
        return blobs

    async def _hmget(self, view: VersionView, entity: str, ids: np.ndarray
                     ) -> list[bytes | None]:
        assert self.client is not None
        keys = partition_keys(self.namespace, view.version, view.partitions, entity)
        if ids.size == 1:
            part = int(rk.partition_of_ids(ids, view.partitions)[0])
            return list(await self.client.hmget(keys[part], [str(int(ids[0]))]))
        groups = rk.group_by_partition(ids, view.partitions)
        async with self.client.pipeline(transaction=False) as pipe:
            for part, pos in groups:
                pipe.hmget(keys[part], rk.encode_ids(ids[pos]))
            results = await pipe.execute()
        out: list[bytes | None] = [None] * ids.size
        for (_, pos), values in zip(groups, results, strict=True):
            for p, v in zip(pos.tolist(), values, strict=True):
                out[p] = v
        return out

    async def _load_misses(self, view: VersionView, entity: str, ids: np.ndarray
                           ) -> list[bytes | None]:
        """Single flight: the first request for a key loads it, concurrent ones await it."""
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
            try:
                values = await self._load(view, entity, own_ids)
            except BaseException as exc:
                for pos in mine:
                    futures[pos].set_exception(StoreUnavailable(str(exc)) if not isinstance(
                        exc, StoreUnavailable) else exc)
                    futures[pos].exception()
                raise
            finally:
                for id_ in own_ids.tolist():
                    self._inflight.pop((view.version, entity, id_), None)
            for pos, value in zip(mine, values, strict=True):
                futures[pos].set_result(value)
        return [await f for f in futures]

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
        keys = [f"{pkeys[p]}:cache:{i}" for p, i in zip(parts, ids.tolist(), strict=True)]
        if len(keys) == 1:
            return [await self.client.get(keys[0])]
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
        vectors = snap.vectors(entity)
        self._stats["snapshot_reads"] += int((rows >= 0).sum())
        return [vectors[r].tobytes() if r >= 0 else None for r in rows.tolist()]

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
                    pipe.set(f"{pkeys[p]}:cache:{i}", blob, ex=max(ttl, 1))
                await pipe.execute()
        except (TimeoutError, RedisError, OSError) as exc:
            self._redis_failed(exc)
        finally:
            self._writing.difference_update(marks)

    def _redis_failed(self, exc: BaseException) -> None:
        self._stats["redis_errors"] += 1
        self.breaker.trip(exc)

    async def close(self) -> None:
        if self._writebacks:
            await asyncio.gather(*self._writebacks, return_exceptions=True)
        if self.client is not None:
            await self.client.aclose()
