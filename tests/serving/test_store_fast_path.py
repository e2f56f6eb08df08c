"""The hot look-up paths of the Redis-backed store: the plain-Python partition function and RESP packing
agree with the reference implementations, the direct Redis lane returns the published bytes in
request order (duplicates included), and anything odd in Redis falls back to the snapshot."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import redis
from redis.connection import Connection

from plexrec.features.hashing import partition_of_one
from plexrec.serving import redis_keys as rk
from plexrec.serving.publish import publish
from plexrec.serving.resp import pack_hmget
from plexrec.serving.versions import load_version
from tests.serving.server_helpers import config, fallback_store, make_snapshot


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype="<f4").view("<u4")


def test_partition_of_one_equals_the_vectorised_function() -> None:
    rng = np.random.default_rng(0)
    ids = np.concatenate([rng.integers(-(2**63), 2**63 - 1, 2000, dtype=np.int64),
                          np.array([0, 1, -1, 2**63 - 1, -(2**63)], dtype=np.int64)])
    for partitions in (1, 7, 16):
        want = rk.partition_of_ids(ids, partitions).tolist()
        assert [partition_of_one(i, partitions) for i in ids.tolist()] == want


def test_pack_hmget_is_the_resp_redis_py_sends() -> None:
    key = b"plexrec:{ns:v1:p3}:user"
    ids = [5, -17, 2**63 - 1]
    want = b"".join(Connection().pack_command("HMGET", key, *(str(i) for i in ids)))
    assert pack_hmget(key, ids) == want


def _store_and_version(tmp_path: Path, redis_url: str, ns: str):
    snap = make_snapshot(tmp_path, seed=11, users=200)
    publish(snap.path, redis_url, namespace=ns, partitions=4, progress=False)
    manifest = rk.read_manifest(redis.Redis.from_url(redis_url), ns, snap.version)
    lv = load_version(snap.path, config(snap.path).index, manifest)
    return snap, lv


def test_published_lookup_keeps_request_order_and_duplicates(tmp_path: Path,
                                                             redis_url: str) -> None:
    snap, lv = _store_and_version(tmp_path, redis_url, "fp")
    rows = [7, 3, 7, 150, 0, 3, 199]
    ids = np.asarray(snap.ids("user"))[rows]

    async def scenario():
        store = fallback_store(redis_url, "fp", timeout_s=0.5, breaker_cooldown_s=1)
        try:
            many = await store.lookup(lv, "user", ids)
            one = await store.lookup(lv, "user", ids[:1])
            return many, one, store.stats()
        finally:
            await store.close()

    (found, vectors), (found1, vec1), stats = asyncio.run(scenario())
    assert found.all() and found1.all()
    np.testing.assert_array_equal(_bits(vectors), _bits(snap.vectors("user")[rows]))
    np.testing.assert_array_equal(_bits(vec1), _bits(snap.vectors("user")[[7]]))
    assert stats.redis_hits == len(rows) + 1 and stats.snapshot_reads == 0


def test_truncated_value_and_redis_errors_fall_back_to_the_snapshot(tmp_path: Path,
                                                                    redis_url: str) -> None:
    snap, lv = _store_and_version(tmp_path, redis_url, "bad")
    ids = np.asarray(snap.ids("user"))[[1, 2, 3]]
    r = redis.Redis.from_url(redis_url)
    bad_id = int(ids[1])
    key = rk.partition_keys("bad", snap.version, lv.partitions, "user")[
        partition_of_one(bad_id, lv.partitions)]
    r.hset(key, str(bad_id), b"short")

    async def scenario():
        store = fallback_store(redis_url, "bad", timeout_s=0.5, breaker_cooldown_s=0.05)
        try:
            first = await store.lookup(lv, "user", ids)
            after_truncated = store.stats()
            r.delete(key)
            r.set(key, b"not a hash")  # WRONGTYPE: an error reply in the middle of the batch
            second = await store.lookup(lv, "user", ids)
            after_error = store.stats()
            r.delete(key)
            await asyncio.sleep(0.1)  # breaker cooldown
            third = await store.lookup(lv, "user", ids[[0, 2]])
            return first, second, third, after_truncated, after_error, store.stats()
        finally:
            await store.close()

    first, second, third, s1, s2, s3 = asyncio.run(scenario())
    r.close()
    want = _bits(snap.vectors("user")[[1, 2, 3]])
    for found, vectors in (first, second):
        assert found.all()
        np.testing.assert_array_equal(_bits(vectors), want)
    assert s1.redis_hits == 2 and s1.snapshot_reads == 1 and s1.redis_errors == 0
    assert s2.redis_errors == 1 and s2.snapshot_reads == 4
    # The lane dropped the connection with unread replies: the next answers are still right.
    np.testing.assert_array_equal(_bits(third[1]), want[[0, 2]])
    assert s3.redis_errors == 1 and not s3.breaker_open
