"""The grpc.aio EmbeddingService: embeddings, retrieval and model info, plus the standard health
and reflection services. Request handling validates, picks a LoadedVersion (one reference read,
so a hot swap never splits a request over two versions), and maps every failure to a status
code whose message names the culprit."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from plexrec.features.errors import ConfigError, PlexrecError
from plexrec.proto.plexrec.v1 import plexrec_pb2 as pb
from plexrec.proto.plexrec.v1 import plexrec_pb2_grpc as pb_grpc
from plexrec.serving.interceptors import BearerAuth, DecodeGuard
from plexrec.serving.metrics import ServerMetrics
from plexrec.serving.server_config import ServerConfig
from plexrec.serving.stores import online_store
from plexrec.serving.stores.base import StoreCorrupt, StoreUnavailable, VectorStore
from plexrec.serving.stores.fallback import FallbackStore
from plexrec.serving.user_encoder import UserFeatureError
from plexrec.serving.versions import (
    InvalidVersion,
    LoadedVersion,
    VersionNotFound,
    VersionRegistry,
)

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EmbeddingService"].full_name
ENTITY_NAMES = {pb.USER: "user", pb.ITEM: "item"}
ENCODINGS = (pb.ENCODING_FLOAT32, pb.ENCODING_STORED)


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _check_deadline(context: grpc.aio.ServicerContext, what: str) -> None:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise _Abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline exceeded before {what}")


_ERROR_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (VersionNotFound, grpc.StatusCode.NOT_FOUND),
    (InvalidVersion, grpc.StatusCode.INVALID_ARGUMENT),
    (UserFeatureError, grpc.StatusCode.INVALID_ARGUMENT),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    (StoreCorrupt, grpc.StatusCode.DATA_LOSS),
)


def _status_of(exc: Exception, method: str) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, _Abort):
        return exc.code, exc.message
    for cls, code in _ERROR_CODES:
        if isinstance(exc, cls):
            return code, str(exc)
    log.exception("%s failed", method)
    return grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"


def _handler(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Maps the package's errors to status codes in one place, enforces the server-wide RPC
    limit (health checks are not counted, so they are answered at the limit) and records each
    call's status and latency before the status is sent, so a client that has its answer can
    already see it counted."""
    method = fn.__name__

    async def wrapper(self: EmbeddingService, request: Any, context: grpc.aio.ServicerContext
                      ) -> Any:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        self.inflight += 1
        try:
            if self.inflight > self.config.max_concurrent_rpcs:
                raise _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"more than {self.config.max_concurrent_rpcs} RPCs in flight; "
                             "retry with backoff")
            _check_deadline(context, "start")
            return await fn(self, request, context)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status code
            code, message = _status_of(exc, method)
        finally:
            self.inflight -= 1
            if self.metrics is not None:
                self.metrics.observe(method, code.name, time.perf_counter() - started)
        await context.abort(code, message)
    wrapper.__name__ = method
    return wrapper


class EmbeddingService(pb_grpc.EmbeddingServiceServicer):
    def __init__(self, config: ServerConfig, registry: VersionRegistry, store: VectorStore,
                 executor: ThreadPoolExecutor, metrics: ServerMetrics | None = None) -> None:
        self.config = config
        self.registry = registry
        self.store = store
        self.executor = executor
        self.metrics = metrics
        self.inflight = 0

    async def _version(self, version: str) -> LoadedVersion:
        if self.registry.current is None:
            raise _Abort(grpc.StatusCode.UNAVAILABLE, "server is still loading its first version")
        return await self.registry.get(version)

    def _ids(self, ids: Any, field: str, allow_empty: bool = False) -> np.ndarray:
        n = len(ids)
        if n == 0 and not allow_empty:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: no ids given")
        if n > self.config.max_ids:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                         f"{field}: {n} ids exceed the limit of {self.config.max_ids}")
        return np.fromiter(ids, dtype=np.int64, count=n)

    @staticmethod
    def _width(width: int, lv: LoadedVersion) -> int:
        """The prefix width a request asks for (0: the full stored width)."""
        if width < 0 or width > lv.width:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                         f"width: must be in 0..{lv.width} (0 = the full width; version "
                         f"{lv.version} stores {lv.width} values), got {width}")
        return width or lv.width

    @_handler
    async def GetEmbeddings(self, request: pb.GetEmbeddingsRequest,
                            context: grpc.aio.ServicerContext) -> pb.GetEmbeddingsResponse:
        entity = ENTITY_NAMES.get(request.entity)
        if entity is None:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                         f"entity: must be USER or ITEM, got {request.entity}")
        if request.encoding not in ENCODINGS:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "encoding: must be ENCODING_FLOAT32 "
                         f"or ENCODING_STORED, got {request.encoding}")
        ids = self._ids(request.ids, "ids")
        lv = await self._version(request.version)
        width = self._width(request.width, lv)
        stored = request.encoding == pb.ENCODING_STORED
        if stored and width < lv.width and lv.rotation is not None:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                         f"width: version {lv.version} stores rotated binary codes, whose "
                         f"prefix is not a prefix of the vector; ask for width {width} with "
                         "ENCODING_FLOAT32")
        response = pb.GetEmbeddingsResponse(version=lv.version, width=width,
                                            dtype=lv.dtype if stored else "float32")
        if entity not in lv.counts:
            response.missing_ids.extend(ids.tolist())
            return response
        if stored:
            found, rows = await self.store.lookup_stored(lv, entity, ids)
            codes, scales = lv.codec.unpack(rows, lv.width)
            if width < lv.width:
                codes, scales = lv.codec.prefix(codes, scales, lv.width, width)
            response.vectors = codes.tobytes()
            response.rotated = lv.rotation is not None
            if scales is not None:
                response.scales = scales.tobytes()
        else:
            found, vectors = await self.store.lookup(lv, entity, ids)
            if width < lv.width:
                vectors = np.ascontiguousarray(vectors[:, :width])
            response.vectors = vectors.tobytes()
        if found.all():
            response.found_ids.extend(request.ids)
        else:
            response.found_ids.extend(ids[found].tolist())
            response.missing_ids.extend(ids[~found].tolist())
        return response

    @_handler
    async def Retrieve(self, request: pb.RetrieveRequest, context: grpc.aio.ServicerContext
                       ) -> pb.RetrieveResponse:
        k = request.k
        if k <= 0 or k > self.config.max_k:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                         f"k: must be in 1..{self.config.max_k}, got {k}")
        exclude = self._ids(request.exclude_item_ids, "exclude_item_ids", allow_empty=True)
        which = request.WhichOneof("query")
        if which is None:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                         "query: give one of user_id, user_features or query_vector")
        lv = await self._version(request.version)
        width = self._width(request.width, lv)
        if lv.index is None or lv.item_ids is None:
            raise VersionNotFound(f"version {lv.version} is not on this server's disk: "
                                  "retrieval needs its item index")
        query = await self._query_vector(lv, request, which, width)
        _check_deadline(context, "search")
        fetch = min(k + len(exclude), lv.index.size)
        loop = asyncio.get_running_loop()
        if width < lv.width and lv.prefix is not None:
            scores, rows = await loop.run_in_executor(self.executor, lv.prefix.search,
                                                      query.reshape(1, -1), fetch, width)
        else:
            scores, rows = await loop.run_in_executor(self.executor, lv.index.search,
                                                      query.reshape(1, -1), fetch)
        scores, rows = scores[0], rows[0]
        if not np.isfinite(scores).all():
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                         f"{which}: the query's scores overflow float32; scale the query down")
        keep = rows >= 0
        item_ids = lv.item_ids[rows[keep]]
        scores = scores[keep]
        if len(exclude):
            mask = ~np.isin(item_ids, exclude)
            item_ids, scores = item_ids[mask], scores[mask]
        return pb.RetrieveResponse(version=lv.version, item_ids=item_ids[:k].tolist(),
                                   scores=scores[:k].tolist())

    async def _query_vector(self, lv: LoadedVersion, request: pb.RetrieveRequest, which: str,
                            width: int) -> np.ndarray:
        """The query, cut to the requested prefix width."""
        if which == "user_id":
            user = request.user_id
            if "user" not in lv.counts:
                raise VersionNotFound(f"user {user} not in version {lv.version} (it has no users)")
            found, vectors = await self.store.lookup(lv, "user", np.array([user], np.int64))
            if not found[0]:
                raise VersionNotFound(f"user {user} not in version {lv.version}")
            return vectors[0][:width]
        if which == "query_vector":
            values = request.query_vector.values
            if len(values) != width:
                asked = (f"the request's width is {width}" if request.width else
                         f"version {lv.version} has width {lv.width}")
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                             f"query_vector: has {len(values)} values, {asked}")
            vec = np.asarray(values, dtype=np.float32)
            if not np.isfinite(vec).all():
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                             "query_vector: values must be finite")
            return vec
        if lv.tower is None:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                         f"user_features: version {lv.version} has no user tower; query by "
                         "user_id or query_vector")
        loop = asyncio.get_running_loop()
        vec = await loop.run_in_executor(self.executor, lv.tower,
                                         dict(request.user_features.values))
        if vec.shape != (lv.width,):
            raise PlexrecError(f"user tower of {lv.version} returned shape {vec.shape}, "
                               f"expected ({lv.width},)")
        if not np.isfinite(vec).all():
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                         "user_features: these values give a non-finite user vector")
        return vec[:width]

    @_handler
    async def GetModelInfo(self, request: pb.GetModelInfoRequest,
                           context: grpc.aio.ServicerContext) -> pb.GetModelInfoResponse:
        lv = await self._version(request.version)
        return pb.GetModelInfoResponse(
            version=lv.version, width=lv.width, user_count=lv.counts.get("user", 0),
            item_count=lv.counts.get("item", 0), run_id=lv.run_id,
            index_kind=lv.index.kind if lv.index else "none",
            partitions=lv.partitions if lv.published else 0, metrics=lv.metrics,
            has_user_tower=lv.tower is not None,
            loaded_versions=self.registry.loaded_versions(), dtype=lv.dtype,
            rotation=b"" if lv.rotation is None else lv.rotation.tobytes())


def channel_options(cfg: ServerConfig) -> list[tuple[str, Any]]:
    """Per-connection limits: a stream cap per HTTP/2 connection (a client holding half-open
    streams only blocks itself), keepalive pings that drop dead peers, idle and age limits."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", cfg.max_message_bytes),
        ("grpc.max_receive_message_length", cfg.max_message_bytes),
        ("grpc.so_reuseport", 1 if cfg.workers > 1 else 0),
        ("grpc.max_concurrent_streams", cfg.max_streams_per_connection),
        ("grpc.keepalive_time_ms", int(cfg.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(cfg.keepalive_timeout_s * 1000)),
        ("grpc.max_connection_idle_ms", int(cfg.max_connection_idle_s * 1000)),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    if cfg.max_connection_age_s is not None:
        options += [("grpc.max_connection_age_ms", int(cfg.max_connection_age_s * 1000)),
                    ("grpc.max_connection_age_grace_ms", int(cfg.grace_s * 1000))]
    return options


def _read(path: Path, field: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{field}: cannot read {path}: {exc.strerror}") from None


def server_credentials(cfg: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS from `tls_cert`/`tls_key`; with `tls_client_ca`, clients must present a certificate
    signed by it (mutual TLS)."""
    if cfg.tls_cert is None or cfg.tls_key is None:
        return None
    pair = [(_read(cfg.tls_key, "tls_key"), _read(cfg.tls_cert, "tls_cert"))]
    if cfg.tls_client_ca is None:
        return grpc.ssl_server_credentials(pair)
    return grpc.ssl_server_credentials(pair, _read(cfg.tls_client_ca, "tls_client_ca"),
                                       require_client_auth=True)


class EmbeddingServer:
    """Owns the grpc.aio server, the version registry, the stores and the follower.
    `await start()` binds and loads; `await stop()` drains in-flight RPCs within the grace."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.port: int | None = None
        self.server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer()
        self.online = (online_store(config.redis_url, config.namespace,
                                    timeout_s=config.redis_timeout_s, ttl_s=config.cache_ttl_s,
                                    jitter_s=config.cache_ttl_jitter_s)
                       if config.redis_url else None)
        self.registry = VersionRegistry(config.snapshot, config.index, online=self.online,
                                        namespace=config.namespace, keep=config.keep_versions)
        self.store: VectorStore = FallbackStore(self.online,
                                                breaker_cooldown_s=config.breaker_cooldown_s,
                                                prefer_snapshot=config.prefer_snapshot)
        self.executor = ThreadPoolExecutor(config.search_threads,
                                           thread_name_prefix="plexrec-search")
        # Off unless scraped: no per-request metrics work on servers nobody scrapes.
        self.metrics = (ServerMetrics(self.store.stats, self.registry)
                        if config.metrics_port is not None else None)
        self.metrics_port: int | None = None
        self._follower: asyncio.Task | None = None

    async def start(self) -> int:
        cfg = self.config
        interceptors: list[grpc.aio.ServerInterceptor] = [DecodeGuard()]
        tokens = cfg.tokens()
        if tokens:
            interceptors.append(BearerAuth(tokens))
        self.server = grpc.aio.server(options=channel_options(cfg), interceptors=interceptors)
        pb_grpc.add_EmbeddingServiceServicer_to_server(
            EmbeddingService(cfg, self.registry, self.store, self.executor, self.metrics),
            self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if cfg.reflection:
            reflection.enable_server_reflection(
                (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME), self.server)
        address = f"{cfg.host}:{cfg.port}"
        credentials = server_credentials(cfg)
        self.port = (self.server.add_secure_port(address, credentials) if credentials
                     else self.server.add_insecure_port(address))
        if self.port == 0:
            raise PlexrecError(f"cannot bind {address}")
        if self.metrics is not None and cfg.metrics_port is not None:
            self.metrics_port = self.metrics.serve_http(cfg.metrics_host, cfg.metrics_port)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        await self.registry.load_initial()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._follower = asyncio.create_task(self.registry.follow(cfg.poll_interval_s))
        return self.port

    async def _set_health(self, status: int) -> None:
        await self.health.set("", status)
        await self.health.set(SERVICE_NAME, status)

    @property
    def version(self) -> str | None:
        current = self.registry.current
        return current.version if current else None

    async def stop(self, grace: float | None = None) -> None:
        await self.health.enter_graceful_shutdown()
        if self._follower is not None:
            # redis-py can swallow a cancellation that lands inside a read, so the follower
            # also checks a flag, and is waited for with a bound.
            self.registry.stop_following()
            self._follower.cancel()
            await asyncio.wait([self._follower], timeout=2.0)
        if self.server is not None:
            await self.server.stop(self.config.grace_s if grace is None else grace)
        await self.store.close()
        if self.metrics is not None:
            self.metrics.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


Ready = Callable[[dict[str, Any]], None]


def print_ready(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


async def serve_forever(config: ServerConfig, on_ready: Ready = print_ready) -> None:
    """Runs until SIGTERM/SIGINT, then drains in-flight RPCs for `grace_s`. Once ready, calls
    `on_ready` with {"event": "serving", "port", "version", "metrics_port"} (by default printed
    as one JSON line, for scripts to wait on)."""
    server = EmbeddingServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(server.start())
    try:
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if starting.done():
            port = starting.result()
            on_ready({"event": "serving", "port": port, "version": server.version,
                      "metrics_port": server.metrics_port})
            await stop.wait()
        else:
            log.info("stop requested while starting; start abandoned")
            starting.cancel()
            await asyncio.wait([starting], timeout=2.0)
        log.info("shutting down (grace %.1fs)", config.grace_s)
    finally:
        starting.cancel()
        await server.stop()
    print(json.dumps({"event": "stopped"}), file=sys.stderr, flush=True)


def run(config: ServerConfig) -> int:
    """One server process; `workers > 1` is serving.workers.run_workers."""
    asyncio.run(serve_forever(config))
    return 0
