from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from plexrec.features.batching import split_rows
from plexrec.features.cache import PreparedData
from plexrec.features.errors import ConfigError, DataError
from plexrec.features.prepare import Inputs, prepare
from plexrec.features.training_view import TrainingView
from tests.features.helpers import csv_schema


def _write(path: Path, rows: list[str], header: str = "user,tags,x,y") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_fixed_test_and_validation_files(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.csv", [f"u{i % 5},a|b,{i % 4},{i % 6}" for i in range(18)])
    valid = _write(tmp_path / "valid.csv", ["u1,a,1,5", "u2,b,2,1"])
    test = _write(tmp_path / "test.csv", ["u1,a,1,5", "only_in_test,zz,2,1", "u3,b,3,4"])
    result = prepare(csv_schema(), Inputs(train, test=test), tmp_path / "c", progress=False)
    assert result.split_rows == {"train": 18, "val": 0, "test": 3}
    assert result.rows_by_file == {str(train): 18, str(test): 3}
    data = PreparedData.open(result.out_dir)
    splits = split_rows(data, (0.8, 0.1, 0.1), seed=1)
    np.testing.assert_array_equal(splits.test, [18, 19, 20])
    assert len(splits.train) == 16 and len(splits.val) == 2
    assert set(splits.train) | set(splits.val) == set(range(18))
    view = TrainingView(data, splits.train)
    assert "only_in_test" not in view.vocab("user") and "zz" not in view.vocab("tags")
    assert view.unseen(splits.test)["user"] == 1

    both = prepare(csv_schema(), Inputs(train, valid, test), tmp_path / "c2", progress=False)
    data = PreparedData.open(both.out_dir)
    splits = split_rows(data, (0.8, 0.1, 0.1))
    assert splits.train.tolist() == list(range(18))
    assert splits.val.tolist() == [18, 19] and splits.test.tolist() == [20, 21, 22]


def test_split_column_names_each_rows_split(tmp_path: Path) -> None:
    rows = [f"u{i},a,1,5,{'train' if i < 6 else ' Valid' if i < 8 else 'TEST'}"
            for i in range(10)]
    path = _write(tmp_path / "all.csv", rows, header="user,tags,x,y,part")
    data = PreparedData.open(prepare(csv_schema(), Inputs(path, split_column="part"),
                                     tmp_path / "c", progress=False).out_dir)
    assert data.fixed_splits == ["val", "test"]
    splits = split_rows(data)
    assert splits.train.tolist() == list(range(6))
    assert splits.val.tolist() == [6, 7] and splits.test.tolist() == [8, 9]


def test_bad_split_value_names_file_line_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path / "all.csv", ["u1,a,1,5,train", "u2,a,1,5,holdout"],
                  header="user,tags,x,y,part")
    with pytest.raises(DataError, match=r"all.csv:3: split value 'holdout'.*field part"):
        prepare(csv_schema(), Inputs(path, split_column="part"), tmp_path / "c",
                progress=False)
    result = prepare(csv_schema(), Inputs(path, split_column="part"), tmp_path / "c",
                     on_bad_row="skip", progress=False)
    assert result.num_rows == 1 and result.skipped_by_reason == {"part: not a split name": 1}


def test_split_inputs_are_one_or_the_other(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="split column or valid/test"):
        Inputs(tmp_path, test=tmp_path, split_column="part")


def test_rows_per_file_add_up_over_a_directory(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i, n in enumerate((3, 5, 2)):
        _write(folder / f"part-{i}.csv", [f"u{j},a,1,4" for j in range(n)])
    result = prepare(csv_schema(), folder, tmp_path / "c", progress=False)
    assert list(result.rows_by_file.values()) == [3, 5, 2]
    assert sum(result.rows_by_file.values()) == result.num_rows == 10
    assert result.split_rows == {}
