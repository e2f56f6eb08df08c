"""`plexrec publish`: argument parsing only; the work is done by serving.publish."""

from __future__ import annotations

import argparse
import json
import logging
import os

from plexrec.features.errors import ConfigError
from plexrec.serving.redis_keys import DEFAULT_PARTITIONS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish", help="publish a snapshot's vectors to Redis as a new version",
                       description="Writes the snapshot as an immutable version, verifies it, "
                                   "then moves the namespace's `current` pointer; rerunning is "
                                   "safe and a no-op once published.")
    p.add_argument("--snapshot", required=True,
                   help="snapshot version directory (or a root of versions: the newest is used)")
    p.add_argument("--redis", default=None,
                   help="Redis URL, e.g. redis://host:6379/0 (default: $REDIS_URL)")
    p.add_argument("--namespace", default="default", help="key namespace (default: default)")
    p.add_argument("--keep", type=int, default=3, help="committed versions to retain (default 3)")
    p.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS,
                   help=f"hash partitions per entity (default {DEFAULT_PARTITIONS})")
    p.add_argument("--batch-size", type=int, default=None, help="vectors per pipeline round trip")
    p.add_argument("--cluster", action="store_true", default=None,
                   help="force Redis Cluster mode (default: detected from the server)")
    p.add_argument("--quiet", action="store_true", help="no progress logging")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from plexrec.models.snapshot import latest_snapshot
    from plexrec.serving.publish import DEFAULT_BATCH_SIZE, publish

    if args.quiet:
        logging.getLogger("plexrec.serving.publish").setLevel(logging.WARNING)
    url = args.redis or os.environ.get("REDIS_URL")
    if not url:
        raise ConfigError("no Redis to publish to: pass --redis URL or set REDIS_URL")
    result = publish(latest_snapshot(args.snapshot), url, namespace=args.namespace,
                     keep=args.keep, partitions=args.partitions,
                     batch_size=args.batch_size or DEFAULT_BATCH_SIZE, cluster=args.cluster,
                     progress=not args.quiet)
    print(json.dumps({"version": result.version, "vectors_written": result.vectors_written,
                      "seconds": round(result.seconds, 3), "skipped": result.skipped}),
          flush=True)
    return 0
