"""`plexrec serve`: argument parsing only; the work is done by serving.server."""

from __future__ import annotations

import argparse
import os

from plexrec.serving.index_registry import INDEXES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve embeddings and retrieval over gRPC",
                       description="Loads a snapshot version, builds its candidate index, follows "
                                   "the Redis `current` pointer for hot swaps, and answers the "
                                   "plexrec.v1.EmbeddingService until SIGTERM/SIGINT. Prints "
                                   '{"event": "serving", "port": N, "version": V} once ready.')
    p.add_argument("--snapshot", default=None,
                   help="snapshot version directory or a root of version directories")
    p.add_argument("--redis", default=None,
                   help="Redis URL (default: $REDIS_URL; none = serve from the snapshot only)")
    p.add_argument("--namespace", default=None, help="Redis key namespace (default: default)")
    p.add_argument("--port", type=int, default=None, help="port (0 = pick a free one)")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--config", default=None, help="server TOML (flags override it)")
    p.add_argument("--exact-threshold", type=int, default=None,
                   help="item count from which FAISS replaces exact search")
    p.add_argument("--index-kind", choices=tuple(INDEXES), default=None,
                   help="FAISS index kind above the threshold")
    p.add_argument("--workers", type=int, default=None,
                   help="server processes sharing the port through SO_REUSEPORT (default 1; "
                        "one per core for throughput)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus metrics on this port (0 = a free one; worker i of "
                        "--workers uses PORT+i)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from plexrec.features.errors import ConfigError
    from plexrec.serving.server import run as run_server
    from plexrec.serving.server_config import load_server_config

    config = load_server_config(
        args.config, snapshot=args.snapshot, redis_url=args.redis or os.environ.get("REDIS_URL"),
        namespace=args.namespace, port=args.port, host=args.host,
        exact_threshold=args.exact_threshold, index_kind=args.index_kind, workers=args.workers,
        metrics_port=args.metrics_port)
    if config.snapshot is None:
        raise ConfigError("no snapshot to serve: pass --snapshot DIR (or set snapshot in "
                          "--config)")
    if config.workers > 1:
        from plexrec.serving.workers import run_workers

        return run_workers(config)
    return run_server(config)
