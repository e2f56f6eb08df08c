"""`plexrec data prepare|synth`: argument parsing only; the work is done by the packages.

Like every command, the result is one JSON line on stdout; the human summary goes to stderr."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from plexrec.features.errors import ConfigError
from plexrec.features.prepare import DEFAULT_CHUNK_ROWS
from plexrec.features.synth import SynthStats


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


@dataclass(frozen=True)
class _SynthKind:
    """A generator `plexrec data synth --kind` offers; `out` is where the shipped configs look."""

    write: Callable[[Path, int, int, bool], SynthStats]
    out: str
    rows: int
    what: str


def _criteo(out: Path, rows: int, seed: int, progress: bool) -> SynthStats:
    from plexrec.features.synth import write_criteo
    return write_criteo(out, rows, seed, progress=progress)


def _interactions(out: Path, rows: int, seed: int, progress: bool) -> SynthStats:
    from plexrec.features.synth import write_interactions
    return write_interactions(out, rows, seed, progress=progress)


def _movielens(out: Path, rows: int, seed: int, progress: bool) -> SynthStats:
    from plexrec.features.synth_movielens import write_movielens
    return write_movielens(out, seed, ratings=rows, progress=progress)


SYNTH_KINDS: dict[str, _SynthKind] = {
    "criteo": _SynthKind(_criteo, "data/synth_criteo.tsv", 1_000_000,
                         "Criteo Kaggle TSV, Zipf ids, planted click model"),
    "interactions": _SynthKind(_interactions, "data/synth_interactions", 200_000,
                               "user-item interaction CSV plus user and item catalogues"),
    "movielens": _SynthKind(_movielens, "data/synth_ml-100k", 100_000,
                            "a MovieLens-100K folder (u.data, u.user, u.item, ...)"),
}


def _synth(args: argparse.Namespace) -> int:
    kind = SYNTH_KINDS[args.kind]
    rows = kind.rows if args.rows is None else args.rows
    if rows < 1:
        raise ConfigError(f"--rows must be >= 1, got {rows}")
    out = Path(args.out or kind.out)
    stats = kind.write(out, rows, args.seed, not args.quiet)
    print(f"wrote {stats.rows:,} synthetic {args.kind} rows to {out}", file=sys.stderr)
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

    kinds = "; ".join(f"{name}: {k.what} (default --out {k.out}, --rows {k.rows:,})"
                      for name, k in SYNTH_KINDS.items())
    s = cmds.add_parser("synth", help="write synthetic data with a planted, learnable signal")
    s.add_argument("--kind", choices=tuple(SYNTH_KINDS), required=True, help=kinds)
    s.add_argument("--rows", type=int, default=None,
                   help="rows (ratings for movielens); default: per kind, see --kind")
    s.add_argument("--out", default=None,
                   help="file (criteo) or folder (interactions, movielens); default: where the "
                   "shipped configs/synthetic_*.toml look")
    s.add_argument("--seed", type=int, default=0, help="the output depends only on kind, rows "
                   "and seed")
    s.add_argument("--quiet", action="store_true", help="no progress output")
    s.set_defaults(func=_synth)
