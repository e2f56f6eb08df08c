"""`plexrec data prepare|synth`: argument parsing only; the work is done by the packages.

Like every command, the result is one JSON line on stdout; the human summary goes to stderr."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from plexrec.features.errors import ConfigError
from plexrec.features.prepare import DEFAULT_CHUNK_ROWS


def _prepare(args: argparse.Namespace) -> int:
    from plexrec.features.prepare import prepare
    from plexrec.features.schema import load_schema

    if args.chunk_rows < 1:
        raise ConfigError(f"--chunk-rows must be >= 1, got {args.chunk_rows}")
    schema = load_schema(args.schema)
    result = prepare(schema, args.input, args.out, on_bad_row=args.on_bad_row,
                     chunk_rows=args.chunk_rows, progress=not args.quiet, force=args.force)
    state = "reused existing cache" if result.reused else f"built in {result.seconds:.1f}s"
    lines = [f"prepared {result.out_dir}: {state}",
             f"  rows: {result.num_rows:,}  skipped rows: {result.skipped_rows:,}  "
             f"label rate: {result.label_rate:.4f}"]
    lines += [f"  skipped ({reason}): {n:,}"
              for reason, n in sorted(result.skipped_by_reason.items())]
    lines.append(f"  dense features: {len(schema.dense)}  sparse features: {len(schema.sparse)}")
    lines += [f"  {name:<24} cardinality {card:,}" for name, card in result.cardinality.items()]
    print("\n".join(lines), file=sys.stderr)
    print(json.dumps({"out": str(result.out_dir), "reused": result.reused,
                      "rows": result.num_rows, "skipped_rows": result.skipped_rows,
                      "skipped_by_reason": result.skipped_by_reason,
                      "label_rate": result.label_rate, "cardinality": result.cardinality,
                      "input_sha256": result.input_hash, "seconds": round(result.seconds, 3)}))
    return 0


def _synth(args: argparse.Namespace) -> int:
    from plexrec.features import synth

    if args.rows < 1:
        raise ConfigError(f"--rows must be >= 1, got {args.rows}")
    out = Path(args.out)
    if args.kind == "criteo":
        out.parent.mkdir(parents=True, exist_ok=True)
        stats = synth.write_criteo(out, args.rows, args.seed, progress=not args.quiet)
    else:
        out.mkdir(parents=True, exist_ok=True)
        stats = synth.write_interactions(out, args.rows, args.seed, progress=not args.quiet)
    print(f"wrote {args.rows:,} synthetic {args.kind} rows to {out}", file=sys.stderr)
    print(json.dumps({"out": str(out), "seed": args.seed, **stats.as_dict()}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="prepare raw data into a cache; write synthetic data")
    cmds = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    p = cmds.add_parser("prepare", help="raw input -> prepared cache (reused if unchanged)")
    p.add_argument("--schema", required=True, help="schema TOML, e.g. configs/criteo.toml")
    p.add_argument("--input", required=True, help="input file or directory")
    p.add_argument("--out", required=True, help="cache directory to write")
    p.add_argument("--on-bad-row", choices=("error", "skip"), default="error",
                   help="stop at the first bad row (default) or count and skip bad rows")
    p.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS,
                   help="rows per chunk in memory (bounds peak memory)")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache is current")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_prepare)

    s = cmds.add_parser("synth", help="write synthetic data")
    s.add_argument("--kind", choices=("criteo", "interactions"), required=True)
    s.add_argument("--rows", type=int, required=True)
    s.add_argument("--out", required=True, help="a file (criteo) or a directory (interactions)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true", help="no progress output")
    s.set_defaults(func=_synth)
