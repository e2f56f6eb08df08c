"""`plexrec export`: argument parsing only; the work is done by training.export."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a vector snapshot of a trained two-tower model",
                       description="Compute user and item vectors of a two-tower run, script "
                       "the user tower, write a snapshot version under --out and log it to the "
                       "MLflow run; prints one JSON line.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", dest="run_id", help="MLflow run id of a two-tower training run")
    src.add_argument("--checkpoint", type=Path,
                     help="a run directory (or one of its checkpoints/step-N)")
    p.add_argument("--out", type=Path, default=Path("snapshots"),
                   help="snapshot root; the version becomes a subdirectory")
    p.add_argument("--vector-dtype", default=None, metavar="DTYPE",
                   help="store the vectors as float32, float16, int8 or binary (default: the "
                        "run config's [export] vector_dtype, float32 unless set)")
    p.add_argument("--item-catalog", type=Path, default=None, metavar="CSV",
                   help="a CSV of every catalogue item (header: the schema's item columns); "
                        "items no interaction mentions get vectors from the item tower "
                        "(default: the run config's [export] item_catalog, none unless set)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from plexrec.training.export import export_run

    result = export_run(args.out, run_id=args.run_id, checkpoint=args.checkpoint,
                        vector_dtype=args.vector_dtype, item_catalog=args.item_catalog)
    print(json.dumps(result.to_json()), flush=True)
    return 0
