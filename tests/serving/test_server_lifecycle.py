"""Server lifecycle under a stalled Redis: health is NOT_SERVING while the first version loads and
SERVING after; a request past its deadline gets DEADLINE_EXCEEDED and the server answers
correctly afterwards; max_concurrent_rpcs rejects extra calls with RESOURCE_EXHAUSTED.

Redis 7.0 blocks even CLIENT UNPAUSE during `CLIENT PAUSE ... ALL`, so every pause is timed and
each test waits for it to end (other tests share the session Redis)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from plexrec.proto.plexrec.v1 import plexrec_pb2 as pb
from plexrec.serving.client import EmbeddingClient, ServingError, decode_embeddings
from plexrec.serving.server import SERVICE_NAME, EmbeddingServer
from tests.serving.server_helpers import ServerThread, config, exact_top_k, make_snapshot

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _Paused:
    """Pauses every Redis client for `ms`; on exit waits until Redis answers again."""

    def __init__(self, url: str, ms: int) -> None:
        self.url, self.ms = url, ms

    def __enter__(self) -> _Paused:
        redis.Redis.from_url(self.url).execute_command("CLIENT", "PAUSE", self.ms, "ALL")
        return self

    def __exit__(self, *exc: object) -> None:
        assert redis.Redis.from_url(self.url, socket_timeout=self.ms / 1000 + 10).ping()


def _wait_for(cond: Callable[[], bool], what: str, timeout: float = 2.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _health(target: str) -> list[int]:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return [stub.Check(health_pb2.HealthCheckRequest(service=s), timeout=2,
                           wait_for_ready=True).status for s in ("", SERVICE_NAME)]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_health_is_not_serving_while_the_first_version_loads(
        tmp_path: Path, redis_url: str, loop: asyncio.AbstractEventLoop) -> None:
    snap = make_snapshot(tmp_path / "snaps", seed=31)
    server = EmbeddingServer(config(tmp_path / "snaps", redis_url, redis_timeout_s=30.0))
    try:
        with _Paused(redis_url, 3000):
            starting = asyncio.run_coroutine_threadsafe(server.start(), loop)
            _wait_for(lambda: server.port is not None, "the port to be bound")
            target = f"127.0.0.1:{server.port}"
            assert _health(target) == [NOT_SERVING, NOT_SERVING]
            with EmbeddingClient(target, timeout=2) as c, pytest.raises(ServingError) as err:
                c.info()
            assert err.value.code == grpc.StatusCode.UNAVAILABLE
            assert "loading" in err.value.details
            assert not starting.done()
        assert starting.result(15) == server.port
        assert _health(target) == [SERVING, SERVING]
        with EmbeddingClient(target) as c:
            assert c.info()["version"] == snap.version
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0.2), loop).result(15)


def test_deadline_exceeded_while_redis_stalls_then_answers(tmp_path: Path,
                                                           redis_url: str) -> None:
    snap = make_snapshot(tmp_path / "snaps", seed=32)
    users = np.asarray(snap.ids("user"))[[3, 0, 7]]
    want = np.asarray(snap.vectors("user"))[[3, 0, 7]].astype("<f4")
    query = np.asarray(snap.vectors("user"))[1].astype(np.float32)
    with ServerThread(config(tmp_path / "snaps", redis_url, redis_timeout_s=30.0)) as srv:
        with _Paused(redis_url, 2000):
            with EmbeddingClient(srv.target, timeout=0.3) as hasty, \
                    pytest.raises(ServingError) as err:
                hasty.embeddings("user", users)
            assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            with EmbeddingClient(srv.target, timeout=2) as c:
                got = c.retrieve(vector=query, k=5)
            np.testing.assert_array_equal(got.item_ids, exact_top_k(snap, query, 5))
        with EmbeddingClient(srv.target) as c:
            for _ in range(2):
                emb = c.embeddings("user", [*users.tolist(), 5])
                assert emb.found_ids.tolist() == users.tolist()
                assert emb.missing_ids.tolist() == [5]
                np.testing.assert_array_equal(emb.vectors.view("<u4"), want.view("<u4"))
            assert c.info()["version"] == snap.version


def test_max_concurrent_rpcs_rejects_calls_beyond_the_limit_but_not_health_checks(tmp_path: Path,
                                                            redis_url: str) -> None:
    snap = make_snapshot(tmp_path / "snaps", seed=33)
    users = np.asarray(snap.ids("user"))[[2, 5]]
    want = np.asarray(snap.vectors("user"))[[2, 5]].astype("<f4")
    cfg = config(tmp_path / "snaps", redis_url, redis_timeout_s=30.0, max_concurrent_rpcs=1)
    request = pb.GetEmbeddingsRequest(entity=pb.USER, ids=users.tolist())
    with ServerThread(cfg) as srv, EmbeddingClient(srv.target) as c:
        with _Paused(redis_url, 2000):
            stalled = c.stub.GetEmbeddings.future(request, timeout=15)
            _wait_for(lambda: len(srv.server.store._loads) > 0, "the stalled look-up")
            with pytest.raises(ServingError) as err:
                c.info()
            assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            with grpc.insecure_channel(srv.target) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=2)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        emb = decode_embeddings(stalled.result(15))
        np.testing.assert_array_equal(emb.vectors.view("<u4"), want.view("<u4"))
        assert c.info()["version"] == snap.version
