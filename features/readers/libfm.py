"""libFM / libSVM text, the format many public CTR benchmarks ship in: one row per line,
`label token token ...`, each token `field:index:value` (libFFM) or `index:value` (libSVM).

`[dataset] columns` names the label first, then the fields in field-number order (field 0 is the
second name). A feature reading a field as categorical or multi-hot gets the token's index (a
field that occurs twice in a row becomes a '|'-joined bag); a dense feature gets its value; an
absent field is missing. Plain `index:value` rows put every index into the one field column, a
bag of active ids (values are ignored: such files are one-hot). Labels are mapped to 0/1 by sign
(`-1/1` and `0/1` both work), so `[label] kind = "binary"`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from plexrec.features.errors import DataError, SchemaError
from plexrec.features.reader_registry import Reader
from plexrec.features.readers.delimited import LINE_COLUMN, ReadStats
from plexrec.features.readers.roles import column_roles, require_columns
from plexrec.features.readers.tabular import tabular_files
from plexrec.features.schema import Schema


class _BadRow(ValueError):
    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.field = reason, field


def _parse(line: str, fields: list[str], numeric: set[str]) -> tuple[float, dict[str, object]]:
    parts = line.split()
    try:
        label = 1.0 if float(parts[0]) > 0 else 0.0
    except ValueError:
        raise _BadRow(f"label is not a number: {parts[0]}", "label") from None
    values: dict[str, object] = {}
    for number, token in enumerate(parts[1:], 1):
        pieces = token.split(":")
        if len(pieces) == 2:
            name, (index, value) = fields[0], pieces
        elif len(pieces) == 3:
            if not pieces[0].isdigit() or int(pieces[0]) >= len(fields):
                raise _BadRow(f"token {number} {token!r}: field {pieces[0]} is not one of "
                              f"0..{len(fields) - 1} (the fields [dataset] columns names)")
            name, index, value = fields[int(pieces[0])], pieces[1], pieces[2]
        else:
            raise _BadRow(f"token {number} {token!r} is not index:value or field:index:value")
        if name in numeric:
            try:
                values[name] = float(value)
            except ValueError:
                raise _BadRow(f"token {number} {token!r}: value is not a number", name) from None
        elif name in values:
            values[name] = f"{values[name]}|{index}"
        else:
            values[name] = index
    return label, values


def read_libfm(schema: Schema, path: Path, chunk_rows: int, on_bad_row: str,
               stats: ReadStats) -> Iterator[pd.DataFrame]:
    """Chunks with the label as 0/1 floats, dense fields as float64 (absent = NaN) and
    categorical fields as strings (absent = missing)."""
    if len(schema.columns) < 2:
        raise SchemaError(f"{schema.source} [dataset]: a libfm schema needs columns = [label, "
                          "field 0, field 1, ...]")
    label_name, fields = schema.columns[0], list(schema.columns[1:])
    if schema.label.column != label_name:
        raise SchemaError(f"{schema.source} [label]: column {schema.label.column!r} must be the "
                          f"first of [dataset] columns ({label_name!r})")
    roles = column_roles(schema)
    numeric = set(roles.numeric) - {label_name}
    wanted = [c for c in roles.all if c != label_name]
    for file in tabular_files(path, ""):
        require_columns(schema, schema.columns, file)
        rows: list[tuple[int, float, dict[str, object]]] = []
        with file.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append((number, *_parse(line, fields, numeric)))
                except _BadRow as bad:
                    if on_bad_row == "error":
                        raise DataError(str(bad), path=str(file), line=number,
                                        field=bad.field) from None
                    stats.skip(bad.reason.split(":")[0] if bad.field == "label" else "bad token")
                if len(rows) == chunk_rows:
                    yield _frame(rows, label_name, wanted, numeric, file)
                    rows = []
        if rows:
            yield _frame(rows, label_name, wanted, numeric, file)


def _frame(rows: list[tuple[int, float, dict[str, object]]], label_name: str, wanted: list[str],
           numeric: set[str], file: Path) -> pd.DataFrame:
    data: dict[str, object] = {label_name: np.array([r[1] for r in rows])}
    for name in wanted:
        if name in numeric:
            data[name] = np.array([r[2].get(name, np.nan) for r in rows], dtype=np.float64)
        else:
            data[name] = pd.array([r[2].get(name) for r in rows], dtype=object)
    df = pd.DataFrame(data)
    df[LINE_COLUMN] = np.array([r[0] for r in rows], dtype=np.int64)
    df.attrs["path"] = str(file)
    return df


READER = Reader(read=read_libfm, files=lambda path: tabular_files(path, ""),
                description="libFM/libSVM text: label, then field:index:value or index:value")
