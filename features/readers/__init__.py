"""Readers turn raw files into chunks of raw columns (pandas DataFrames); `read_chunks` picks one
by `schema.format`. Each chunk has a `_line` column (1-based input line of each row) and
`attrs["path"]`, so later stages can still name the culprit of a bad value."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from plexrec.features.errors import SchemaError
from plexrec.features.joins import load_side_tables, side_file
from plexrec.features.reader_registry import READERS, reader_for
from plexrec.features.readers.criteo import CRITEO_COLUMNS
from plexrec.features.readers.delimited import LINE_COLUMN, ReadStats, check_policy
from plexrec.features.readers.movielens import MOVIELENS_COLUMNS
from plexrec.features.readers.roles import column_roles
from plexrec.features.schema import Schema

__all__ = ["CRITEO_COLUMNS", "LINE_COLUMN", "MOVIELENS_COLUMNS", "READERS", "ReadStats",
           "input_files", "read_chunks"]


def input_files(schema: Schema, input_path: str | Path) -> list[Path]:
    """The files a prepare run reads (what the cache's input hash covers), side tables
    included."""
    files = reader_for(schema.format, schema.source).files(Path(input_path))
    return files + [side_file(j, Path(input_path)) for j in schema.joins]


def read_chunks(schema: Schema, input_path: str | Path, chunk_rows: int = 1_000_000,
                on_bad_row: str = "error", stats: ReadStats | None = None,
                byte_range: tuple[int, int] | None = None) -> Iterator[pd.DataFrame]:
    """Chunks of at most `chunk_rows` rows. Bad rows raise DataError (file, line, field) or,
    with on_bad_row="skip", are counted in `stats` (and logged at the end). `byte_range` reads
    only those bytes of a single input file (readers with `ranges`)."""
    check_policy(on_bad_row)
    if chunk_rows < 1:
        raise SchemaError(f"chunk_rows must be >= 1, got {chunk_rows}")
    registered = reader_for(schema.format, schema.source)
    if byte_range is not None and not registered.ranges:
        raise SchemaError(f"{schema.source}: format {schema.format!r} cannot read byte ranges")
    extra = {} if byte_range is None else {"byte_range": byte_range}
    stats = stats if stats is not None else ReadStats()
    sides = load_side_tables(schema.joins, Path(input_path),
                             column_roles(schema, joined=True).numeric) if schema.joins else []
    for df in registered.read(schema, Path(input_path), chunk_rows, on_bad_row, stats, **extra):
        if len(df):
            for side in sides:
                df, unmatched = side.apply(df)
                if unmatched:
                    stats.unmatched[side.join.path] = (stats.unmatched.get(side.join.path, 0)
                                                       + unmatched)
            stats.rows += len(df)
            yield df
    if stats.skipped:
        import logging

        logging.getLogger(__name__).warning(
            "%s: skipped %d bad row(s): %s", input_path, stats.skipped,
            ", ".join(f"{k}: {v}" for k, v in sorted(stats.skipped_by_reason.items())))
