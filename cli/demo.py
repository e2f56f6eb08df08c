"""`plexrec demo`: the main job on embedded defaults (see cli/pipeline.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from plexrec.cli.pipeline import DEMO_ROOT, DemoConfig, default_workdir, run_demo


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole system on embedded defaults",
                       description="Generate data, train a CTR model (unified layout, 2 "
                       "processes) and a two-tower model, export, publish to Redis, serve "
                       "over gRPC, query, print a summary, and shut everything down.")
    p.add_argument("--data", type=Path, help="a Criteo train.txt (CTR model) or an ml-100k directory (both models) "
                   "instead of synthetic data")
    p.add_argument("--workdir", type=Path, default=None,
                   help=f"where data, runs, snapshots and logs go (default: {DEMO_ROOT}/<data "
                   "source>, one folder per source: synthetic, ml-100k, ...)")
    p.add_argument("--smoke", action="store_true", help="the small CI variant, same stages")
    p.add_argument("--redis", dest="redis_url", help="Redis URL (default: REDIS_URL, else a "
                   "private redis-server started for the demo)")
    p.add_argument("--nproc", type=int, default=DemoConfig.nproc,
                   help="training processes of the CTR model")
    p.add_argument("--quiet", action="store_true", help="only the summary, no stage logs")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    overrides = dict(data=args.data, redis_url=args.redis_url, nproc=args.nproc,
                     quiet=args.quiet)
    workdir = args.workdir or default_workdir(args.data)
    config = (DemoConfig.smoke(workdir, **overrides) if args.smoke
              else DemoConfig(workdir=workdir, **overrides))
    summary = run_demo(config)
    print(summary.table(), file=sys.stderr)
    print(f"MLflow UI on these runs: .venv/bin/mlflow ui --backend-store-uri "
          f"{summary.mlflow_uri}  (then open http://127.0.0.1:5000)", file=sys.stderr)
    print(json.dumps({"ctr": summary.ctr, "two_tower": summary.two_tower,
                      "snapshot": summary.snapshot, "queries": summary.queries}, default=str))
    return 0
