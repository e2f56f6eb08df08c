"""The input formats, one line each: `[dataset] format` name -> "module:attribute" of its
`Reader`. Only names live here, outside the readers package, so the schema can check a format
without importing the readers (which import the schema); `reader_for` imports the one a run
needs. A new format is `features/readers/<name>.py` defining a `Reader` plus one line below."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from plexrec.features.errors import SchemaError

READERS: dict[str, str] = {
    "criteo": "plexrec.features.readers.criteo:READER",
    "movielens": "plexrec.features.readers.movielens:READER",
    "csv": "plexrec.features.readers.tabular:CSV_READER",
    "parquet": "plexrec.features.readers.tabular:PARQUET_READER",
    "libfm": "plexrec.features.readers.libfm:READER",
}


@dataclass(frozen=True)
class Reader:
    """`read(schema, path, chunk_rows, on_bad_row, stats)` yields DataFrames with a `_line`
    column and `attrs["path"]`; `files(path)` lists the files it reads, in order. A reader with
    `ranges` also takes `byte_range=(start, end)` (line starts of one file), which lets
    preparation shard a file over processes."""

    read: Callable[..., Iterator[pd.DataFrame]]
    files: Callable[[Path], list[Path]]
    description: str
    ranges: bool = False


def reader_for(fmt: str, source: str = "schema") -> Reader:
    """The reader registered for `fmt`; a SchemaError names the format and the known ones."""
    if fmt not in READERS:
        raise SchemaError(f"{source}: no reader for format {fmt!r} (known: {', '.join(READERS)})")
    module, _, attribute = READERS[fmt].partition(":")
    reader: Any = getattr(importlib.import_module(module), attribute)
    if not isinstance(reader, Reader):
        raise TypeError(f"{READERS[fmt]} is not a Reader")
    return reader
