"""Hostile clients: every field of every request swept with hostile values never reaches
INTERNAL or UNKNOWN and never gets a non-finite number back; undecodable bodies are
INVALID_ARGUMENT on every service; one client holding hundreds of half-open streams on its
connection locks nobody else out."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from plexrec.proto.plexrec.v1 import plexrec_pb2 as pb
from tests.serving.server_helpers import ServerThread, config, make_snapshot
from tests.serving.tower_helpers import tower_files

WIDTH = 8
SERVICE = "/plexrec.v1.EmbeddingService/"
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}

STRINGS = ["", " ", "x" * 300, "../../etc", "/etc/passwd", "a\x00b", "inf", "1e400", "nan",
           "-1e400", "\u00fc" * 64, "a|b|" * 400, "{}", "v:1"]
INTS = [0, 1, -1, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)]
FLOATS = [math.inf, -math.inf, math.nan, 3.0e38, -3.0e38, 1e-45, 0.0]
INT32_TYPES = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_ENUM}
FEATURE_NAMES = ["country", "tags", "age"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, Any]]:
    tmp = tmp_path_factory.mktemp("hostile")
    snap = make_snapshot(tmp / "snap", width=WIDTH, seed=70,
                         extra_files=tower_files(tmp, WIDTH))
    with ServerThread(config(snap.path, max_ids=100, max_k=50)) as srv:
        yield srv, snap


def _scalars(field: FieldDescriptor) -> list[Any]:
    if field.type == FieldDescriptor.TYPE_STRING:
        return STRINGS
    if field.type in INT32_TYPES:
        return [v for v in INTS if -(2**31) <= v < 2**31]
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return FLOATS
    if field.type == FieldDescriptor.TYPE_BOOL:
        return [True, False]
    return INTS


def _is_map(field: FieldDescriptor) -> bool:
    return (field.type == FieldDescriptor.TYPE_MESSAGE
            and field.message_type.GetOptions().map_entry)


def _field_variants(cls: type[Message]) -> Iterator[tuple[str, Message]]:
    """Messages of `cls` with one field set to one hostile value each (recursing into message
    fields; maps get hostile keys and hostile values of the known feature names)."""
    for field in cls.DESCRIPTOR.fields:
        if _is_map(field):
            for key in STRINGS:
                msg = cls()
                getattr(msg, field.name)[key] = "1"
                yield f"{field.name}[{key[:20]!r}]", msg
            for name in FEATURE_NAMES:
                for value in STRINGS:
                    msg = cls()
                    getattr(msg, field.name)[name] = value
                    yield f"{field.name}[{name}]={value[:20]!r}", msg
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            for path, sub in _field_variants(field.message_type._concrete_class):
                msg = cls()
                getattr(msg, field.name).CopyFrom(sub)
                yield f"{field.name}.{path}", msg
        elif field.is_repeated:
            for value in _scalars(field):
                for count in (1, 3, 101, WIDTH):
                    msg = cls()
                    getattr(msg, field.name).extend([value] * count)
                    yield f"{field.name}=[{value!r}]*{count}", msg
        else:
            for value in _scalars(field):
                msg = cls()
                setattr(msg, field.name, value)
                yield f"{field.name}={value!r}", msg


def _bases(snap: Any) -> dict[str, list[Message]]:
    user = int(snap.ids("user")[0])
    return {
        "GetEmbeddings": [pb.GetEmbeddingsRequest(entity=pb.USER, ids=[user]),
                          pb.GetEmbeddingsRequest(entity=pb.ITEM, ids=[1])],
        "Retrieve": [pb.RetrieveRequest(user_id=user, k=5),
                     pb.RetrieveRequest(query_vector=pb.QueryVector(values=[0.1] * WIDTH), k=5),
                     pb.RetrieveRequest(user_features=pb.UserFeatures(
                         values={"country": "de", "age": "3"}), k=5)],
        "GetModelInfo": [pb.GetModelInfoRequest()],
    }


def _check_finite(method: str, response: Any, what: str) -> None:
    if method == "GetEmbeddings":
        assert np.isfinite(np.frombuffer(response.vectors, dtype="<f4")).all(), what
    elif method == "Retrieve":
        assert np.isfinite(np.asarray(response.scores)).all(), what


def test_every_field_of_every_request_with_hostile_values(server) -> None:
    srv, snap = server
    seen: dict[grpc.StatusCode, int] = {}
    with grpc.insecure_channel(srv.target) as channel:
        stub_of = {name: channel.unary_unary(
            SERVICE + name, request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=getattr(pb, f"{name}Response").FromString)
            for name in ("GetEmbeddings", "Retrieve", "GetModelInfo")}
        for method, bases in _bases(snap).items():
            cls = type(bases[0])
            for base in bases:
                for path, variant in _field_variants(cls):
                    request = cls()
                    request.CopyFrom(base)
                    request.MergeFrom(variant)
                    what = f"{method}({path})"
                    try:
                        response = stub_of[method](request, timeout=10)
                        code = grpc.StatusCode.OK
                        _check_finite(method, response, what)
                    except grpc.RpcError as exc:
                        code = exc.code()
                        assert code in ALLOWED, f"{what}: {code} {exc.details()}"
                    seen[code] = seen.get(code, 0) + 1
    assert seen.get(grpc.StatusCode.OK, 0) > 0
    assert seen.get(grpc.StatusCode.INVALID_ARGUMENT, 0) > 0


def test_non_finite_user_features_and_overflowing_queries_are_rejected(server) -> None:
    srv, snap = server
    with grpc.insecure_channel(srv.target) as channel:
        retrieve = channel.unary_unary(SERVICE + "Retrieve",
                                       request_serializer=pb.RetrieveRequest.SerializeToString,
                                       response_deserializer=pb.RetrieveResponse.FromString)
        for value in ("inf", "-inf", "nan", "1e400", "NaN"):
            request = pb.RetrieveRequest(user_features=pb.UserFeatures(values={"age": value}),
                                         k=5)
            with pytest.raises(grpc.RpcError) as err:
                retrieve(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "age" in err.value.details()
        huge = pb.RetrieveRequest(query_vector=pb.QueryVector(values=[3.0e38] * WIDTH), k=5)
        with pytest.raises(grpc.RpcError) as err:
            retrieve(huge, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "overflow" in err.value.details()


BAD_UTF8_FIELD_3 = b"\x1a\x02\xff\xfe"  # field 3 (version), length 2, not UTF-8
TRUNCATED = b"\x12\x05ab"  # field 2 claims 5 bytes, 2 follow


@pytest.mark.parametrize(("method", "body"), [
    (SERVICE + "GetEmbeddings", BAD_UTF8_FIELD_3),
    (SERVICE + "GetEmbeddings", TRUNCATED),
    (SERVICE + "Retrieve", b"\x32\x01\xc3"),  # field 6 (version): a cut two-byte sequence
    (SERVICE + "GetModelInfo", b"\x0a\x01\x80"),
    ("/grpc.health.v1.Health/Check", b"\x0a\x02\xff\xfe"),
])
def test_undecodable_bodies_are_invalid_argument(server, method: str, body: bytes) -> None:
    srv, _ = server
    with grpc.insecure_channel(srv.target) as channel:
        call = channel.unary_unary(method)
        with pytest.raises(grpc.RpcError) as err:
            call(body, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert "not a valid" in err.value.details()


def test_undecodable_reflection_request_is_invalid_argument(server) -> None:
    srv, _ = server
    with grpc.insecure_channel(srv.target) as channel:
        call = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/"
                                     "ServerReflectionInfo")
        with pytest.raises(grpc.RpcError) as err:
            list(call(iter([b"\x0a\x02\xff\xfe"]), timeout=5))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def _half_open_lockout(target: str, streams: int) -> tuple[int, int]:
    """Client A opens `streams` calls that send headers and never a message; client B, on its
    own connection, must still get health and embeddings answers."""
    never = asyncio.Event()

    async def silent() -> Any:
        await never.wait()
        yield b""

    hostile = grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
    calls = [hostile.stream_unary(SERVICE + "GetModelInfo")(silent()) for _ in range(streams)]
    try:
        await asyncio.sleep(1.0)
        async with grpc.aio.insecure_channel(
                target, options=[("grpc.use_local_subchannel_pool", 1)]) as fair:
            health = await health_pb2_grpc.HealthStub(fair).Check(
                health_pb2.HealthCheckRequest(), timeout=5)
            info = await fair.unary_unary(
                SERVICE + "GetModelInfo",
                request_serializer=pb.GetModelInfoRequest.SerializeToString,
                response_deserializer=pb.GetModelInfoResponse.FromString)(
                    pb.GetModelInfoRequest(), timeout=5)
        return health.status, info.width
    finally:
        for call in calls:
            call.cancel()
        await hostile.close()


def test_half_open_streams_of_one_client_lock_nobody_else_out(tmp_path: Path) -> None:
    snap = make_snapshot(tmp_path / "snap", width=WIDTH, seed=71)
    cfg = config(snap.path, max_concurrent_rpcs=512, max_streams_per_connection=64)
    with ServerThread(cfg) as srv:
        status, width = asyncio.run(_half_open_lockout(srv.target, 600))
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert width == WIDTH
