"""GetEmbeddings returns the snapshot's vectors bit for bit, whether they come from Redis, from
the write-back cache or from the local snapshot; misses load once and are cached with a TTL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import redis

from plexrec.serving import redis_keys as rk
from plexrec.serving.client import EmbeddingClient
from plexrec.serving.publish import publish
from plexrec.serving.redis_keys import cache_key
from plexrec.serving.versions import load_version
from tests.serving.server_helpers import ServerThread, config, fallback_store, make_snapshot


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype="<f4").view("<u4")


def test_published_vectors_come_from_redis_bit_for_bit(tmp_path: Path, redis_url: str) -> None:
    published = make_snapshot(tmp_path / "published", seed=1)
    local = make_snapshot(tmp_path / "local", seed=2)
    publish(published.path, redis_url, namespace="t", partitions=4, progress=False)
    # The server's disk holds another version: the published one can only come from Redis.
    cfg = config(local.path, redis_url, namespace="t")
    with ServerThread(cfg) as srv, EmbeddingClient(srv.target) as client:
        assert client.info()["version"] == local.version
        ids = np.asarray(published.ids("item"))[[5, 0, 299, 5]]
        r = client.embeddings("item", [*ids.tolist(), -42], version=published.version)
        assert r.version == published.version
        assert r.found_ids.tolist() == ids.tolist()
        assert r.missing_ids.tolist() == [-42]
        want = np.asarray(published.vectors("item"))[[5, 0, 299, 5]]
        np.testing.assert_array_equal(_bits(r.vectors), _bits(want))
        assert srv.server.store.stats().redis_hits >= 3
        assert srv.server.store.stats().snapshot_reads == 0


def test_without_redis_vectors_come_from_the_snapshot(tmp_path: Path) -> None:
    snap = make_snapshot(tmp_path, seed=3)
    with ServerThread(config(snap.path)) as srv, EmbeddingClient(srv.target) as client:
        ids = np.asarray(snap.ids("user"))
        r = client.embeddings("user", ids.tolist())
        np.testing.assert_array_equal(_bits(r.vectors), _bits(snap.vectors("user")))
        assert r.missing_ids.size == 0
        assert srv.server.store.stats().snapshot_reads == ids.size


def test_misses_are_written_back_with_ttl_and_then_served_from_redis(tmp_path: Path,
                                                                     redis_url: str) -> None:
    snap = make_snapshot(tmp_path, seed=4)
    cfg = config(snap.path, redis_url, namespace="wb", cache_ttl_s=100.0, cache_ttl_jitter_s=20.0)
    ids = np.asarray(snap.ids("item"))[:40]
    with ServerThread(cfg) as srv, EmbeddingClient(srv.target) as client:
        first = client.embeddings("item", ids.tolist())
        srv.call(asyncio.sleep(0.2))  # let the background write-back finish
        r = redis.Redis.from_url(redis_url)
        keys = [cache_key("wb", snap.version, int(p), "item", int(i))
                for p, i in zip(rk.partition_of_ids(ids, rk.DEFAULT_PARTITIONS), ids,
                                strict=True)]
        ttls = [r.ttl(k) for k in keys]
        assert all(95 <= t <= 120 for t in ttls), ttls
        assert r.get(keys[0]) == np.asarray(snap.vectors("item"))[0].tobytes()
        before = srv.server.store.stats()
        second = client.embeddings("item", ids.tolist())
        after = srv.server.store.stats()
        r.close()
    np.testing.assert_array_equal(_bits(first.vectors), _bits(snap.vectors("item")[:40]))
    np.testing.assert_array_equal(_bits(second.vectors), _bits(first.vectors))
    assert before.snapshot_reads == 40 and after.snapshot_reads == 40
    assert after.cache_hits - before.cache_hits == 40


def test_concurrent_misses_of_one_id_load_once(tmp_path: Path, redis_url: str) -> None:
    snap = make_snapshot(tmp_path, seed=5)
    lv = load_version(snap.path, config(snap.path).index)
    ids = np.asarray(snap.ids("user"))[:10]

    async def scenario() -> tuple[list, int]:
        store = fallback_store(redis_url, "sf", timeout_s=0.5, breaker_cooldown_s=1)
        try:
            results = await asyncio.gather(*(store.lookup(lv, "user", ids) for _ in range(20)))
            return results, store.stats().snapshot_reads
        finally:
            await store.close()

    results, reads = asyncio.run(scenario())
    assert reads == ids.size
    for found, vectors in results:
        assert found.all()
        np.testing.assert_array_equal(_bits(vectors), _bits(snap.vectors("user")[:10]))


def test_prefer_snapshot_reads_local_versions_without_redis(tmp_path: Path,
                                                            redis_url: str) -> None:
    snap = make_snapshot(tmp_path, seed=6)
    publish(snap.path, redis_url, namespace="ps", progress=False)
    cfg = config(snap.path, redis_url, namespace="ps", prefer_snapshot=True)
    with ServerThread(cfg) as srv, EmbeddingClient(srv.target) as client:
        r = client.embeddings("user", snap.ids("user")[:20])
        stats = srv.server.store.stats()
    np.testing.assert_array_equal(_bits(r.vectors), _bits(snap.vectors("user")[:20]))
    assert stats.redis_hits == 0 and stats.snapshot_reads == 20
