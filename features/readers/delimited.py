"""Streaming reader for delimiter-separated text without quoting (Criteo TSV, u.data, plain CSV).

Field counts are checked on raw bytes with numpy (newline and delimiter positions), so a short
row is caught with its line number instead of being padded with NaN by pandas, and a 10M-row file
streams in bounded blocks."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from plexrec.features.errors import ConfigError, DataError

log = logging.getLogger(__name__)

BAD_ROW_POLICIES = ("error", "skip")
LINE_COLUMN = "_line"


@dataclass
class ReadStats:
    """Counts what a reader skipped, so nothing is dropped silently, and the rows each join
    (by side table path) found no match for; filled while iterating."""

    rows: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    unmatched: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped += n
        self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + n


def check_policy(on_bad_row: str) -> None:
    if on_bad_row not in BAD_ROW_POLICIES:
        raise ConfigError(f"on_bad_row must be one of {', '.join(BAD_ROW_POLICIES)}, "
                        f"got {on_bad_row!r}")


def count_lines(path: Path, end: int) -> int:
    """Newlines in bytes [0, end) of a file: the line number a byte range starts after."""
    count = 0
    with open(path, "rb") as f:
        while end > 0 and (block := f.read(min(1 << 24, end))):
            count += block.count(b"\n")
            end -= len(block)
    return count


def _blocks(path: Path, block_bytes: int, start: int = 0, end: int | None = None
            ) -> Iterator[bytes]:
    """Blocks of whole lines (each ends with a newline) of bytes [start, end)."""
    carry = b""
    left = -1 if end is None else end - start
    with open(path, "rb") as f:
        f.seek(start)
        while True:
            block = f.read(block_bytes if left < 0 else min(block_bytes, left))
            if left >= 0:
                left -= len(block)
            if not block:
                if carry:
                    yield carry if carry.endswith(b"\n") else carry + b"\n"
                return
            data = carry + block
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            carry = data[cut + 1:]
            yield data[:cut + 1]


def _join_lines(data: bytes, starts: np.ndarray, ends: np.ndarray, sel: np.ndarray) -> bytes:
    """The bytes of lines `sel` (sorted); one slice per contiguous run, so cheap when few are bad."""
    breaks = np.flatnonzero(np.diff(sel) != 1) + 1
    runs = np.split(sel, breaks)
    return b"".join(data[starts[r[0]]:ends[r[-1]] + 1] for r in runs)


def numeric_column(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """float64 values and a mask of entries that are present but not numbers."""
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        return raw.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(len(raw), dtype=bool)
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    return values, np.isnan(values) & raw.notna().to_numpy()


def validate_numeric(df: pd.DataFrame, lines: np.ndarray, numeric: Sequence[str],
                     required: Sequence[str], path: Path, on_bad_row: str,
                     stats: ReadStats) -> tuple[pd.DataFrame, np.ndarray]:
    """Converts `numeric` columns to float64; a non-number (or a missing value in a `required`
    column) is a bad row: DataError naming the line and field, or counted and dropped."""
    bad = np.zeros(len(df), dtype=bool)
    converted: dict[str, np.ndarray] = {}
    for name in numeric:
        values, not_number = numeric_column(df[name])
        missing = np.isnan(values) & ~not_number if name in required else np.zeros_like(bad)
        for mask, what in ((not_number, "not a number"), (missing, "missing value")):
            if mask.any():
                i = int(np.argmax(mask))
                if on_bad_row == "error":
                    shown = f"{what}: {df[name].iloc[i]!r}" if what == "not a number" else what
                    raise DataError(shown, path=str(path), line=int(lines[i]), field=name)
                stats.skip(f"{name}: {what}", int((mask & ~bad).sum()))
                bad |= mask
        converted[name] = values
    for name, values in converted.items():
        df[name] = values
    if bad.any():
        keep = ~bad
        df = df.loc[keep].reset_index(drop=True)
        lines = lines[keep]
    return df, lines


def read_delimited(path: Path, names: Sequence[str], *, delimiter: str, header: bool,
                   usecols: Sequence[str], string_cols: Sequence[str], chunk_rows: int,
                   on_bad_row: str, stats: ReadStats, encoding: str = "utf-8",
                   byte_range: tuple[int, int] | None = None
                   ) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """Yields (DataFrame of `usecols`, 1-based file line of each row), at most chunk_rows rows.

    Every line must have exactly len(names) fields; blank lines are not rows and are ignored.
    Columns in `string_cols` stay strings (missing = NaN); the rest are parsed by pandas.
    `byte_range` (start, end at line starts) reads only those bytes; its line numbers count
    from the range's start (the caller adds the lines before it when it reports one)."""
    check_policy(on_bad_row)
    if len(delimiter) != 1:
        raise DataError(f"delimiter must be one character, got {delimiter!r}", path=str(path))
    ncols = len(names)
    delim = ord(delimiter)
    block_bytes = int(min(max(chunk_rows * 256, 1 << 20), 1 << 28))
    dtypes = {c: str for c in string_cols if c in usecols}
    start, end = byte_range if byte_range is not None else (0, None)
    header = header and start == 0
    line_base = 0
    for data in _blocks(path, block_bytes, start, end):
        arr = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(arr == 10)
        starts = np.empty_like(ends)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        lines = line_base + 1 + np.arange(len(ends), dtype=np.int64)
        line_base += len(ends)
        seps = np.flatnonzero(arr == delim)
        nsep = np.diff(np.searchsorted(seps, ends), prepend=0)
        del seps
        length = ends - starts
        blank = (length == 0) | ((length == 1) & (arr[np.maximum(ends - 1, 0)] == 13))
        keep = ~blank
        if header and lines[0] == 1:
            keep[0] = False
        bad = keep & (nsep != ncols - 1)
        if bad.any():
            if on_bad_row == "error":
                i = int(np.argmax(bad))
                found = int(nsep[i]) + 1
                where = names[found] if found < ncols else f"#{found} (extra)"
                raise DataError(f"expected {ncols} fields, found {found}", path=str(path),
                                line=int(lines[i]), field=where)
            stats.skip("wrong field count", int(bad.sum()))
            keep &= ~bad
        good = np.flatnonzero(keep)
        for i in range(0, len(good), chunk_rows):
            sel = good[i:i + chunk_rows]
            if sel[-1] - sel[0] + 1 == len(sel):
                buf = data[starts[sel[0]]:ends[sel[-1]] + 1]
            else:
                buf = _join_lines(data, starts, ends, sel)
            df = pd.read_csv(io.BytesIO(buf), sep=delimiter, header=None, names=list(names),
                             usecols=list(usecols), dtype=dtypes, keep_default_na=False,
                             na_values=[""], quoting=csv.QUOTE_NONE, engine="c",
                             encoding=encoding)
            if len(df) != len(sel):
                raise DataError(f"parsed {len(df)} rows from {len(sel)} lines", path=str(path),
                                line=int(lines[sel[0]]))
            yield df, lines[sel]


def header_names(path: Path, delimiter: str, encoding: str = "utf-8") -> list[str]:
    """Column names from a file's first line."""
    with open(path, encoding=encoding) as f:
        first = f.readline().rstrip("\r\n")
    if not first:
        raise DataError("empty file: no header line", path=str(path), line=1)
    return first.split(delimiter)
