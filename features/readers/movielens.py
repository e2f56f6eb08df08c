"""MovieLens 100K directory: u.data ratings joined with u.user and u.item (latin-1).

Besides the raw columns it derives a few that schemas commonly want: `genres` (the 19 flags as a
'|'-joined list of names from u.genre), `release_year`, `age_bucket` (the MovieLens-1M age groups)
and `zip3` (first three zip characters)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
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
from plexrec.features.schema import Schema

RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
USER_COLUMNS = ("user_id", "age", "gender", "occupation", "zip")
ITEM_COLUMNS = ("item_id", "title", "release_date", "video_release_date", "url")
DERIVED_COLUMNS = ("age_bucket", "zip3", "release_year", "genres")
MOVIELENS_COLUMNS = (RATING_COLUMNS + USER_COLUMNS[1:] + ITEM_COLUMNS[1:] + DERIVED_COLUMNS)
FILES = ("u.data", "u.user", "u.item", "u.genre")
_AGE_EDGES = np.array([18, 25, 35, 45, 50, 56])
_AGE_LABELS = np.array(["1", "18", "25", "35", "45", "50", "56"])


def movielens_files(path: Path) -> list[Path]:
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        raise DataError(f"not a MovieLens-100K directory: {missing[0]} is missing", path=str(path))
    return [path / name for name in FILES]


def _read_table(path: Path, names: tuple[str, ...], encoding: str = "latin-1") -> pd.DataFrame:
    """A small '|'-separated side table; every line must have exactly len(names) fields, so a
    short line is never padded with missing values and a long one never shifts columns."""
    if not path.exists():
        raise DataError("file not found", path=str(path))
    with path.open(encoding=encoding, newline="") as fh:
        for number, line in enumerate(fh, 1):
            fields = line.rstrip("\r\n").count("|") + 1
            if line.strip() and fields != len(names):
                raise DataError(f"expected {len(names)} '|'-separated fields, found {fields}",
                                path=str(path), line=number, field=names[min(fields, len(names)) - 1])
    df = pd.read_csv(path, sep="|", header=None, dtype=str, keep_default_na=False,
                     quoting=csv.QUOTE_NONE, encoding=encoding, na_values=[""])
    if df.shape[1] != len(names):
        raise DataError(f"expected {len(names)} fields, found {df.shape[1]}", path=str(path),
                        line=1)
    df.columns = list(names)
    return df


def read_users(path: Path) -> pd.DataFrame:
    """u.user indexed by user_id, with the derived age_bucket and zip3 (also what a serving
    request carries)."""
    users = _read_table(path / "u.user", USER_COLUMNS)
    age = pd.to_numeric(users["age"], errors="coerce")
    if age.isna().any():
        i = int(np.argmax(age.isna().to_numpy()))
        raise DataError(f"age is not a number: {users['age'].iloc[i]!r}",
                        path=str(path / "u.user"), line=i + 1, field="age")
    users["age"] = age.astype(np.float64)
    users["age_bucket"] = _AGE_LABELS[np.searchsorted(_AGE_EDGES, age.to_numpy(), side="right")]
    users["zip3"] = users["zip"].str.slice(0, 3)
    return users.set_index("user_id")


def read_items(path: Path) -> pd.DataFrame:
    genre_table = pd.read_csv(path / "u.genre", sep="|", header=None, dtype=str,
                              keep_default_na=False, encoding="latin-1").dropna()
    genre_names = genre_table[0].tolist()
    items = _read_table(path / "u.item", ITEM_COLUMNS + tuple(f"g{i}" for i in
                                                                 range(len(genre_names))))
    flags = items[[f"g{i}" for i in range(len(genre_names))]].to_numpy() == "1"
    names = np.array(genre_names, dtype=object)
    items["genres"] = ["|".join(names[row]) for row in flags]
    items["release_year"] = items["release_date"].str.slice(-4)
    return items[list(ITEM_COLUMNS) + ["genres", "release_year"]].set_index("item_id")


def _join(ratings: pd.DataFrame, table: pd.DataFrame, key: str, lines: np.ndarray,
          data_path: Path, table_path: Path) -> pd.DataFrame:
    pos = table.index.get_indexer(ratings[key])
    if (pos < 0).any():
        i = int(np.argmax(pos < 0))
        raise DataError(f"{key} {ratings[key].iloc[i]!r} is not in {table_path}",
                        path=str(data_path), line=int(lines[i]), field=key)
    joined = table.iloc[pos].reset_index(drop=True)
    return pd.concat([ratings.reset_index(drop=True), joined], axis=1)


def read_movielens(schema: Schema, path: Path, chunk_rows: int, on_bad_row: str,
                   stats: ReadStats) -> Iterator[pd.DataFrame]:
    """Chunks of ratings with user and item columns attached; ids stay strings."""
    files = movielens_files(path)
    require_columns(schema, MOVIELENS_COLUMNS, path)
    users, items = read_users(path), read_items(path)
    roles = column_roles(schema)
    extra_numeric = tuple(c for c in roles.numeric if c not in ("rating", "timestamp"))
    for df, lines in read_delimited(files[0], RATING_COLUMNS, delimiter="\t", header=False,
                                    usecols=RATING_COLUMNS, string_cols=("user_id", "item_id"),
                                    chunk_rows=chunk_rows, on_bad_row=on_bad_row, stats=stats):
        df, lines = validate_numeric(df, lines, ("rating", "timestamp"),
                                     ("rating", "timestamp"), files[0], on_bad_row, stats)
        df = _join(df, users, "user_id", lines, files[0], files[1])
        df = _join(df, items, "item_id", lines, files[0], files[2])
        df = df[list(dict.fromkeys(RATING_COLUMNS + roles.all))]
        if extra_numeric:
            df, lines = validate_numeric(df, lines, extra_numeric, (), files[0], on_bad_row,
                                         stats)
        df[LINE_COLUMN] = lines
        df.attrs["path"] = str(files[0])
        yield df


READER = Reader(read=read_movielens, files=movielens_files,
                description="a MovieLens-100K folder: u.data joined with u.user and u.item")
