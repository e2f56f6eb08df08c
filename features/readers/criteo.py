"""Criteo Display Advertising (Kaggle) TSV: label, I1..I13 integer counts, C1..C26 hex ids."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from plexrec.features.errors import DataError
from plexrec.features.reader_registry import Reader
from plexrec.features.readers.delimited import (
    LINE_COLUMN,
    ReadStats,
    read_delimited,
    validate_numeric,
)
from plexrec.features.readers.roles import column_roles, require_columns
from plexrec.features.readers.tabular import tabular_files
from plexrec.features.schema import Schema, has_header

CRITEO_COLUMNS = (("label",) + tuple(f"I{i}" for i in range(1, 14))
                  + tuple(f"C{i}" for i in range(1, 27)))


def read_criteo(schema: Schema, path: Path, chunk_rows: int, on_bad_row: str,
                stats: ReadStats, byte_range: tuple[int, int] | None = None
                ) -> Iterator[pd.DataFrame]:
    """Chunks of the columns the schema uses; dense and label columns as float64 (empty = NaN),
    categorical columns as strings. `schema.columns` may rename the 40 columns. `byte_range`
    reads only bytes [start, end) (line starts); lines then count from its start."""
    names = tuple(schema.columns) or CRITEO_COLUMNS
    if len(names) != len(CRITEO_COLUMNS):
        raise DataError(f"{schema.source}: a criteo schema lists 40 columns, got {len(names)}")
    if not path.is_file():
        raise DataError("criteo input is not a file", path=str(path))
    roles = column_roles(schema)
    require_columns(schema, names, path)
    for df, lines in read_delimited(path, names, delimiter=schema.delimiter,
                                    header=has_header(schema, 0), usecols=roles.all,
                                    string_cols=roles.strings, chunk_rows=chunk_rows,
                                    on_bad_row=on_bad_row, stats=stats, byte_range=byte_range):
        df, lines = validate_numeric(df, lines, roles.numeric, roles.required, path, on_bad_row,
                                     stats)
        df[LINE_COLUMN] = lines
        df.attrs["path"] = str(path)
        yield df


READER = Reader(read=read_criteo, files=lambda path: tabular_files(path, ""),
                description="Criteo Kaggle TSV: label, I1-I13, C1-C26, no header", ranges=True)
