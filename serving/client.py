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
from plexrec.proto.plexrec.v1 import plexrec_pb2 as pb
from plexrec.proto.plexrec.v1 import plexrec_pb2_grpc as pb_grpc

ENTITIES = {"user": pb.USER, "item": pb.ITEM}


class ServingError(PlexrecError):
    """A failed RPC: `.code` is the grpc.StatusCode, `.details` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        super().__init__(f"{code.name}: {details}")


class Embeddings(NamedTuple):
    found_ids: np.ndarray
    vectors: np.ndarray
    missing_ids: np.ndarray
    version: str


class Retrieved(NamedTuple):
    item_ids: np.ndarray
    scores: np.ndarray
    version: str


def decode_embeddings(response: pb.GetEmbeddingsResponse) -> Embeddings:
    """The packed little-endian float32 bytes as a [found, width] array."""
    vectors = np.frombuffer(response.vectors, dtype="<f4").reshape(-1, max(response.width, 1))
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
                     exclude: Iterable[int] = (), version: str = "") -> pb.RetrieveRequest:
    """Exactly one of user_id, user_features, vector."""
    given = [x is not None for x in (user_id, user_features, vector)]
    if sum(given) != 1:
        raise PlexrecError("retrieve needs exactly one of user_id, user_features, vector")
    request = pb.RetrieveRequest(k=k, exclude_item_ids=list(exclude), version=version)
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
                "has_user_tower": r.has_user_tower, "loaded_versions": list(r.loaded_versions)}

    def embeddings(self, entity: str | int, ids: Iterable[int], version: str = "") -> Embeddings:
        request = pb.GetEmbeddingsRequest(entity=_entity(entity), ids=[int(i) for i in ids],
                                          version=version)
        return decode_embeddings(self._call(self.stub.GetEmbeddings, request))

    def retrieve(self, *, user_id: int | None = None,
                 user_features: Mapping[str, str] | None = None,
                 vector: Sequence[float] | np.ndarray | None = None, k: int = 10,
                 exclude: Iterable[int] = (), version: str = "") -> Retrieved:
        request = retrieve_request(user_id=user_id, user_features=user_features, vector=vector,
                                   k=k, exclude=exclude, version=version)
        r = self._call(self.stub.Retrieve, request)
        return Retrieved(np.asarray(r.item_ids, dtype=np.int64),
                         np.asarray(r.scores, dtype=np.float32), r.version)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
