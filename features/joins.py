"""Many-to-one joins declared in the schema (`[[dataset.join]]`): a side table (movies, users,
ad campaigns) keyed by one column, whose columns are added to every input row by that row's
key. Rows without a match get missing values and are counted per join, never dropped.

A side table is small next to the input: it is read once, whole, and kept in memory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plexrec.features.errors import DataError, SchemaError
from plexrec.features.strings import as_strings

_KEYS = ("path", "on", "key", "columns", "delimiter", "header", "names", "encoding")


@dataclass(frozen=True)
class Join:
    """`path` (relative paths are read from the input's folder), `on` (the input's key column),
    `key` (the side table's key column, default `on`), `columns` (what it adds; default every
    other column), and how to read it: CSV with quoting (`delimiter`, `header`, `names` when it
    has no header, `encoding`) or Parquet by suffix."""

    path: str
    on: str
    key: str
    columns: tuple[str, ...] = ()
    delimiter: str = ","
    header: bool = True
    names: tuple[str, ...] = ()
    encoding: str = "utf-8"

    def to_toml(self) -> dict[str, Any]:
        return {"path": self.path, "on": self.on, "key": self.key, "columns": list(self.columns),
                "delimiter": self.delimiter, "header": self.header, "names": list(self.names),
                "encoding": self.encoding}


def _strings(raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SchemaError(f"{where}: {key} must be a list of column names, got {value!r}")
    return tuple(value)


def parse_join(raw: Any, where: str) -> Join:
    if not isinstance(raw, Mapping):
        raise SchemaError(f"{where}: expected a table")
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise SchemaError(f"{where}: unknown key(s) {', '.join(unknown)} "
                          f"(known: {', '.join(_KEYS)})")
    for key in ("path", "on"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise SchemaError(f"{where}: {key} must be a non-empty string")
    for key in ("key", "delimiter", "encoding"):
        if key in raw and not isinstance(raw[key], str):
            raise SchemaError(f"{where}: {key} must be a string, got {raw[key]!r}")
    if "header" in raw and not isinstance(raw["header"], bool):
        raise SchemaError(f"{where}: header must be true or false, got {raw['header']!r}")
    join = Join(path=raw["path"], on=raw["on"], key=raw.get("key", raw["on"]),
                columns=_strings(raw, "columns", where), delimiter=raw.get("delimiter", ","),
                header=raw.get("header", True), names=_strings(raw, "names", where),
                encoding=raw.get("encoding", "utf-8"))
    if len(join.delimiter) != 1:
        raise SchemaError(f"{where}: delimiter must be one character, got {join.delimiter!r}")
    if not join.header and not join.names:
        raise SchemaError(f"{where}: a side table without a header needs names")
    return join


def side_file(join: Join, input_path: Path) -> Path:
    """The side table's file: absolute, or relative to the input's folder."""
    path = Path(join.path).expanduser()
    if path.is_absolute():
        return path
    base = input_path if input_path.is_dir() else input_path.parent
    return base / path


class SideTable:
    """One loaded side table: its added columns indexed by key (as strings)."""

    def __init__(self, join: Join, file: Path, numeric: Sequence[str]) -> None:
        self.join, self.file = join, file
        frame = self._read(file)
        if join.key not in frame.columns:
            raise SchemaError(f"join {join.path}: key column {join.key!r} is not in the side "
                              f"table (it has: {', '.join(frame.columns)})")
        columns = list(join.columns) or [c for c in frame.columns if c != join.key]
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise SchemaError(f"join {join.path}: column {missing[0]!r} is not in the side table "
                              f"(it has: {', '.join(frame.columns)})")
        first_line = 2 if join.header else 1
        keys = frame[join.key]
        if keys.isna().any():
            raise DataError("missing join key", path=str(file),
                            line=int(np.argmax(keys.isna().to_numpy())) + first_line,
                            field=join.key)
        dupes = keys.duplicated()
        if dupes.any():
            i = int(np.argmax(dupes.to_numpy()))
            raise DataError(f"join key {keys.iloc[i]!r} occurs twice: a join is many-to-one",
                            path=str(file), line=i + first_line, field=join.key)
        table = frame[columns].copy()
        for name in (c for c in columns if c in numeric):
            values = pd.to_numeric(table[name], errors="coerce")
            bad = values.isna() & table[name].notna()
            if bad.any():
                i = int(np.argmax(bad.to_numpy()))
                raise DataError(f"not a number: {table[name].iloc[i]!r}", path=str(file),
                                line=i + first_line, field=name)
            table[name] = values.astype(np.float64)
        table.index = pd.Index(keys.astype(str), name=None)
        self.table = table

    def _read(self, file: Path) -> pd.DataFrame:
        if not file.is_file():
            raise DataError("join side table not found", path=str(file))
        if file.suffix == ".parquet":
            import pyarrow.parquet as pq

            frame = pq.read_table(file).to_pandas()
            return frame.astype({c: object for c in frame.columns}).where(frame.notna(), None)
        import csv

        import pyarrow as pa
        import pyarrow.csv as pacsv

        j = self.join
        names = list(j.names)
        if not names:
            with open(file, encoding=j.encoding, newline="") as fh:
                names = next(csv.reader(fh, delimiter=j.delimiter), [])
            if not names:
                raise DataError("empty side table: no header line", path=str(file), line=1)
        try:
            table = pacsv.read_csv(
                file, read_options=pacsv.ReadOptions(column_names=names, skip_rows=int(j.header),
                                                     encoding=j.encoding),
                parse_options=pacsv.ParseOptions(delimiter=j.delimiter, newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types={n: pa.string() for n in names}, strings_can_be_null=True))
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise DataError(f"unreadable side table: {exc}", path=str(file)) from None
        return table.to_pandas()

    @property
    def columns(self) -> list[str]:
        return list(self.table.columns)

    def apply(self, df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
        """`df` with the side columns added by its `on` column; and how many rows matched
        nothing (their side columns are missing)."""
        keys = as_strings(df[self.join.on])
        matched = keys.isin(self.table.index).to_numpy()
        added = self.table.reindex(keys.fillna("\0missing").to_numpy())
        attrs = df.attrs
        out = df.reset_index(drop=True).assign(
            **{c: added[c].to_numpy() for c in self.table.columns})
        out.attrs = attrs
        return out, int((~matched).sum())


def load_side_tables(joins: Sequence[Join], input_path: Path, numeric: Sequence[str]
                     ) -> list[SideTable]:
    return [SideTable(j, side_file(j, input_path), numeric) for j in joins]
