"""Every vector dtype end to end: snapshot -> publish -> Redis -> server -> client, in float32
(decoded on the server) and in the stored encoding (decoded by the client); malformed stored
rows are DATA_LOSS naming the ids or the key; Matryoshka prefix widths for GetEmbeddings and
Retrieve."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis

from plexrec.cli.main import main as cli_main
from plexrec.features.errors import PlexrecError
from plexrec.models.snapshot import Snapshot, write_snapshot
from plexrec.models.vector_codecs import CODECS, learn_itq_rotation
from plexrec.proto.plexrec.v1 import plexrec_pb2 as pb
from plexrec.serving import redis_keys as rk
from plexrec.serving.client import EmbeddingClient, ServingError, decode_embeddings
from plexrec.serving.publish import publish
from tests.serving.server_helpers import ServerThread, config, exact_top_k

WIDTH = 12
PARTS = 4
INVALID = grpc.StatusCode.INVALID_ARGUMENT
DATA_LOSS = grpc.StatusCode.DATA_LOSS


def _raw(seed: int, users: int = 40, items: int = 150) -> tuple[tuple, tuple]:
    rng = np.random.default_rng(seed)
    return ((np.arange(1, users + 1, dtype=np.int64) * 7,
             rng.normal(size=(users, WIDTH)).astype(np.float32)),
            (np.arange(1, items + 1, dtype=np.int64) * 13 + 1000,
             rng.normal(size=(items, WIDTH)).astype(np.float32)))


def _snapshot(root: Path, dtype: str, seed: int = 0, rotate: bool = True) -> Snapshot:
    users, items = _raw(seed)
    rotation = (learn_itq_rotation(np.concatenate([users[1], items[1]]), iterations=10)
                if dtype == "binary" and rotate else None)
    return Snapshot.open(write_snapshot(root, users=users, items=items, run_id=f"run-{dtype}",
                                        dtype=dtype, rotation=rotation))


def _fails(call, code: grpc.StatusCode, *words: str) -> None:
    with pytest.raises(ServingError) as err:
        call()
    assert err.value.code == code, err.value
    for word in words:
        assert word in err.value.details, (word, err.value.details)


def _field_key(ns: str, version: str, id_: int, entity: str = "item") -> str:
    part = int(rk.partition_of_ids(np.array([id_]), PARTS)[0])
    return rk.partition_key(ns, version, part, entity)


@pytest.mark.parametrize("dtype", list(CODECS))
def test_each_dtype_round_trips_through_redis_and_the_server(tmp_path: Path, redis_url: str,
                                                             dtype: str) -> None:
    snap = _snapshot(tmp_path, dtype, seed=1)
    codec = CODECS[dtype]
    ns = f"dt-{dtype}"
    publish(snap.path, redis_url, namespace=ns, partitions=PARTS, progress=False)
    r = redis.Redis.from_url(redis_url)
    ids = np.asarray(snap.ids("item"))[[5, 0, 149, 5, 77]]
    values = [r.hget(_field_key(ns, snap.version, int(i)), str(int(i))) for i in ids]
    r.close()
    assert {len(v) for v in values} == {codec.bytes_per_vector(WIDTH)}
    rows = snap.row_of("item", ids)
    assert b"".join(values) == snap.stored_rows("item", rows).tobytes()

    _, raw_items = _raw(1)
    with (ServerThread(config(snap.path, redis_url, namespace=ns)) as srv,
          EmbeddingClient(srv.target) as client):
        info = client.info()
        assert info["dtype"] == dtype and info["version"] == snap.version
        got = client.embeddings("item", [*ids.tolist(), -1])
        assert got.found_ids.tolist() == ids.tolist() and got.missing_ids.tolist() == [-1]
        np.testing.assert_array_equal(got.vectors, snap.vectors("item")[rows])
        err = np.linalg.norm(got.vectors.astype(np.float64) - raw_items[1][rows], axis=1)
        assert (err <= codec.max_error(raw_items[1][rows])).all()
        stored = client.embeddings("item", ids.tolist(), encoding="stored")
        np.testing.assert_allclose(stored.vectors, got.vectors, rtol=1e-6, atol=1e-6)
        response = client.stub.GetEmbeddings(pb.GetEmbeddingsRequest(
            entity=pb.ITEM, ids=ids.tolist(), encoding=pb.ENCODING_STORED))
        assert response.dtype == dtype and response.width == WIDTH
        assert response.rotated == (dtype == "binary")
        assert len(response.vectors) + len(response.scales) == 5 * codec.bytes_per_vector(WIDTH)
        stats = srv.server.store.stats()
        assert stats.redis_hits >= 10 and stats.snapshot_reads == 0

        user_row = 3
        user = int(snap.ids("user")[user_row])
        hits = client.retrieve(user_id=user, k=20)
        want = exact_top_k(snap, snap.vectors("user")[user_row], 20)
        assert hits.item_ids.tolist() == want.tolist()


def test_a_redis_only_binary_version_decodes_with_its_published_rotation(
        tmp_path: Path, redis_url: str) -> None:
    binary = _snapshot(tmp_path / "binary", "binary", seed=2)
    local = _snapshot(tmp_path / "local", "float32", seed=3)
    publish(binary.path, redis_url, namespace="rot", partitions=PARTS, progress=False)
    ids = np.asarray(binary.ids("user"))[:6]
    with (ServerThread(config(local.path, redis_url, namespace="rot")) as srv,
          EmbeddingClient(srv.target) as client):
        assert client.info()["version"] == local.version
        assert client.info(binary.version)["dtype"] == "binary"
        for encoding in ("float32", "stored"):
            got = client.embeddings("user", ids.tolist(), version=binary.version,
                                    encoding=encoding)
            np.testing.assert_allclose(got.vectors, binary.vectors("user")[:6], rtol=1e-5,
                                       atol=1e-6)
        key = rk.version_file_key("rot", binary.version, "rotation.npy")
        r = redis.Redis.from_url(redis_url)
        r.set(key, b"\x93NUMPY tampered")
        r.close()
        _fails(lambda: client.embeddings("user", ids.tolist(), version=binary.version),
               DATA_LOSS, key, "sha256")


@pytest.mark.parametrize("damage", ["short", "nan_scale", "zero_scale"])
def test_malformed_stored_rows_in_redis_are_data_loss_or_come_from_disk(
        tmp_path: Path, redis_url: str, damage: str) -> None:
    snap = _snapshot(tmp_path / "int8", "int8", seed=4)
    other = _snapshot(tmp_path / "other", "float32", seed=5)
    publish(snap.path, redis_url, namespace="bad", partitions=PARTS, progress=False)
    victim = int(snap.ids("item")[17])
    key = _field_key("bad", snap.version, victim)
    r = redis.Redis.from_url(redis_url)
    value = bytearray(r.hget(key, str(victim)))
    if damage == "short":
        value = value[:-1]
    else:
        value[-4:] = np.array([np.nan if damage == "nan_scale" else 0.0], "<f4").tobytes()
    r.hset(key, str(victim), bytes(value))
    r.close()
    ids = [int(snap.ids("item")[3]), victim]
    with (ServerThread(config(other.path, redis_url, namespace="bad")) as srv,
          EmbeddingClient(srv.target) as client):
        for encoding in ("float32", "stored"):
            _fails(lambda e=encoding: client.embeddings("item", ids, version=snap.version,
                                                        encoding=e),
                   DATA_LOSS, str(victim), snap.version, f"{CODECS['int8'].bytes_per_vector(WIDTH)}"
                   " bytes of int8 with a finite scale > 0")
        assert srv.server.store.stats().redis_malformed >= 1
    with (ServerThread(config(snap.path, redis_url, namespace="bad")) as srv,
          EmbeddingClient(srv.target) as client):
        got = client.embeddings("item", ids)
        np.testing.assert_array_equal(got.vectors, snap.vectors("item")[[3, 17]])


def test_prefix_widths_for_embeddings_and_retrieval(tmp_path: Path, capsys) -> None:
    snap = _snapshot(tmp_path / "int8", "int8", seed=6)
    binary = _snapshot(tmp_path / "binary", "binary", seed=6)
    ids = np.asarray(snap.ids("item"))[[2, 9, 40]]
    with (ServerThread(config(snap.path)) as srv, EmbeddingClient(srv.target) as client):
        full = snap.vectors("item")[[2, 9, 40]]
        for encoding in ("float32", "stored"):
            got = client.embeddings("item", ids.tolist(), encoding=encoding, width=5)
            assert got.vectors.shape == (3, 5)
            np.testing.assert_allclose(got.vectors, full[:, :5], rtol=1e-6)
        assert client.embeddings("item", ids.tolist(), width=WIDTH).vectors.shape == (3, WIDTH)
        _fails(lambda: client.embeddings("item", ids.tolist(), width=13), INVALID,
               "width", "13", f"0..{WIDTH}")
        _fails(lambda: client.embeddings("item", ids.tolist(), width=-2), INVALID, "width", "-2")
        _fails(lambda: client._call(client.stub.GetEmbeddings, pb.GetEmbeddingsRequest(
            entity=pb.ITEM, ids=[1], encoding=7)), INVALID, "encoding", "got 7")

        items = np.asarray(snap.vectors("item"))[:, :6]
        items = items / np.linalg.norm(items, axis=1, keepdims=True)
        item_ids = np.asarray(snap.ids("item"))
        for row in (0, 11):
            query = snap.vectors("user")[row]
            want = item_ids[np.argsort(-(items @ query[:6]), kind="stable")][:15]
            got = client.retrieve(user_id=int(snap.ids("user")[row]), k=15, width=6)
            assert got.item_ids.tolist() == want.tolist()
            np.testing.assert_allclose(got.scores, np.sort(items @ query[:6])[::-1][:15],
                                       rtol=1e-5)
            by_vector = client.retrieve(vector=query[:6], k=15, width=6)
            assert by_vector.item_ids.tolist() == want.tolist()
        _fails(lambda: client.retrieve(vector=snap.vectors("user")[0], k=5, width=6), INVALID,
               "query_vector", "has 12 values", "width is 6")
        _fails(lambda: client.retrieve(user_id=int(snap.ids("user")[0]), k=5, width=99),
               INVALID, "width", "99")
        assert cli_main(["query", "--target", srv.target, "embeddings", "--entity", "item",
                         "--ids", ",".join(map(str, ids.tolist())), "--encoding", "stored",
                         "--width", "4"]) == 0
        line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        np.testing.assert_allclose(line["vectors"], full[:, :4], rtol=1e-6)
    with (ServerThread(config(binary.path)) as srv, EmbeddingClient(srv.target) as client):
        ids = np.asarray(binary.ids("user"))[:3]
        got = client.embeddings("user", ids.tolist(), width=4)
        np.testing.assert_allclose(got.vectors, binary.vectors("user")[:3, :4], rtol=1e-5)
        _fails(lambda: client.embeddings("user", ids.tolist(), encoding="stored", width=4),
               INVALID, "width", "rotated binary", "ENCODING_FLOAT32")


def test_client_refuses_a_response_it_cannot_decode() -> None:
    ok = pb.GetEmbeddingsResponse(version="v1", width=4, dtype="int8", found_ids=[1, 2],
                                  vectors=bytes(8), scales=np.ones(2, "<f4").tobytes())
    assert decode_embeddings(ok).vectors.shape == (2, 4)
    with pytest.raises(PlexrecError, match="7 vector bytes and 8 scale bytes"):
        decode_embeddings(pb.GetEmbeddingsResponse(version="v1", width=4, dtype="int8",
                                                   found_ids=[1, 2], vectors=bytes(7),
                                                   scales=bytes(8)))
    with pytest.raises(PlexrecError, match="dtype 'int3'"):
        decode_embeddings(pb.GetEmbeddingsResponse(version="v1", width=4, dtype="int3"))
    with pytest.raises(PlexrecError, match="needs its rotation"):
        decode_embeddings(pb.GetEmbeddingsResponse(
            version="v1", width=8, dtype="binary", found_ids=[1], vectors=bytes(1),
            scales=np.ones(1, "<f4").tobytes(), rotated=True))


def test_retiring_a_binary_version_removes_its_rotation(tmp_path: Path, redis_url: str) -> None:
    binary = _snapshot(tmp_path, "binary", seed=7)
    newer = _snapshot(tmp_path, "int8", seed=8)
    publish(binary.path, redis_url, namespace="ret", partitions=PARTS, progress=False)
    key = rk.version_file_key("ret", binary.version, "rotation.npy")
    r = redis.Redis.from_url(redis_url)
    assert r.get(key) == (binary.path / "rotation.npy").read_bytes()
    assert publish(binary.path, redis_url, namespace="ret", partitions=PARTS,
                   progress=False).skipped
    publish(newer.path, redis_url, namespace="ret", partitions=PARTS, keep=1, progress=False)
    left = list(r.scan_iter(match=f"plexrec:{{ret:{binary.version}*"))
    r.close()
    assert left == []
