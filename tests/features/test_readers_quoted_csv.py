from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from plexrec.features.cache import PreparedData
from plexrec.features.errors import DataError
from plexrec.features.prepare import prepare
from plexrec.features.readers import ReadStats, read_chunks
from plexrec.features.schema import parse_schema


def _schema() -> object:
    return parse_schema({"dataset": {"name": "m", "format": "csv"},
                         "label": {"column": "y", "kind": "threshold", "threshold": 4},
                         "features": [{"name": "title", "kind": "categorical", "min_count": 1},
                                      {"name": "genres", "kind": "multi_hot", "min_count": 1}]},
                        "m.toml")


def test_quoted_fields_keep_their_delimiters_quotes_and_newlines(tmp_path: Path) -> None:
    path = tmp_path / "movies.csv"
    path.write_text('title,genres,y\n"American President, The (1995)",Comedy|Drama,5\n'
                    '"The ""Best"" Film",Drama,3\n"Two\nlines",,4\nplain,Comedy,1\n')
    df = pd.concat(read_chunks(_schema(), path, 2), ignore_index=True)
    assert df["title"].tolist() == ["American President, The (1995)", 'The "Best" Film',
                                    "Two\nlines", "plain"]
    assert pd.isna(df["genres"][2]) and df["y"].tolist() == [5, 3, 4, 1]
    assert df["_line"].tolist() == [2, 3, 4, 5]
    data = PreparedData.open(prepare(_schema(), path, tmp_path / "c", progress=False).out_dir)
    assert "American President, The (1995)" in data.vocab("title")


def test_wrong_field_count_is_named_or_counted(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text('title,genres,y\n"a, b",x,5\nshort,4\n"c",y,3,extra\nd,z,1\n')
    with pytest.raises(DataError, match=r"m.csv:3: expected 3 fields, found 2 \(field y\)"):
        list(read_chunks(_schema(), path))
    stats = ReadStats()
    df = pd.concat(read_chunks(_schema(), path, on_bad_row="skip", stats=stats))
    assert df["title"].tolist() == ["a, b", "d"] and df["_line"].tolist() == [2, 5]
    assert stats.skipped_by_reason == {"wrong field count": 2} and stats.rows == 2


def test_non_number_in_a_quoted_file_names_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text('title,genres,y\n"a, b",x,5\n"c",x,five\n')
    with pytest.raises(DataError, match=r"m.csv:3: not a number: 'five' \(field y\)"):
        list(read_chunks(_schema(), path))
