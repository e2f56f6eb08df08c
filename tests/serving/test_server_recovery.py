"""Corruption surfaced, never hidden, and prompt recovery: a corrupt local copy is served from
Redis (or DATA_LOSS); a malformed Redis value is counted and served from the snapshot (or
DATA_LOSS), never reported as an unknown id; a restarted Redis is used again within about a
second; a restart without Redis resumes the last current version, not the newest directory;
`plexrec publish` never echoes a Redis password."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import redis

from plexrec.features.errors import PlexrecError
from plexrec.serving import redis_keys as rk
from plexrec.serving.client import EmbeddingClient, ServingError
from plexrec.serving.publish import publish
from plexrec.serving.redis_process import RedisProcess, free_port
from tests.serving.server_helpers import ServerThread, config, make_snapshot


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def _corrupt(snapshot_dir: Path) -> None:
    vectors = next(p for p in snapshot_dir.iterdir() if p.name.startswith("user"))
    data = bytearray(vectors.read_bytes())
    data[-1] ^= 0xFF
    vectors.write_bytes(bytes(data))


def _local_and_remote(tmp_path: Path, redis_url: str, ns: str, seed: int) -> tuple[Any, Any]:
    """Two published versions: `local` under tmp_path/snaps (the current one), `remote` only in
    Redis and elsewhere on disk."""
    local = make_snapshot(tmp_path / "snaps", seed=seed)
    remote = make_snapshot(tmp_path / "remote", seed=seed + 1, run_id="remote")
    publish(remote.path, redis_url, namespace=ns, progress=False)
    publish(local.path, redis_url, namespace=ns, progress=False)
    return local, remote


def test_corrupt_local_copy_is_served_from_redis_or_is_data_loss(tmp_path: Path,
                                                                 redis_url: str) -> None:
    root = tmp_path / "snaps"
    _, other = _local_and_remote(tmp_path, redis_url, "cor", seed=80)
    unpublished = make_snapshot(tmp_path / "unpub", seed=82, run_id="unpub")
    for snap in (other, unpublished):
        _corrupt(Path(shutil.copytree(snap.path, root / snap.version)))
    ids = np.asarray(other.ids("user"))[:3]
    with ServerThread(config(root, redis_url, namespace="cor")) as srv, \
            EmbeddingClient(srv.target) as client:
        for _ in range(2):
            got = client.embeddings("user", ids, version=other.version)
            np.testing.assert_array_equal(got.vectors, np.asarray(other.vectors("user"))[:3])
            assert got.missing_ids.size == 0
        with pytest.raises(ServingError) as err:
            client.embeddings("user", [int(unpublished.ids("user")[0])],
                              version=unpublished.version)
    assert err.value.code == grpc.StatusCode.DATA_LOSS
    assert unpublished.version in err.value.details


def _break_published_value(redis_url: str, ns: str, snap, user: int) -> None:
    client = redis.Redis.from_url(redis_url)
    manifest = json.loads(client.get(rk.manifest_key(ns, snap.version)))
    partitions = int(manifest["partitions"])
    keys = rk.partition_keys(ns, snap.version, partitions, "user")
    part = int(rk.partition_of_ids(np.array([user], np.int64), partitions)[0])
    assert client.hexists(keys[part], str(user))
    client.hset(keys[part], str(user), b"short")
    client.close()


def test_malformed_redis_value_is_counted_and_never_a_missing_id(tmp_path: Path,
                                                                 redis_url: str) -> None:
    root = tmp_path / "snaps"
    local, remote = _local_and_remote(tmp_path, redis_url, "mal", seed=83)
    local_user, remote_user = int(local.ids("user")[4]), int(remote.ids("user")[4])
    _break_published_value(redis_url, "mal", local, local_user)
    _break_published_value(redis_url, "mal", remote, remote_user)
    with ServerThread(config(root, redis_url, namespace="mal")) as srv, \
            EmbeddingClient(srv.target) as client:
        got = client.embeddings("user", [local_user, int(local.ids("user")[5])])
        np.testing.assert_array_equal(got.vectors, np.asarray(local.vectors("user"))[[4, 5]])
        assert got.missing_ids.size == 0
        with pytest.raises(ServingError) as err:
            client.embeddings("user", [remote_user], version=remote.version)
        assert err.value.code == grpc.StatusCode.DATA_LOSS
        assert str(remote_user) in err.value.details
        assert srv.server.store.stats().redis_malformed == 2


def test_restarted_redis_is_used_again_within_two_seconds(tmp_path: Path) -> None:
    snap = make_snapshot(tmp_path / "snaps", seed=85)
    port = free_port()
    users = np.asarray(snap.ids("user"))[:4]
    proc = RedisProcess(port=port, workdir=tmp_path / "r1").start()
    try:
        publish(snap.path, proc.url, namespace="rec", progress=False)
        cfg = config(snap.path.parent, proc.url, namespace="rec", breaker_cooldown_s=1.0)
        with ServerThread(cfg) as srv, EmbeddingClient(srv.target) as client:
            for _ in range(20):  # fill the lane's idle connections
                client.embeddings("user", users)
            proc.kill()
            client.embeddings("user", users)  # from the snapshot; trips the breaker
            assert srv.server.store.stats().redis_errors > 0
            proc = RedisProcess(port=port, workdir=tmp_path / "r2").start()
            publish(snap.path, proc.url, namespace="rec", progress=False)
            hits = srv.server.store.stats().redis_hits

            def redis_answers() -> bool:
                client.embeddings("user", users)
                return srv.server.store.stats().redis_hits > hits

            assert _wait_for(redis_answers, "Redis to be used again") < 2.5
    finally:
        proc.stop()


def test_restart_without_redis_resumes_the_last_current_version(tmp_path: Path) -> None:
    root = tmp_path / "snaps"
    first = make_snapshot(root, seed=86, run_id="first")
    time.sleep(0.01)
    second = make_snapshot(root, seed=87, run_id="second")
    with RedisProcess(workdir=tmp_path / "redis") as proc:
        publish(first.path, proc.url, namespace="pin", progress=False)
        publish(second.path, proc.url, namespace="pin", progress=False)
        cfg = config(root, proc.url, namespace="pin")
        with ServerThread(cfg) as srv, EmbeddingClient(srv.target) as client:
            assert client.info()["version"] == second.version
            publish(first.path, proc.url, namespace="pin", progress=False)  # roll back
            _wait_for(lambda: client.info()["version"] == first.version, "the rollback")
        url = proc.url
    with ServerThread(config(root, url, namespace="pin", redis_timeout_s=0.2)) as srv, \
            EmbeddingClient(srv.target) as client:
        assert client.info()["version"] == first.version


def test_publish_never_echoes_the_redis_password(tmp_path: Path) -> None:
    snap = make_snapshot(tmp_path / "snaps", seed=88)
    url = f"redis://plexuser:s3cret-pw@127.0.0.1:{free_port()}/0"
    with pytest.raises(PlexrecError) as err:
        publish(snap.path, url, progress=False)
    assert "s3cret-pw" not in str(err.value) and "plexuser" not in str(err.value)
    assert "127.0.0.1" in str(err.value)
