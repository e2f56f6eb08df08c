"""Shared by the server tests: small random snapshots and an in-process server running on its
own event loop in a background thread (so tests can drive it with sync or aio clients)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np

from plexrec.models.snapshot import Snapshot, write_snapshot
from plexrec.serving.index import IndexConfig
from plexrec.serving.server import EmbeddingServer
from plexrec.serving.server_config import ServerConfig
from plexrec.serving.stores.fallback import FallbackStore
from plexrec.serving.stores.redis import RedisStore


def make_snapshot(root: Path, *, users: int = 50, items: int = 300, width: int = 8,
                  seed: int = 0, run_id: str = "run-test", id_offset: int = 0,
                  extra_files: dict[str, Path] | None = None) -> Snapshot:
    rng = np.random.default_rng(seed)
    user_ids = np.arange(1, users + 1, dtype=np.int64) * 7 + id_offset
    item_ids = np.arange(1, items + 1, dtype=np.int64) * 13 + 100_000 + id_offset
    path = write_snapshot(root, users=(user_ids, rng.normal(size=(users, width))),
                          items=(item_ids, rng.normal(size=(items, width))), run_id=run_id,
                          metrics={"test_auc": 0.75}, extra_files=extra_files)
    return Snapshot.open(path)


def exact_top_k(snap: Snapshot, query: np.ndarray, k: int, exclude: tuple[int, ...] = ()
                ) -> np.ndarray:
    items = np.asarray(snap.vectors("item"), dtype=np.float32)
    ids = np.asarray(snap.ids("item"))
    scores = items @ np.asarray(query, dtype=np.float32)
    order = np.argsort(-scores, kind="stable")
    ranked = ids[order]
    return ranked[~np.isin(ranked, exclude)][:k]


def config(snapshot: Path, redis_url: str | None = None, **kw: Any) -> ServerConfig:
    base = {"poll_interval_s": 0.3, "breaker_cooldown_s": 1.0, "grace_s": 0.5,
            "index": IndexConfig()}
    return ServerConfig(snapshot=snapshot, port=0, redis_url=redis_url, **{**base, **kw})


class ServerThread:
    """A real EmbeddingServer on 127.0.0.1:<free port> in a daemon thread."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.config = cfg
        self.loop = asyncio.new_event_loop()
        self.server = EmbeddingServer(cfg)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def call(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self.port = self.call(self.server.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(self.server.stop(0.2))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


def fallback_store(redis_url: str, namespace: str, *, timeout_s: float,
                   breaker_cooldown_s: float) -> FallbackStore:
    """The server's store stack on a real Redis: RedisStore in front of the local snapshot."""
    online = RedisStore.from_url(redis_url, namespace, timeout_s=timeout_s, ttl_s=60,
                                 jitter_s=0)
    return FallbackStore(online, breaker_cooldown_s=breaker_cooldown_s)
