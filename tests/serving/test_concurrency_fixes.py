"""Races fixed after review: a cancelled request owning a single-flight load must not fail the
requests waiting on it; a stale publish lock is taken over by exactly one rerun; the orphan
sweep keeps the lock alive; SIGTERM while the server is still loading its first version stops
it without waiting for the load (Redis paused with CLIENT PAUSE holds the load; the test waits
for the pause to end so later tests find Redis answering)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis

from plexrec.models.snapshot import Snapshot
from plexrec.models.vector_codecs import CODECS, Codec
from plexrec.serving import publish as pub
from plexrec.serving import redis_keys as rk
from plexrec.serving.server import serve_forever
from tests.serving.server_helpers import config, fallback_store, make_snapshot


@dataclass
class _View:
    version: str
    width: int
    partitions: int
    published: bool
    snapshot: Snapshot | None
    rotation: np.ndarray | None = None

    @property
    def codec(self) -> Codec:
        return CODECS["float32"]

    @property
    def row_bytes(self) -> int:
        return self.width * 4


def test_cancelled_owner_of_a_miss_load_does_not_fail_its_waiters(tmp_path: Path,
                                                                   redis_url: str) -> None:
    snap = make_snapshot(tmp_path, seed=3)
    view = _View(snap.version, snap.width, 4, False, snap)
    ids = np.concatenate([np.asarray(snap.ids("user"))[[4, 0, 9]], [3]])
    want = np.asarray(snap.vectors("user"))[[4, 0, 9]].astype("<f4")
    pauser = redis.Redis.from_url(redis_url)

    async def scenario():
        store = fallback_store(redis_url, "cx", timeout_s=5.0, breaker_cooldown_s=1)
        try:
            pauser.execute_command("CLIENT", "PAUSE", 400, "ALL")
            owner = asyncio.create_task(store.lookup(view, "user", ids))
            await asyncio.sleep(0.05)
            doomed = asyncio.create_task(store.lookup(view, "user", ids))
            waiter = asyncio.create_task(store.lookup(view, "user", ids))
            await asyncio.sleep(0.05)
            loads = len(store._loads)
            owner.cancel()
            doomed.cancel()
            result = await waiter
            outcomes = await asyncio.gather(owner, doomed, return_exceptions=True)
            return loads, result, outcomes
        finally:
            await store.close()

    loads, (found, vectors), outcomes = asyncio.run(scenario())
    assert loads == 1
    assert found.tolist() == [True, True, True, False]
    np.testing.assert_array_equal(vectors.view("<u4"), want.view("<u4"))
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)


def test_a_stale_lock_is_taken_over_by_exactly_one_rerun(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = rk.lock_key("default", "v1")
    stale = json.dumps({"host": "gone", "pid": 1, "id": "old"})
    client.set(key, stale)
    barrier = threading.Barrier(8)

    def rerun(n: int) -> bool:
        own = redis.Redis.from_url(redis_url)
        barrier.wait()
        return pub.take_over_lock(own, key, stale, f"token-{n}")

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(rerun, range(8)))
    assert won.count(True) == 1
    assert client.get(key) == f"token-{won.index(True)}".encode()
    assert 0 < client.pttl(key) <= pub.LOCK_TTL_MS
    assert not pub.take_over_lock(client, key, stale, "late")


def test_orphan_sweep_refreshes_the_held_lock(tmp_path: Path, redis_url: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    snap = make_snapshot(tmp_path, seed=4)
    client = redis.Redis.from_url(redis_url)
    for n in range(30):
        client.set(rk.partition_key("default", "vold", n, "user") + ":cache:1", b"x")
    monkeypatch.setattr(pub, "_SWEEP_REFRESH_KEYS", 10)
    publisher = pub._Publisher(client, snap, "default", 4, 1000, False)
    lock = rk.lock_key("default", snap.version)
    client.set(lock, "mine", px=5000)
    publisher._holds_lock = True
    publisher._sweep_orphans()
    assert client.pttl(lock) > 5000
    assert client.exists(rk.partition_key("default", "vold", 7, "user") + ":cache:1") == 0


def test_sigterm_during_the_initial_load_stops_the_server(tmp_path: Path, redis_url: str,
                                                          capsys: pytest.CaptureFixture) -> None:
    make_snapshot(tmp_path / "snaps", seed=5)
    cfg = config(tmp_path / "snaps", redis_url, redis_timeout_s=30.0, grace_s=0.1)
    pauser = redis.Redis.from_url(redis_url)

    async def scenario() -> None:
        pauser.execute_command("CLIENT", "PAUSE", 4000, "ALL")
        task = asyncio.create_task(serve_forever(cfg))
        await asyncio.sleep(0.3)
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 3)

    asyncio.run(scenario())
    assert redis.Redis.from_url(redis_url, socket_timeout=10).ping()
    out, err = capsys.readouterr()
    assert '"serving"' not in out
    assert '"stopped"' in err
