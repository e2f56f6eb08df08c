"""Hot swaps and Redis failures under concurrent load: zero failed requests, every answer
correct for the version it names."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from plexrec.models.snapshot import Snapshot
from plexrec.proto.plexrec.v1 import plexrec_pb2 as pb
from plexrec.proto.plexrec.v1 import plexrec_pb2_grpc as pb_grpc
from plexrec.serving.client import EmbeddingClient, ServingError, decode_embeddings
from plexrec.serving.publish import publish
from plexrec.serving.redis_process import RedisProcess
from tests.serving.server_helpers import ServerThread, config, exact_top_k, make_snapshot


class Load:
    """Client tasks hammering GetEmbeddings and Retrieve in their own thread and event loop,
    checking each answer against the snapshot of the version it names."""

    def __init__(self, target: str, snaps: dict[str, Snapshot], tasks: int = 6) -> None:
        self.target, self.snaps, self.tasks = target, snaps, tasks
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.versions_seen: list[str] = []
        self.count = 0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = pb_grpc.EmbeddingServiceStub(channel)
            await asyncio.gather(*(self._worker(stub, i) for i in range(self.tasks)))

    async def _worker(self, stub: pb_grpc.EmbeddingServiceStub, seed: int) -> None:
        rng = np.random.default_rng(seed)
        any_snap = next(iter(self.snaps.values()))
        user_ids = np.asarray(any_snap.ids("user"))
        while not self.stop.is_set():
            try:
                if rng.random() < 0.7:
                    ids = rng.choice(user_ids, 5, replace=False)
                    r = await stub.GetEmbeddings(pb.GetEmbeddingsRequest(
                        entity=pb.USER, ids=ids.tolist()), timeout=5)
                    snap = self.snaps[r.version]
                    got = decode_embeddings(r).vectors
                    want = np.asarray(snap.vectors("user"))[snap.row_of("user", ids)]
                    if not np.array_equal(got.view("<u4"), want.view("<u4")):
                        self.errors.append(f"wrong vectors for {ids.tolist()} in {r.version}")
                else:
                    user = int(rng.choice(user_ids))
                    r = await stub.Retrieve(pb.RetrieveRequest(user_id=user, k=10), timeout=5)
                    snap = self.snaps[r.version]
                    query = snap.vectors("user")[snap.row_of("user", [user])[0]]
                    if list(r.item_ids) != exact_top_k(snap, query, 10).tolist():
                        self.errors.append(f"wrong top-10 for user {user} in {r.version}")
                self.versions_seen.append(r.version)
                self.count += 1
            except grpc.aio.AioRpcError as exc:
                self.errors.append(f"{exc.code().name}: {exc.details()}")


def _wait_for(predicate, timeout: float = 15.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_hot_swap_under_load_has_zero_errors(tmp_path: Path, redis_url: str) -> None:
    root = tmp_path / "snapshots"
    v1 = make_snapshot(root, seed=30, run_id="one")
    v2 = make_snapshot(root, seed=31, run_id="two")
    publish(v1.path, redis_url, namespace="swap", progress=False)
    snaps = {v1.version: v1, v2.version: v2}
    with ServerThread(config(root, redis_url, namespace="swap")) as srv:
        assert srv.server.version == v1.version
        with Load(srv.target, snaps) as load:
            _wait_for(lambda: load.count > 200)
            publish(v2.path, redis_url, namespace="swap", progress=False)
            _wait_for(lambda: srv.server.version == v2.version)
            seen = load.count
            _wait_for(lambda: load.count > seen + 200)
        assert load.errors == []
        assert load.versions_seen[0] == v1.version and load.versions_seen[-1] == v2.version
        with EmbeddingClient(srv.target) as client:
            assert client.info()["version"] == v2.version
            old = client.embeddings("user", v1.ids("user")[:3], version=v1.version)
            assert old.version == v1.version
            np.testing.assert_array_equal(old.vectors, v1.vectors("user")[:3])


def test_redis_killed_during_load_answers_stay_correct(tmp_path: Path) -> None:
    root = tmp_path / "snapshots"
    snap = make_snapshot(root, seed=40)
    elsewhere = make_snapshot(tmp_path / "elsewhere", seed=41, run_id="remote")
    with RedisProcess() as redis_proc:
        publish(elsewhere.path, redis_proc.url, namespace="kill", progress=False)
        publish(snap.path, redis_proc.url, namespace="kill", progress=False)
        cfg = config(root, redis_proc.url, namespace="kill")
        with ServerThread(cfg) as srv:
            with EmbeddingClient(srv.target) as client:
                remote = client.embeddings("user", elsewhere.ids("user")[:2],
                                           version=elsewhere.version)
                np.testing.assert_array_equal(remote.vectors, elsewhere.vectors("user")[:2])
            with Load(srv.target, {snap.version: snap}) as load:
                _wait_for(lambda: load.count > 200)
                hits_before = srv.server.store.stats().redis_hits
                redis_proc.kill()
                killed_at = load.count
                _wait_for(lambda: load.count > killed_at + 300)
            assert load.errors == []
            stats = srv.server.store.stats()
            assert hits_before > 0 and stats.redis_errors > 0 and stats.snapshot_reads > 0
            with EmbeddingClient(srv.target) as client, pytest.raises(ServingError) as err:
                client.embeddings("user", elsewhere.ids("user")[:2], version=elsewhere.version)
            assert err.value.code == grpc.StatusCode.UNAVAILABLE
            assert elsewhere.version in err.value.details
