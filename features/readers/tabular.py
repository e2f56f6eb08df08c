"""Generic CSV and Parquet inputs, described only by the schema (delimiter, header, columns)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from plexrec.features.errors import DataError
from plexrec.features.reader_registry import Reader
from plexrec.features.readers.delimited import (
    LINE_COLUMN,
    ReadStats,
    header_names,
    validate_numeric,
)
from plexrec.features.readers.quoted_csv import read_quoted_csv
from plexrec.features.readers.roles import column_roles, require_columns
from plexrec.features.schema import Schema, has_header
from plexrec.features.strings import as_strings


def tabular_files(path: Path, suffix: str) -> list[Path]:
    """A file, or every `*<suffix>` file of a directory in name order (a partitioned dataset)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(suffix))
        if files:
            return files
        raise DataError(f"no {suffix} files in directory", path=str(path))
    raise DataError("input not found", path=str(path))


def read_csv(schema: Schema, path: Path, chunk_rows: int, on_bad_row: str,
             stats: ReadStats) -> Iterator[pd.DataFrame]:
    """Delimiter-separated text with RFC 4180 quoting (readers/quoted_csv.py); column names
    from `columns` or the first file's header. Under `header = "every_file"` each later file must repeat that header and under
    "first_file" none may, so a header row is never read as data nor a data row dropped."""
    roles = column_roles(schema)
    files = tabular_files(path, ".csv")
    if schema.columns:
        names = list(schema.columns)
    elif schema.header != "none":
        names = header_names(files[0], schema.delimiter)
    else:
        raise DataError(f"{schema.source}: a csv without header needs [dataset] columns",
                        path=str(files[0]))
    for index, file in enumerate(files):
        header = has_header(schema, index)
        if index and schema.header != "none":
            _check_header(file, names, header, schema)
        require_columns(schema, names, file)
        for df, lines in read_quoted_csv(file, names, delimiter=schema.delimiter,
                                         header=header, usecols=roles.all,
                                         chunk_rows=chunk_rows, on_bad_row=on_bad_row,
                                         stats=stats, numeric=roles.numeric):
            df, lines = validate_numeric(df, lines, roles.numeric, roles.required, file,
                                         on_bad_row, stats)
            df[LINE_COLUMN] = lines
            df.attrs["path"] = str(file)
            yield df


def _check_header(file: Path, names: list[str], expected: bool, schema: Schema) -> None:
    first = header_names(file, schema.delimiter)
    if expected and first != names:
        raise DataError(f"first line is not the header of the first file ({schema.delimiter.join(names)}); "
                        'if only the first file has one, set [dataset] header = "first_file"',
                        path=str(file), line=1)
    if not expected and first == names:
        raise DataError('repeats the header row of the first file; set [dataset] header = '
                        '"every_file"', path=str(file), line=1)


def read_parquet(schema: Schema, path: Path, chunk_rows: int, on_bad_row: str,
                 stats: ReadStats) -> Iterator[pd.DataFrame]:
    """Parquet in record batches; the 'line' of an error is the 1-based row within its file."""
    import pyarrow.parquet as pq

    roles = column_roles(schema)
    for file in tabular_files(path, ".parquet"):
        pf = pq.ParquetFile(file)
        require_columns(schema, pf.schema_arrow.names, file)
        start = 0
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=list(roles.all)):
            df = batch.to_pandas()
            lines = start + 1 + np.arange(len(df), dtype=np.int64)
            start += len(df)
            for name in roles.strings:
                col = df[name]
                if col.dtype != object:
                    df[name] = as_strings(col).to_numpy(dtype=object)
            df, lines = validate_numeric(df, lines, roles.numeric, roles.required, file,
                                         on_bad_row, stats)
            df[LINE_COLUMN] = lines
            df.attrs["path"] = str(file)
            yield df


CSV_READER = Reader(read=read_csv, files=lambda path: tabular_files(path, ".csv"),
                    description="delimited text, a file or a folder of *.csv in name order")
PARQUET_READER = Reader(read=read_parquet, files=lambda path: tabular_files(path, ".parquet"),
                        description="Parquet, a file or a folder of *.parquet in name order")
