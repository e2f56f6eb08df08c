"""A small synchronous Python client of the EmbeddingService, used by `plexrec query`, the tests
and other services. gRPC failures surface as ServingError carrying the status code and details
(a PlexrecError, so the CLI prints it as one line)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, cast

import grpc
import numpy as np

from plexrec.features.errors import PlexrecError
from plexrec.models.vector_codecs import CODECS, CodecError
from plexrec.proto.plexrec.v1 import plexrec_pb2 as pb
from plexrec.proto.plexrec.v1 import plexrec_pb2_grpc as pb_grpc

ENTITIES = {"user": pb.USER, "item": pb.ITEM}
ENCODINGS = {"float32": pb.ENCODING_FLOAT32, "stored": pb.ENCODING_STORED}


class ServingError(PlexrecError):
    """A failed RPC: `.code` is the grpc.StatusCode, `.details` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        super().__init__(f"{code.name}: {details}")


class Embeddings(NamedTuple):
    """`vectors` are float32, whatever encoding came over the wire."""

    found_ids: np.ndarray
    vectors: np.ndarray
    missing_ids: np.ndarray
    version: str


class Retrieved(NamedTuple):
    item_ids: np.ndarray
    scores: np.ndarray
    version: str


def decode_embeddings(response: pb.GetEmbeddingsResponse,
                      rotation: np.ndarray | None = None) -> Embeddings:
    """The response's vectors as float32 [found, width]: float32 bytes as they are, stored codes
    decoded as the proto's comments say (`rotation`: GetModelInfoResponse.rotation as a
    [width, width] matrix, needed when the response is `rotated`)."""
    dtype = response.dtype or "float32"
    codec = CODECS.get(dtype)
    if codec is None:
        raise PlexrecError(f"GetEmbeddings answered dtype {dtype!r}, which this client cannot "
                           f"decode (known: {', '.join(CODECS)})")
    n, width = len(response.found_ids), max(response.width, 1)
    code_bytes = n * codec.code_width(width) * codec.code_dtype.itemsize
    scale_bytes = 4 * n if codec.has_scale else 0
    if len(response.vectors) != code_bytes or len(response.scales) != scale_bytes:
        raise PlexrecError(f"GetEmbeddings answered {len(response.vectors)} vector bytes and "
                           f"{len(response.scales)} scale bytes for {n} {dtype} vectors of "
                           f"width {width}; expected {code_bytes} and {scale_bytes}")
    if response.rotated and rotation is None:
        raise PlexrecError(f"version {response.version} stores rotated binary codes: decoding "
                           "needs its rotation (GetModelInfo)")
    codes = np.frombuffer(response.vectors, dtype=codec.code_dtype).reshape(
        n, codec.code_width(width))
    scales = np.frombuffer(response.scales, dtype="<f4") if codec.has_scale else None
    try:
        vectors = codec.decode(codes, scales, width, rotation if response.rotated else None)
    except CodecError as exc:
        raise PlexrecError(f"cannot decode the {dtype} vectors of version "
                           f"{response.version}: {exc}") from None
    return Embeddings(np.asarray(response.found_ids, dtype=np.int64), vectors,
                      np.asarray(response.missing_ids, dtype=np.int64), response.version)


def _entity(entity: str | int) -> pb.Entity:
    if isinstance(entity, int):
        return cast(pb.Entity, entity)
    try:
        return ENTITIES[entity.lower()]
    except KeyError:
        raise PlexrecError(f"entity must be 'user' or 'item', got {entity!r}") from None


def retrieve_request(*, user_id: int | None = None, user_features: Mapping[str, str] | None = None,
                     vector: Sequence[float] | np.ndarray | None = None, k: int = 10,
                     exclude: Iterable[int] = (), version: str = "",
                     width: int = 0) -> pb.RetrieveRequest:
    """Exactly one of user_id, user_features, vector; `width` > 0 scores by that prefix."""
    given = [x is not None for x in (user_id, user_features, vector)]
    if sum(given) != 1:
        raise PlexrecError("retrieve needs exactly one of user_id, user_features, vector")
    request = pb.RetrieveRequest(k=k, exclude_item_ids=list(exclude), version=version,
                                 width=width)
    if user_id is not None:
        request.user_id = int(user_id)
    elif user_features is not None:
        request.user_features.values.update({str(a): str(b) for a, b in user_features.items()})
    else:
        request.query_vector.values.extend(np.asarray(vector, dtype=np.float32).tolist())
    return request


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise PlexrecError(f"{what}: cannot read {path}: {exc.strerror}") from None


def channel_credentials(tls_ca: str | Path | None = None, tls_cert: str | Path | None = None,
                        tls_key: str | Path | None = None) -> grpc.ChannelCredentials:
    """TLS trusting `tls_ca` (None: the system roots); `tls_cert`/`tls_key` for mutual TLS."""
    if (tls_cert is None) != (tls_key is None):
        raise PlexrecError("client TLS: give both a certificate and its key, or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=None if tls_ca is None else _read(tls_ca, "tls_ca"),
        private_key=None if tls_key is None else _read(tls_key, "tls_key"),
        certificate_chain=None if tls_cert is None else _read(tls_cert, "tls_cert"))


class EmbeddingClient:
    """One channel to a server; every call has a deadline of `timeout` seconds. `tls` (from
    `channel_credentials`) makes the channel secure, `token` is sent as `authorization: Bearer`
    metadata; `server_name` overrides the name checked against the server certificate."""

    def __init__(self, target: str, timeout: float = 5.0, max_message_bytes: int = 64 << 20, *,
                 tls: grpc.ChannelCredentials | None = None, token: str | None = None,
                 server_name: str | None = None) -> None:
        self.target, self.timeout = target, timeout
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        self.channel = (grpc.secure_channel(target, tls, options=options) if tls is not None
                        else grpc.insecure_channel(target, options=options))
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.stub = pb_grpc.EmbeddingServiceStub(self.channel)
        self._rotations: dict[str, np.ndarray] = {}

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise ServingError(exc.code(), exc.details() or "") from exc

    def info(self, version: str = "") -> dict[str, Any]:
        r = self._call(self.stub.GetModelInfo, pb.GetModelInfoRequest(version=version))
        return {"version": r.version, "width": r.width, "user_count": r.user_count,
                "item_count": r.item_count, "run_id": r.run_id, "index_kind": r.index_kind,
                "partitions": r.partitions, "metrics": dict(r.metrics),
                "has_user_tower": r.has_user_tower, "loaded_versions": list(r.loaded_versions),
                "dtype": r.dtype or "float32"}

    def rotation(self, version: str) -> np.ndarray:
        """The binary rotation of a version (GetModelInfo), fetched once per version."""
        if version not in self._rotations:
            r = self._call(self.stub.GetModelInfo, pb.GetModelInfoRequest(version=version))
            if len(r.rotation) != 4 * r.width * r.width:
                raise PlexrecError(f"version {version} has no rotation of width {r.width} "
                                   f"({len(r.rotation)} bytes)")
            self._rotations[version] = np.frombuffer(r.rotation, dtype="<f4").reshape(
                r.width, r.width)
        return self._rotations[version]

    def embeddings(self, entity: str | int, ids: Iterable[int], version: str = "", *,
                   encoding: str = "float32", width: int = 0) -> Embeddings:
        """Vectors of ids as float32; `encoding="stored"` has the server send the stored codes
        and scales (fewer bytes), decoded here; `width` > 0 asks for that prefix."""
        if encoding not in ENCODINGS:
            raise PlexrecError(f"encoding must be one of {', '.join(ENCODINGS)}, got "
                               f"{encoding!r}")
        request = pb.GetEmbeddingsRequest(entity=_entity(entity), ids=[int(i) for i in ids],
                                          version=version, encoding=ENCODINGS[encoding],
                                          width=width)
        response = self._call(self.stub.GetEmbeddings, request)
        rotation = self.rotation(response.version) if response.rotated else None
        return decode_embeddings(response, rotation)

    def retrieve(self, *, user_id: int | None = None,
                 user_features: Mapping[str, str] | None = None,
                 vector: Sequence[float] | np.ndarray | None = None, k: int = 10,
                 exclude: Iterable[int] = (), version: str = "", width: int = 0) -> Retrieved:
        request = retrieve_request(user_id=user_id, user_features=user_features, vector=vector,
                                   k=k, exclude=exclude, version=version, width=width)
        r = self._call(self.stub.Retrieve, request)
        return Retrieved(np.asarray(r.item_ids, dtype=np.int64),
                         np.asarray(r.scores, dtype=np.float32), r.version)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
