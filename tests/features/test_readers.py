from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plexrec.features.errors import ConfigError, DataError, SchemaError
from plexrec.features.readers import ReadStats, read_chunks
from plexrec.features.schema import load_schema, parse_schema
from tests.conftest import CONFIGS
from tests.features.helpers import (
    criteo_line,
    csv_schema,
    small_criteo_schema,
    write_lines,
)


def test_criteo_10k_rows_label_rate_and_chunks(criteo_10k: Path) -> None:
    schema = load_schema(CONFIGS / "criteo.toml")
    stats = ReadStats()
    chunks = list(read_chunks(schema, criteo_10k, 2500, stats=stats))
    assert all(len(c) <= 2500 for c in chunks) and len(chunks) >= 4
    df = pd.concat(chunks, ignore_index=True)
    assert len(df) == 10_000 == stats.rows and stats.skipped == 0
    assert df["label"].mean() == pytest.approx(0.218, abs=0.01)
    assert df["I1"].dtype == np.float64 and pd.api.types.is_string_dtype(df["C1"])
    assert df["C22"].isna().mean() == pytest.approx(0.82, abs=0.01)
    lines = df["_line"].to_numpy()
    np.testing.assert_array_equal(lines, np.arange(1, 10_001))
    first = criteo_10k.open().readline().rstrip("\n").split("\t")
    assert df.loc[0, "C1"] == first[14] and df.loc[0, "I5"] == float(first[5])


def test_criteo_wrong_field_count_names_file_line_field(tmp_path: Path) -> None:
    good = criteo_line()
    short = "\t".join(good.split("\t")[:30])
    path = write_lines(tmp_path / "t.txt", [good, good, short, good])
    with pytest.raises(DataError) as exc:
        list(read_chunks(small_criteo_schema(), path, 10))
    err = exc.value
    assert (err.path, err.line, err.field) == (str(path), 3, "C17")
    assert f"{path}:3" in str(err) and "expected 40 fields, found 30" in str(err)
    long = write_lines(tmp_path / "l.txt", [good + "\textra"])
    with pytest.raises(DataError, match="found 41") as exc:
        list(read_chunks(small_criteo_schema(), long, 10))
    assert exc.value.line == 1


def test_criteo_non_numeric_dense(tmp_path: Path) -> None:
    dense = [str(i) for i in range(13)]
    dense[1] = "12x"
    path = write_lines(tmp_path / "t.txt", [criteo_line(), criteo_line(dense=dense)])
    with pytest.raises(DataError, match="not a number: '12x'") as exc:
        list(read_chunks(small_criteo_schema(), path, 10))
    assert (exc.value.line, exc.value.field) == (2, "I2")


def test_skip_counts_bad_rows(tmp_path: Path) -> None:
    dense = [""] * 13
    dense[0] = "abc"
    lines = [criteo_line(label=1), "1\t2\t3", criteo_line(dense=dense), "", criteo_line(),
             criteo_line(dense=["", "-3"] + [""] * 11, cats=[""] * 26)]
    path = write_lines(tmp_path / "t.txt", lines)
    stats = ReadStats()
    df = pd.concat(read_chunks(small_criteo_schema(), path, 2, "skip", stats))
    assert len(df) == 3 and stats.rows == 3
    assert stats.skipped == 2
    assert stats.skipped_by_reason == {"wrong field count": 1, "I1: not a number": 1}
    assert df["_line"].tolist() == [1, 5, 6]
    assert df["I2"].tolist() == [1.0, 1.0, -3.0]
    assert df["C1"].isna().tolist() == [False, False, True]


def test_schema_naming_missing_column(tmp_path: Path) -> None:
    raw = {"dataset": {"name": "x", "format": "criteo"}, "label": {"column": "label"},
           "features": [{"name": "C99", "kind": "categorical", "min_count": 1}]}
    schema = parse_schema(raw, "x.toml")
    path = write_lines(tmp_path / "t.txt", [criteo_line()])
    with pytest.raises(SchemaError, match="column 'C99' is not in input") as exc:
        list(read_chunks(schema, path, 10))
    assert "x.toml" in str(exc.value) and str(path) in str(exc.value)


def _side_line(path: Path, key: str) -> list[str]:
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.split("|", 1)[0] == key:
            return line.split("|")
    raise AssertionError(f"{key} not in {path}")


def test_movielens_join_and_derived_columns(ml_100k: Path) -> None:
    schema = load_schema(CONFIGS / "movielens.toml")
    df = pd.concat(read_chunks(schema, ml_100k, 30_000), ignore_index=True)
    assert len(df) == 100_000
    assert (df["rating"] >= 4).mean() == pytest.approx(0.554, abs=0.001)
    genres = [line.split("|")[0] for line in (ml_100k / "u.genre").read_text().split()]
    item = _side_line(ml_100k / "u.item", "1")
    one = df[df["item_id"] == "1"].iloc[0]
    assert one["genres"] == "|".join(g for g, f in zip(genres, item[5:], strict=True) if f == "1")
    assert one["release_year"] == item[2][-4:]
    first = df.iloc[0]
    user, movie, _, stamp = (ml_100k / "u.data").open().readline().split()
    assert (first["user_id"], first["item_id"], first["timestamp"]) == (user, movie, int(stamp))
    _, age, gender, occupation, zip_code = _side_line(ml_100k / "u.user", user)
    assert (first["gender"], first["occupation"], first["zip3"]) == (gender, occupation,
                                                                    zip_code[:3])
    assert first["age"] == int(age)
    edges = [(1, "1"), (18, "18"), (25, "25"), (35, "35"), (45, "45"), (50, "50"), (56, "56")]
    assert first["age_bucket"] == [label for low, label in edges if int(age) >= low][-1]


def test_movielens_latin1_titles_and_bad_dir(tmp_path: Path, ml_100k: Path) -> None:
    raw = {"dataset": {"name": "m", "format": "movielens"},
           "label": {"column": "rating", "kind": "threshold", "threshold": 4},
           "features": [{"name": "title", "kind": "categorical", "min_count": 1}]}
    schema = parse_schema(raw)
    titles = set(pd.concat(read_chunks(schema, ml_100k, 100_000))["title"])
    assert any("é" in t for t in titles)
    with pytest.raises(DataError, match="u.data is missing"):
        list(read_chunks(schema, tmp_path, 10))


def test_csv_with_header_and_bad_rows(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.csv", ["user,tags,x,y", "u1,a|b|c,1.5,5", "u2,,,3",
                                            "u1,b,9,4"])
    df = pd.concat(read_chunks(csv_schema(), path, 2), ignore_index=True)
    assert df["user"].tolist() == ["u1", "u2", "u1"]
    assert df["tags"][0] == "a|b|c" and pd.isna(df["tags"][1])
    assert np.isnan(df["x"][1]) and df["y"].tolist() == [5, 3, 4]
    assert df["_line"].tolist() == [2, 3, 4]
    bad = write_lines(tmp_path / "b.csv", ["user,tags,x,y", "u1,a,1", "u2,a,x,4"])
    with pytest.raises(DataError) as exc:
        list(read_chunks(csv_schema(), bad, 10))
    assert (exc.value.line, exc.value.field) == (2, "y")
    stats = ReadStats()
    assert list(read_chunks(csv_schema(), bad, 10, "skip", stats)) == []
    assert stats.skipped == 2


def test_csv_missing_label_is_bad(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.csv", ["user,tags,x,y", "u1,a,1,"])
    with pytest.raises(DataError, match="missing value") as exc:
        list(read_chunks(csv_schema(), path, 10))
    assert (exc.value.line, exc.value.field) == (2, "y")


def test_parquet_input(tmp_path: Path) -> None:
    pd.DataFrame({"user": [1, 2, 1], "tags": ["a", None, "b|c"], "x": [1.0, None, 3.0],
                  "y": [5, 1, 4]}).to_parquet(tmp_path / "part-0.parquet")
    raw = {"dataset": {"name": "p", "format": "parquet"},
           "label": {"column": "y", "kind": "threshold", "threshold": 4},
           "features": [{"name": "user", "kind": "categorical", "min_count": 1},
                        {"name": "x", "kind": "dense"}]}
    df = pd.concat(read_chunks(parse_schema(raw), tmp_path, 2), ignore_index=True)
    assert df["user"].tolist() == ["1", "2", "1"]
    assert np.isnan(df["x"][1]) and df["y"].tolist() == [5, 1, 4]
    raw["features"].append({"name": "nope", "kind": "dense"})
    with pytest.raises(SchemaError, match="'nope'"):
        list(read_chunks(parse_schema(raw), tmp_path, 2))


def test_movielens_non_numeric_dense_and_bad_policy(ml_100k: Path) -> None:
    raw = {"dataset": {"name": "m", "format": "movielens"},
           "label": {"column": "rating", "kind": "threshold", "threshold": 4},
           "features": [{"name": "zip", "kind": "dense"}]}
    with pytest.raises(DataError, match="not a number") as exc:
        list(read_chunks(parse_schema(raw), ml_100k, 100_000))
    assert exc.value.field == "zip" and exc.value.path.endswith("u.data")
    with pytest.raises(ConfigError, match="on_bad_row"):
        list(read_chunks(parse_schema(raw), ml_100k, 10, "ignore"))


@pytest.mark.parametrize("mangle", ["|extra", "short"])
def test_malformed_movielens_side_table_names_file_and_line(tmp_path: Path, mangle: str,
                                                            ml_100k: Path) -> None:
    ml = tmp_path / "ml-100k"
    shutil.copytree(ml_100k, ml)
    lines = (ml / "u.user").read_text(encoding="latin-1").splitlines()
    lines[4] = lines[4] + "|extra" if mangle == "|extra" else lines[4].rsplit("|", 1)[0]
    (ml / "u.user").write_text("\n".join(lines) + "\n", encoding="latin-1")
    with pytest.raises(DataError, match=r"u.user:5: expected 5 '\|'-separated fields"):
        list(read_chunks(load_schema(CONFIGS / "movielens.toml"), ml))


@pytest.mark.parametrize("policy", ["first_file", "every_file", True])
def test_csv_directory_header_policy_loses_no_row(tmp_path: Path, policy: str | bool) -> None:
    head = "user,tags,x,y"
    repeat = policy != "first_file"
    write_lines(tmp_path / "a.csv", [head, "u1,a,1,5", "u2,b,2,3"])
    write_lines(tmp_path / "b.csv", [head] * repeat + ["u3,c,3,4", "u4,d,4,1"])
    stats = ReadStats()
    df = pd.concat(read_chunks(csv_schema(header=policy), tmp_path, 10, stats=stats))
    assert df["user"].tolist() == ["u1", "u2", "u3", "u4"]
    assert (stats.rows, stats.skipped) == (4, 0)


def test_csv_directory_header_mismatch_names_file(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.csv", ["user,tags,x,y", "u1,a,1,5"])
    write_lines(tmp_path / "b.csv", ["u3,c,3,4"])
    with pytest.raises(DataError, match='header = "first_file"') as exc:
        list(read_chunks(csv_schema(), tmp_path, 10))
    assert exc.value.path.endswith("b.csv") and exc.value.line == 1
    write_lines(tmp_path / "b.csv", ["user,tags,x,y", "u3,c,3,4"])
    with pytest.raises(DataError, match='header = "every_file"'):
        list(read_chunks(csv_schema(header="first_file"), tmp_path, 10))
    with pytest.raises(SchemaError, match="header"):
        csv_schema(header="sometimes")
