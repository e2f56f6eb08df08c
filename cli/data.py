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
    from plexrec.features.prepare import Inputs, prepare
    from plexrec.features.schema import load_schema

    if args.chunk_rows < 1:
        raise ConfigError(f"--chunk-rows must be >= 1, got {args.chunk_rows}")
    schema = load_schema(args.schema)
    inputs = Inputs(Path(args.input), Path(args.valid) if args.valid else None,
                    Path(args.test) if args.test else None, args.split_column)
    result = prepare(schema, inputs, args.out, on_bad_row=args.on_bad_row,
                     chunk_rows=args.chunk_rows, progress=not args.quiet, force=args.force,
                     workers=args.workers)
    vocab = {f.name for f in schema.sparse if f.uses_vocabulary}
    state = "reused existing cache" if result.reused else f"built in {result.seconds:.1f}s"
    lines = [f"prepared {result.out_dir}: {state}",
             f"  rows: {result.num_rows:,}  skipped rows: {result.skipped_rows:,}  "
             f"label rate: {result.label_rate:.4f}"]
    lines += [f"  skipped ({reason}): {n:,}"
              for reason, n in sorted(result.skipped_by_reason.items())]
    lines += [f"  read {n:,} rows from {file}" for file, n in result.rows_by_file.items()]
    lines += [f"  join {side}: {n:,} rows without a match (its columns are missing there)"
              for side, n in result.join_unmatched.items()]
    if result.split_rows:
        lines.append("  fixed splits: " + "  ".join(f"{k} {v:,}"
                                                   for k, v in result.split_rows.items()))
    lines.append(f"  dense features: {len(schema.dense)}  sparse features: {len(schema.sparse)}")
    lines += [f"  {name:<24} distinct values {card - 1:,}" if name in vocab
              else f"  {name:<24} hash buckets {card:,}"
              for name, card in result.cardinality.items()]
    print("\n".join(lines), file=sys.stderr)
    print(json.dumps({"out": str(result.out_dir), "reused": result.reused,
                      "rows": result.num_rows, "skipped_rows": result.skipped_rows,
                      "skipped_by_reason": result.skipped_by_reason,
                      "label_rate": result.label_rate, "cardinality": result.cardinality,
                      "rows_by_file": result.rows_by_file, "split_rows": result.split_rows,
                      "join_unmatched": result.join_unmatched,
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


def _clicklog(out: Path, rows: int, seed: int, progress: bool) -> SynthStats:
    from plexrec.features.synth_clicklog import write_clicklog
    return write_clicklog(out, rows, seed, progress=progress)


SYNTH_KINDS: dict[str, _SynthKind] = {
    "criteo": _SynthKind(_criteo, "data/synth_criteo.tsv", 1_000_000,
                         "Criteo Kaggle TSV, Zipf ids, planted click model"),
    "interactions": _SynthKind(_interactions, "data/synth_interactions", 200_000,
                               "user-item interaction CSV plus user and item catalogues"),
    "movielens": _SynthKind(_movielens, "data/synth_ml-100k", 100_000,
                            "a MovieLens-100K folder (u.data, u.user, u.item, ...)"),
    "clicklog": _SynthKind(_clicklog, "data/synth_clicklog.csv", 200_000,
                           "an Avazu-layout click-log CSV, hour as YYMMDDHH (configs/clicklog.toml)"),
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


def _movielens_csv(args: argparse.Namespace) -> int:
    from plexrec.features.movielens_csv import write_movielens_csv

    out = write_movielens_csv(args.input, args.out, args.test_fraction)
    print(f"wrote {out.train_rows:,} ratings to {out.ratings} and the newest {out.test_rows:,} "
          f"to {out.test}, with movies.csv and users.csv", file=sys.stderr)
    print(json.dumps({"ratings": str(out.ratings), "test": str(out.test),
                      "train_rows": out.train_rows, "test_rows": out.test_rows}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="prepare raw data into a cache; write synthetic data")
    cmds = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    p = cmds.add_parser("prepare", help="raw input -> prepared cache (reused if unchanged)")
    p.add_argument("--schema", required=True, help="schema TOML, e.g. configs/criteo.toml")
    p.add_argument("--input", required=True, help="input file or directory")
    p.add_argument("--out", required=True, help="cache directory to write")
    p.add_argument("--valid", default=None,
                   help="fixed validation input, same schema (default: none)")
    p.add_argument("--test", default=None, help="fixed test input, same schema (default: none)")
    p.add_argument("--split-column", default=None,
                   help="column naming each row's split: train, valid or test (default: none)")
    p.add_argument("--on-bad-row", choices=("error", "skip"), default="error",
                   help="stop at the first bad row (default) or count and skip bad rows")
    p.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS,
                   help="rows per chunk in memory (bounds peak memory)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes reading shards of the input (criteo format; default: 1)")
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

    m = cmds.add_parser("movielens-csv", help="an ml-100k folder as ratings/movies/users CSV "
                        "tables with a newest-ratings test file (configs/movielens_csv.toml)")
    m.add_argument("--input", required=True, help="ml-100k folder (u.data, u.item, u.user, ...)")
    m.add_argument("--out", required=True, help="folder to write the CSV tables to")
    m.add_argument("--test-fraction", type=float, default=0.2,
                   help="newest share of ratings in ratings_test.csv (default: 0.2)")
    m.set_defaults(func=_movielens_csv)
