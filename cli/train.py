"""`plexrec train`: argument parsing only; the work is done by training.launch."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model with TorchRec (sharded embeddings)",
                       description="Train from a run config; prints one JSON line of results.")
    p.add_argument("--config", required=True, type=Path, help="run config TOML")
    p.add_argument("--nproc", type=int, default=1, help="processes per node (torchrun if > 1)")
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--master-addr", default="127.0.0.1")
    p.add_argument("--master-port", type=int, default=0, help="0: a free port (single node)")
    p.add_argument("--data", help="raw input file/dir (prepared on the fly) or a prepared cache")
    p.add_argument("--layout", help="per_feature | mixed_dim | unified (overrides [layout] kind)")
    p.add_argument("--embedding-budget", help='e.g. "8MB" or a parameter count')
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field by dotted path, e.g. train.epochs=2")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--quiet", action="store_true", help="log lines instead of progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training.launch import LaunchOptions, run_train

    result = run_train(LaunchOptions(
        config=args.config, nproc=args.nproc, nnodes=args.nnodes, node_rank=args.node_rank,
        master_addr=args.master_addr, master_port=args.master_port, data=args.data,
        layout=args.layout, embedding_budget=args.embedding_budget, overrides=args.overrides,
        resume=args.resume, quiet=args.quiet))
    print(json.dumps(result), flush=True)
    return 0
