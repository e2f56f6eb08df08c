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
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from plexrec.features.errors import PlexrecError
from plexrec.proto.plexrec.v1 import plexrec_pb2 as pb
from plexrec.proto.plexrec.v1 import plexrec_pb2_grpc as pb_grpc
from plexrec.serving.server_config import ServerConfig
from plexrec.serving.stores import online_store
from plexrec.serving.stores.base import StoreUnavailable, VectorStore
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


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _check_deadline(context: grpc.aio.ServicerContext, what: str) -> None:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise _Abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline exceeded before {what}")


def _handler(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Maps the package's errors to status codes in one place."""
    async def wrapper(self: EmbeddingService, request: Any, context: grpc.aio.ServicerContext
                      ) -> Any:
        try:
            _check_deadline(context, "start")
            return await fn(self, request, context)
        except _Abort as exc:
            await context.abort(exc.code, exc.message)
        except VersionNotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except InvalidVersion as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except StoreUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except UserFeatureError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug or a broken snapshot: INTERNAL, logged
            log.exception("%s failed", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    wrapper.__name__ = fn.__name__
    return wrapper


class EmbeddingService(pb_grpc.EmbeddingServiceServicer):
    def __init__(self, config: ServerConfig, registry: VersionRegistry, store: VectorStore,
                 executor: ThreadPoolExecutor) -> None:
        self.config = config
        self.registry = registry
        self.store = store
        self.executor = executor

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

    @_handler
    async def GetEmbeddings(self, request: pb.GetEmbeddingsRequest,
                            context: grpc.aio.ServicerContext) -> pb.GetEmbeddingsResponse:
        entity = ENTITY_NAMES.get(request.entity)
        if entity is None:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                         f"entity: must be USER or ITEM, got {request.entity}")
        ids = self._ids(request.ids, "ids")
        lv = await self._version(request.version)
        if entity not in lv.counts:
            return pb.GetEmbeddingsResponse(version=lv.version, width=lv.width,
                                            missing_ids=ids.tolist())
        found, vectors = await self.store.lookup(lv, entity, ids)
        if found.all():
            return pb.GetEmbeddingsResponse(version=lv.version, width=lv.width,
                                            vectors=vectors.tobytes(), found_ids=request.ids)
        return pb.GetEmbeddingsResponse(version=lv.version, width=lv.width,
                                        vectors=vectors.tobytes(), found_ids=ids[found].tolist(),
                                        missing_ids=ids[~found].tolist())

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
        if lv.index is None or lv.item_ids is None:
            raise VersionNotFound(f"version {lv.version} is not on this server's disk: "
                                  "retrieval needs its item index")
        query = await self._query_vector(lv, request, which)
        _check_deadline(context, "search")
        fetch = min(k + len(exclude), lv.index.size)
        loop = asyncio.get_running_loop()
        scores, rows = await loop.run_in_executor(self.executor, lv.index.search,
                                                  query.reshape(1, -1), fetch)
        scores, rows = scores[0], rows[0]
        keep = rows >= 0
        item_ids = lv.item_ids[rows[keep]]
        scores = scores[keep]
        if len(exclude):
            mask = ~np.isin(item_ids, exclude)
            item_ids, scores = item_ids[mask], scores[mask]
        return pb.RetrieveResponse(version=lv.version, item_ids=item_ids[:k].tolist(),
                                   scores=scores[:k].tolist())

    async def _query_vector(self, lv: LoadedVersion, request: pb.RetrieveRequest, which: str
                            ) -> np.ndarray:
        if which == "user_id":
            user = request.user_id
            if "user" not in lv.counts:
                raise VersionNotFound(f"user {user} not in version {lv.version} (it has no users)")
            found, vectors = await self.store.lookup(lv, "user", np.array([user], np.int64))
            if not found[0]:
                raise VersionNotFound(f"user {user} not in version {lv.version}")
            return vectors[0]
        if which == "query_vector":
            values = request.query_vector.values
            if len(values) != lv.width:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                             f"query_vector: has {len(values)} values, version {lv.version} "
                             f"has width {lv.width}")
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
        return vec

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
            loaded_versions=self.registry.loaded_versions())


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
        self._follower: asyncio.Task | None = None

    async def start(self) -> int:
        cfg = self.config
        options = [("grpc.max_send_message_length", cfg.max_message_bytes),
                   ("grpc.max_receive_message_length", cfg.max_message_bytes),
                   ("grpc.so_reuseport", 0)]
        self.server = grpc.aio.server(options=options,
                                      maximum_concurrent_rpcs=cfg.max_concurrent_rpcs)
        pb_grpc.add_EmbeddingServiceServicer_to_server(
            EmbeddingService(cfg, self.registry, self.store, self.executor), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), self.server)
        self.port = self.server.add_insecure_port(f"{cfg.host}:{cfg.port}")
        if self.port == 0:
            raise PlexrecError(f"cannot bind {cfg.host}:{cfg.port}")
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
        self.executor.shutdown(wait=False, cancel_futures=True)


async def serve_forever(config: ServerConfig) -> None:
    """Runs until SIGTERM/SIGINT, then drains in-flight RPCs for `grace_s`. Prints one JSON line
    {"event": "serving", "port", "version"} once ready, for scripts to wait on."""
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
            print(json.dumps({"event": "serving", "port": port, "version": server.version}),
                  flush=True)
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
    asyncio.run(serve_forever(config))
    return 0
