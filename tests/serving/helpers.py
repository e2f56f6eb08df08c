"""Shared helpers for the serving tests: small snapshots and a full dump of Redis state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from plexrec.models.snapshot import write_snapshot


def make_snapshot(root: Path, *, n_items: int = 3000, n_users: int = 500, width: int = 16,
                  seed: int = 0, run_id: str = "run") -> Path:
    rng = np.random.default_rng(seed)
    items = (rng.choice(10 * n_items + 10, n_items, replace=False).astype(np.int64),
             rng.standard_normal((n_items, width)).astype(np.float32))
    users = None
    if n_users:
        users = (rng.choice(10 * n_users + 10, n_users, replace=False).astype(np.int64) - 5,
                 rng.standard_normal((n_users, width)).astype(np.float32))
    return write_snapshot(root, users=users, items=items, run_id=run_id)


def dump_state(clients: Any, *, normalise: bool = False) -> dict[bytes, Any]:
    """Every key with its full value (strings, hashes, sorted sets with scores) over one client or
    a list of per-node clients. normalise=True drops what legitimately differs between two clean
    publishes of the same content: the manifest's published_at and the commit-time scores."""
    clients = clients if isinstance(clients, list) else [clients]
    state: dict[bytes, Any] = {}
    for client in clients:
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            if kind == b"string":
                value: Any = client.get(key)
                if normalise and key.endswith(b":manifest"):
                    manifest = json.loads(value)
                    manifest.pop("published_at")
                    value = manifest
            elif kind == b"hash":
                value = client.hgetall(key)
            elif kind == b"zset":
                pairs = client.zrange(key, 0, -1, withscores=True)
                value = [m for m, _ in pairs] if normalise else pairs
            else:
                raise AssertionError(f"unexpected key type {kind!r} for {key!r}")
            state[key] = value
    return state
