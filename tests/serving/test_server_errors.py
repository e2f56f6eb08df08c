"""Every malformed request gets its status code with a message naming the culprit; health goes
SERVING; reflection lists the service; `plexrec query` prints the code name on failure."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from plexrec.proto.plexrec.v1 import plexrec_pb2 as pb
from plexrec.serving.client import EmbeddingClient, ServingError
from tests.serving.server_helpers import ServerThread, config, make_snapshot

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    snap = make_snapshot(tmp_path_factory.mktemp("snap"), width=8, seed=20)
    with ServerThread(config(snap.path, max_ids=100, max_k=50)) as srv:
        yield srv, snap


def _fails(call: Callable[[], object], code: grpc.StatusCode, *words: str) -> None:
    with pytest.raises(ServingError) as err:
        call()
    assert err.value.code == code, err.value
    for word in words:
        assert word in err.value.details, (word, err.value.details)


def test_bad_inputs_get_their_status_codes(server) -> None:
    srv, snap = server
    user = int(snap.ids("user")[0])
    with EmbeddingClient(srv.target) as c:
        _fails(lambda: c.embeddings(0, [1]), INVALID, "entity")
        _fails(lambda: c.embeddings("item", []), INVALID, "ids", "no ids")
        _fails(lambda: c.embeddings("item", range(101)), INVALID, "101", "100")
        _fails(lambda: c.embeddings("item", [1], version="v-nope"), NOT_FOUND, "v-nope")
        _fails(lambda: c.embeddings("item", [1], version="bad:version"), INVALID,
               "bad:version", "not a version name")
        # Paths and overlong strings never reach the disk: not INTERNAL, and no NOT_FOUND that
        # would tell whether a manifest exists elsewhere on the machine.
        for hostile in (f"../{snap.path.name}", str(snap.path), "a/b", "v" * 300, "x\x00y"):
            _fails(lambda v=hostile: c.embeddings("item", [1], version=v), INVALID, "version")
            _fails(lambda v=hostile: c.info(version=v), INVALID, "version")
        _fails(lambda: c.embeddings("item", [1], version="v" * 300), INVALID, "300 characters")
        _fails(lambda: c.retrieve(user_id=user, k=0), INVALID, "k")
        _fails(lambda: c.retrieve(user_id=user, k=-3), INVALID, "-3")
        _fails(lambda: c.retrieve(user_id=user, k=51), INVALID, "51", "1..50")
        _fails(lambda: c.retrieve(user_id=user, k=5, exclude=range(101)), INVALID,
               "exclude_item_ids")
        _fails(lambda: c.retrieve(vector=[1.0, 2.0], k=5), INVALID, "query_vector", "width 8")
        _fails(lambda: c.retrieve(user_id=999_999, k=5), NOT_FOUND, "user 999999",
               snap.version)
        _fails(lambda: c.retrieve(user_id=user, k=5, version="v-gone"), NOT_FOUND, "v-gone")
        _fails(lambda: c.info(version="v-gone"), NOT_FOUND, "v-gone")
        with pytest.raises(grpc.RpcError) as err:
            c.stub.Retrieve(pb.RetrieveRequest(k=5), timeout=5)
        assert err.value.code() == INVALID and "query" in err.value.details()


def test_health_and_reflection(server) -> None:
    srv, _ = server
    with grpc.insecure_channel(srv.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "plexrec.v1.EmbeddingService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert "plexrec.v1.EmbeddingService" in names


def _plexrec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plexrec.cli.main", *args], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])


def test_cli_query_prints_json_and_error_codes(server) -> None:
    srv, snap = server
    ok = _plexrec("query", "--target", srv.target, "retrieve", "--user",
                  str(int(snap.ids("user")[1])), "--k", "3")
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["version"] == snap.version and len(out["item_ids"]) == 3
    bad = _plexrec("query", "--target", srv.target, "retrieve", "--user", "999", "--k", "3")
    assert bad.returncode != 0
    assert f"error: NOT_FOUND: user 999 not in version {snap.version}" in bad.stderr
    bad_k = _plexrec("query", "--target", srv.target, "embeddings", "--entity", "item",
                     "--ids", "")
    assert bad_k.returncode != 0 and "INVALID_ARGUMENT" in bad_k.stderr
