"""`plexrec train`: argument parsing only; the work is done by training.launch."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from plexrec.models.layout_registry import LAYOUTS
from plexrec.training.run_dirs import LATEST


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model with TorchRec (sharded embeddings)",
                       description="Train from a run config; prints one JSON line of results.")
    p.add_argument("--config", required=True, type=Path, help="run config TOML")
    p.add_argument("--nproc", type=int, default=1, help="processes per node (torchrun if > 1)")
    p.add_argument("--nnodes", type=int, default=1, help="torchrun nodes (multi-node training)")
    p.add_argument("--node-rank", type=int, default=0, help="this node's rank, 0..nnodes-1")
    p.add_argument("--master-addr", default="127.0.0.1",
                   help="address of node 0, reachable from every node")
    p.add_argument("--master-port", type=int, default=0, help="0: a free port (single node)")
    p.add_argument("--data", help="raw input file/dir (prepared on the fly) or a prepared cache")
    p.add_argument("--layout", choices=tuple(LAYOUTS),
                   help=f"{' | '.join(LAYOUTS)} (overrides [layout] kind)")
    p.add_argument("--embedding-budget", help='e.g. "8MB" or a parameter count')
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field by dotted path, e.g. train.epochs=2")
    p.add_argument("--resume", nargs="?", const=LATEST, default=None, metavar="RUN",
                   help="continue a run from its latest checkpoint: a run id, a run directory, "
                   f"or '{LATEST}' (the newest unfinished run of the experiment) when no value "
                   "is given; with train.run_dir set, that run")
    p.add_argument("--quiet", action="store_true", help="log lines instead of progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from plexrec.training.launch import LaunchOptions, run_train

    result = run_train(LaunchOptions(
        config=args.config, nproc=args.nproc, nnodes=args.nnodes, node_rank=args.node_rank,
        master_addr=args.master_addr, master_port=args.master_port, data=args.data,
        layout=args.layout, embedding_budget=args.embedding_budget, overrides=args.overrides,
        resume=args.resume, quiet=args.quiet))
    print(json.dumps(_finite(result), allow_nan=False), flush=True)
    return 0


def _finite(value: Any) -> Any:
    """NaN/inf (e.g. AUC of a test split with one class) become null: scripts parse this line."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value
