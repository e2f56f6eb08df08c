"""Streaming CSV with quoting (RFC 4180: quoted fields may hold the delimiter, doubled quotes and
newlines), on pyarrow's C++ parser.

A row with the wrong number of fields is a bad row, reported with its record number (the line
number when no value spans lines) or counted and skipped. Each output row keeps its record
number in `_line`, so later stages still name the culprit of a bad value."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from plexrec.features.errors import DataError
from plexrec.features.readers.delimited import ReadStats, check_policy

BLOCK_BYTES = 1 << 24


class _BadRows:
    """Collects pyarrow's invalid rows in file order (single-threaded reading keeps it)."""

    def __init__(self) -> None:
        self.numbers: list[int] = []
        self.first: tuple[int, int, int] | None = None

    def __call__(self, row: pacsv.InvalidRow) -> str:
        number = int(row.number) if row.number is not None else -1
        self.numbers.append(number)
        if self.first is None:
            self.first = (number, row.expected_columns, row.actual_columns)
        return "skip"


def _record_numbers(start: int, n: int, skipped: np.ndarray) -> np.ndarray:
    """The next `n` record numbers from `start` that were not skipped."""
    pending = skipped[skipped >= start]
    candidates = np.arange(start, start + n + len(pending), dtype=np.int64)
    if len(pending):
        candidates = candidates[~np.isin(candidates, pending)]
    return candidates[:n]


def _to_pandas(batch: pa.RecordBatch, numeric: Sequence[str]) -> pd.DataFrame:
    """Numeric columns cast to float64 in Arrow when every value is a number (the common case,
    fast); a column holding a non-number stays strings, for validate_numeric to name the row."""
    columns = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if name in numeric:
            with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError):
                column = column.cast(pa.float64())
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names).to_pandas()


def read_quoted_csv(path: Path, names: Sequence[str], *, delimiter: str, header: bool,
                    usecols: Sequence[str], chunk_rows: int, on_bad_row: str,
                    stats: ReadStats, numeric: Sequence[str] = (), encoding: str = "utf-8"
                    ) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """Yields (DataFrame of `usecols`, missing = None/NaN; record number of each row), at most
    chunk_rows rows. `numeric` columns come as float64 where they parse; a non-number is left
    for readers.delimited.validate_numeric, so it is a bad row with its line, not a failed
    block."""
    check_policy(on_bad_row)
    if len(delimiter) != 1:
        raise DataError(f"delimiter must be one character, got {delimiter!r}", path=str(path))
    bad = _BadRows()
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(use_threads=False, block_size=BLOCK_BYTES,
                                       column_names=list(names), skip_rows=int(header),
                                       encoding=encoding),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True,
                                         invalid_row_handler=bad),
        convert_options=pacsv.ConvertOptions(include_columns=list(usecols),
                                             column_types={c: pa.string() for c in usecols},
                                             strings_can_be_null=True))
    next_record = 1 + int(header)
    reported = 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise DataError(f"unreadable CSV: {exc}", path=str(path)) from None
        if len(bad.numbers) > reported:
            if on_bad_row == "error":
                assert bad.first is not None
                number, expected, actual = bad.first
                raise DataError(f"expected {expected} fields, found {actual}", path=str(path),
                                line=number if number > 0 else None,
                                field=names[actual] if actual < len(names)
                                else f"#{actual} (extra)")
            stats.skip("wrong field count", len(bad.numbers) - reported)
            reported = len(bad.numbers)
        if batch.num_rows == 0:
            continue
        lines = _record_numbers(next_record, batch.num_rows, np.asarray(bad.numbers))
        next_record = int(lines[-1]) + 1
        df = _to_pandas(batch, numeric)
        for start in range(0, len(df), chunk_rows):
            part = df.iloc[start:start + chunk_rows].reset_index(drop=True)
            yield part, lines[start:start + chunk_rows]
