"""Redis as the online store: published versions as partitioned hashes (serving.redis_keys), a
write-back cache of one string key per id, the `current` pointer and its pub/sub channel.

Reads of published vectors go through serving.resp.RedisLane: one HMGET per partition, all in
one write. The cache key of an id, `<partition_key>:cache:<id>`, shares the hash tag of its
published partition (same cluster slot) and is set with SET EX ttl + uniform jitter; per-id keys,
not fields of a cache hash, because Redis expires whole keys. Clients fail fast (short socket
timeouts, no retries): the fallback store's breaker decides what happens next."""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from plexrec.features.hashing import partition_of_one
from plexrec.serving import redis_keys as rk
from plexrec.serving.resp import RedisLane, pack_hmget
from plexrec.serving.stores.base import OnlineStoreError, StoreCorrupt, VersionView

T = TypeVar("T")
_FAILURES = (TimeoutError, RedisError, OSError)
HEALTH_CHECK_S = 5  # a pooled connection idle this long is PINGed before use


def connect_async(redis_url: str, timeout_s: float, max_connections: int = 64) -> aioredis.Redis:
    """A client that fails fast: short socket timeouts and no retries (the breaker decides)."""
    return aioredis.Redis.from_url(
        redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0), retry_on_timeout=False, max_connections=max_connections,
        health_check_interval=HEALTH_CHECK_S)


class RedisStore:
    """The OnlineStore on one Redis (or a Redis Cluster through a cluster-aware URL)."""

    def __init__(self, client: aioredis.Redis, namespace: str, *, ttl_s: float = 3600.0,
                 jitter_s: float = 0.0) -> None:
        self.client = client
        timeout = client.connection_pool.connection_kwargs.get("socket_timeout") or 5.0
        self.lane = RedisLane(client, float(timeout))
        self.namespace = namespace
        self.ttl_s, self.jitter_s = ttl_s, jitter_s
        self._pubsub: Any = None

    async def _guard(self, call: Callable[[], Awaitable[T]]) -> T:
        """Runs one call; a failure drops every idle connection, since after a Redis restart
        they are all dead and each would otherwise cost one more failed attempt (and one more
        breaker cool-down) before the store is used again."""
        try:
            return await call()
        except _FAILURES as exc:
            await self.lane.drop_idle()
            with contextlib.suppress(Exception):
                await self.client.connection_pool.disconnect(inuse_connections=False)
            raise OnlineStoreError(f"{type(exc).__name__}: {exc}") from exc

    @classmethod
    def from_url(cls, url: str, namespace: str, *, timeout_s: float, ttl_s: float,
                 jitter_s: float) -> RedisStore:
        return cls(connect_async(url, timeout_s), namespace, ttl_s=ttl_s, jitter_s=jitter_s)

    async def read_published(self, view: VersionView, entity: str, ids: np.ndarray
                             ) -> tuple[np.ndarray | None, list[bytes | None]]:
        """One HMGET per partition, all in one write (one round trip); duplicates are simply
        asked twice, cheaper than deduplicating the common, duplicate-free batch."""
        keys = rk.partition_keys(self.namespace, view.version, view.partitions, entity)
        if ids.size == 1:
            id_ = int(ids[0])
            key = keys[partition_of_one(id_, view.partitions)]
            replies = await self._guard(lambda: self.lane.execute(pack_hmget(key, [id_]), 1))
            return None, replies[0]
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
        results = await self._guard(lambda: self.lane.execute(b"".join(packed), len(packed)))
        return order, [v for values in results for v in values]

    async def read_cache(self, view: VersionView, entity: str, ids: np.ndarray
                         ) -> list[bytes | None]:
        return await self._guard(lambda: self._mget_cache(view, entity, ids))

    async def _mget_cache(self, view: VersionView, entity: str, ids: np.ndarray
                          ) -> list[bytes | None]:
        parts = rk.partition_of_ids(ids, view.partitions).tolist()
        keys = [rk.cache_key_bytes(self.namespace, view.version, view.partitions, entity, p, i)
                for p, i in zip(parts, ids.tolist(), strict=True)]
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
        for positions, vals in zip(by_part.values(), results, strict=True):
            for i, v in zip(positions, vals, strict=True):
                out[i] = v
        return out

    async def write_cache(self, view: VersionView, entity: str,
                          writes: list[tuple[int, bytes]]) -> None:
        await self._guard(lambda: self._set_cache(view, entity, writes))

    async def _set_cache(self, view: VersionView, entity: str,
                         writes: list[tuple[int, bytes]]) -> None:
        ids = np.fromiter((i for i, _ in writes), dtype=np.int64, count=len(writes))
        parts = rk.partition_of_ids(ids, view.partitions).tolist()
        async with self.client.pipeline(transaction=False) as pipe:
            for p, (i, blob) in zip(parts, writes, strict=True):
                ttl = int(self.ttl_s + random.uniform(0, self.jitter_s))
                key = rk.cache_key_bytes(self.namespace, view.version, view.partitions, entity,
                                         p, i)
                pipe.set(key, blob, ex=max(ttl, 1))
            await pipe.execute()

    async def manifest(self, version: str) -> dict[str, Any] | None:
        key = rk.manifest_key(self.namespace, version)
        raw = await self._guard(lambda: self.client.get(key))
        if raw is None:
            return None
        try:
            manifest = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            manifest = None
        if not isinstance(manifest, dict):
            raise StoreCorrupt(f"Redis key {key} does not hold a JSON manifest")
        return manifest

    async def version_file(self, version: str, name: str) -> bytes | None:
        key = rk.version_file_key(self.namespace, version, name)
        return cast(bytes | None, await self._guard(lambda: self.client.get(key)))

    async def current(self) -> str | None:
        raw = await self._guard(lambda: self.client.get(rk.current_key(self.namespace)))
        return None if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)

    async def wait_for_update(self, timeout_s: float) -> None:
        """Returns after a pointer-move message or `timeout_s`, whichever is first."""
        async def wait() -> None:
            if self._pubsub is None:
                self._pubsub = self.client.pubsub()
                await self._pubsub.subscribe(rk.updates_channel(self.namespace))
            await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout_s)

        try:
            await self._guard(wait)
        except BaseException:
            await self.close_updates()
            raise

    async def close_updates(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def close(self) -> None:
        await self.close_updates()
        await self.lane.close()
        await self.client.aclose()
