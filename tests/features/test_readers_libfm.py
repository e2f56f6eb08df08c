"""format = "libfm": field-aware and plain tokens, -1/1 labels, bad tokens named by line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plexrec.features.cache import PreparedData
from plexrec.features.errors import DataError
from plexrec.features.prepare import prepare
from plexrec.features.readers import ReadStats, read_chunks
from plexrec.features.schema import Schema, parse_schema
from tests.features.helpers import write_lines


def _schema(columns: list[str], features: list[dict]) -> Schema:
    return parse_schema({"dataset": {"name": "fm", "format": "libfm", "columns": columns},
                         "label": {"column": "click"}, "features": features}, "fm.toml")


FFM = _schema(["click", "site", "app", "price"],
              [{"name": "site", "kind": "categorical", "min_count": 1},
               {"name": "app", "kind": "multi_hot", "min_count": 1},
               {"name": "price", "kind": "dense", "transform": "log1p"}])


def test_libfm_field_aware_rows_and_minus_one_labels(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.ffm", ["-1 0:17:1 1:5:1 2:0:3.5", "", "1 0:17:1 1:5:1 1:9:1",
                                            "+1 1:2:1"])
    df = pd.concat(read_chunks(FFM, path, 2), ignore_index=True)
    assert df["click"].tolist() == [0.0, 1.0, 1.0]
    assert df["site"].tolist() == ["17", "17", None]
    assert df["app"].tolist() == ["5", "5|9", "2"]
    assert df["price"].iloc[0] == 3.5 and np.isnan(df["price"].iloc[1])
    assert df["_line"].tolist() == [1, 3, 4]
    d = PreparedData.open(prepare(FFM, path, tmp_path / "c", progress=False).out_dir)
    assert d.num_rows == 3 and d.labels.tolist() == [0.0, 1.0, 1.0]
    assert d.cardinality("site") == 2 and d.dense[0, 0] == pytest.approx(np.log1p(3.5))


def test_libfm_plain_libsvm_tokens_form_one_bag(tmp_path: Path) -> None:
    schema = _schema(["click", "ids"], [{"name": "ids", "kind": "multi_hot", "min_count": 1}])
    path = write_lines(tmp_path / "t.svm", ["0 3:1 10:1 42:1", "1 3:1"])
    df = pd.concat(read_chunks(schema, path, 10))
    assert df["ids"].tolist() == ["3|10|42", "3"]


def test_libfm_bad_tokens_name_line_and_token_or_are_counted(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.ffm", ["1 0:1:1", "0 7:1:1", "x 0:1:1", "1 0:1", "0 2:1:abc"])
    with pytest.raises(DataError, match=r"t.ffm:2.*field 7 is not one of 0..2"):
        list(read_chunks(FFM, path, 10))
    stats = ReadStats()
    df = pd.concat(read_chunks(FFM, path, 10, "skip", stats))
    assert df["_line"].tolist() == [1, 4]
    assert stats.skipped == 3
    assert stats.skipped_by_reason == {"bad token": 2, "label is not a number": 1}
