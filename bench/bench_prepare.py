"""Data preparation throughput: the CSV parser with quoting against the reader it replaced, and
`plexrec data prepare` on synthetic Criteo rows.

1. CSV: a synthetic interactions CSV (configs/synthetic_interactions.toml) read end to end by
   the quoting parser (features/readers/quoted_csv.py, pyarrow) and by the previous unquoted
   numpy/pandas reader (features/readers/delimited.py `read_delimited`), then prepared into a
   cache with each; both caches must be identical.
2. Criteo: `prepare` of N synthetic Criteo rows (10M by default) with one worker and with two
   (`--workers 2`: byte-range shards in two processes); the caches must be byte-identical.
Medians of --repeats runs, rows/s.

    python -m bench.bench_prepare [--csv-rows 2000000] [--criteo-rows 10000000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.result_file import write_result
from plexrec.features.prepare import prepare
from plexrec.features.readers import ReadStats, read_chunks, tabular
from plexrec.features.readers.delimited import read_delimited
from plexrec.features.schema import Schema, load_schema

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "prepare.json"


@contextmanager
def csv_reader(kind: str, schema: Schema) -> Iterator[None]:
    """Swaps the csv format's parser for the previous, unquoted one while measuring it."""
    from plexrec.features.readers.roles import column_roles

    strings = column_roles(schema).strings

    def previous(path: Path, names: Any, *, delimiter: str, header: bool, usecols: Any,
                 chunk_rows: int, on_bad_row: str, stats: ReadStats,
                 numeric: Any = ()) -> Iterator[Any]:
        return read_delimited(path, names, delimiter=delimiter, header=header, usecols=usecols,
                              string_cols=strings, chunk_rows=chunk_rows,
                              on_bad_row=on_bad_row, stats=stats)

    original = tabular.read_quoted_csv
    if kind == "previous":
        tabular.read_quoted_csv = previous  # type: ignore[assignment]
    try:
        yield
    finally:
        tabular.read_quoted_csv = original


def _median_rate(rows: int, fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        rates.append(rows / (time.perf_counter() - start))
    return statistics.median(rates), rates


def _read_all(schema: Schema, path: Path) -> int:
    return sum(len(df) for df in read_chunks(schema, path, 200_000))


def bench_csv(work: Path, rows: int, repeats: int) -> dict[str, Any]:
    from plexrec.features.synth import write_interactions

    write_interactions(work / "csv", rows, seed=0, progress=False)
    path = work / "csv" / "interactions.csv"
    schema = load_schema(REPO / "configs" / "synthetic_interactions.toml")
    out: dict[str, Any] = {"rows": rows, "bytes": path.stat().st_size}
    for kind in ("quoting", "previous"):
        with csv_reader(kind, schema):
            _read_all(schema, path)
            read_rate, reads = _median_rate(rows, lambda: _read_all(schema, path), repeats)
            prep_rate, preps = _median_rate(
                rows, lambda k=kind: prepare(schema, path, work / f"cache-{k}", progress=False,
                                             force=True), repeats)
        out[kind] = {"read_rows_per_sec": read_rate, "prepare_rows_per_sec": prep_rate,
                     "all_read": reads, "all_prepare": preps}
    out["identical_caches"] = _same_bytes(work / "cache-quoting", work / "cache-previous")
    out["read_ratio"] = out["quoting"]["read_rows_per_sec"] / out["previous"]["read_rows_per_sec"]
    out["prepare_ratio"] = (out["quoting"]["prepare_rows_per_sec"]
                            / out["previous"]["prepare_rows_per_sec"])
    return out


def bench_criteo(work: Path, rows: int, repeats: int) -> dict[str, Any]:
    from plexrec.features.synth import write_criteo

    raw = work / "criteo.tsv"
    write_criteo(raw, rows, seed=0, progress=False)
    schema = load_schema(REPO / "configs" / "criteo.toml")
    out: dict[str, Any] = {"rows": rows, "bytes": raw.stat().st_size}
    for workers in (1, 2):
        rate, rates = _median_rate(
            rows, lambda w=workers: prepare(schema, raw, work / f"criteo-{w}", progress=False,
                                            force=True, workers=w), repeats)
        out[f"workers_{workers}_rows_per_sec"] = rate
        out[f"all_workers_{workers}"] = rates
    out["speedup_2_workers"] = out["workers_2_rows_per_sec"] / out["workers_1_rows_per_sec"]
    out["identical_caches"] = _same_bytes(work / "criteo-1", work / "criteo-2")
    return out


def _same_bytes(a: Path, b: Path) -> bool:
    """Every file of the two caches byte for byte, meta.json without its creation time."""
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and p.name != "meta.json"}

    def meta(root: Path) -> dict[str, Any]:
        m = json.loads((root / "meta.json").read_text())
        m.pop("created_at")
        return m

    return files(a) == files(b) and meta(a) == meta(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv-rows", type=int, default=2_000_000)
    parser.add_argument("--criteo-rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100k CSV and 200k Criteo rows")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.csv_rows, args.criteo_rows = 100_000, 200_000
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        csv = bench_csv(Path(tmp), args.csv_rows, args.repeats)
        print(f"CSV {csv['rows']:,} rows: read {csv['quoting']['read_rows_per_sec']:,.0f} rows/s "
              f"with quoting vs {csv['previous']['read_rows_per_sec']:,.0f} before "
              f"({csv['read_ratio']:.2f}x); prepare {csv['quoting']['prepare_rows_per_sec']:,.0f}"
              f" vs {csv['previous']['prepare_rows_per_sec']:,.0f} ({csv['prepare_ratio']:.2f}x);"
              f" identical caches: {csv['identical_caches']}")
        criteo = bench_criteo(Path(tmp), args.criteo_rows, args.repeats)
        print(f"Criteo {criteo['rows']:,} rows: prepare {criteo['workers_1_rows_per_sec']:,.0f} "
              f"rows/s with one worker, {criteo['workers_2_rows_per_sec']:,.0f} with two "
              f"({criteo['speedup_2_workers']:.2f}x); identical: {criteo['identical_caches']}")
    result = {"benchmark": "prepare", "csv": csv, "criteo": criteo, "repeats": args.repeats,
              "machine": platform.processor() or platform.machine(), "quick": args.quick}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
