from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from plexrec.features.cache import PreparedData
from plexrec.features.errors import DataError, SchemaError
from plexrec.features.prepare import prepare
from plexrec.features.schema import parse_schema


def _schema(**join_extra: Any) -> dict[str, Any]:
    return {"dataset": {"name": "ml", "format": "csv", "join": [
                {"path": "movies.csv", "on": "item_id", "key": "movie_id",
                 "columns": ["title", "genres"], **join_extra},
                {"path": "users.csv", "on": "user_id", "columns": ["age", "gender"]}]},
            "label": {"column": "rating", "kind": "threshold", "threshold": 4},
            "features": [{"name": "user_id", "kind": "categorical", "min_count": 1},
                         {"name": "item_id", "kind": "categorical", "min_count": 1},
                         {"name": "genres", "kind": "multi_hot", "min_count": 1},
                         {"name": "gender", "kind": "categorical", "min_count": 1},
                         {"name": "age", "kind": "dense", "transform": "log1p"}]}


def _files(tmp: Path) -> Path:
    (tmp / "ratings.csv").write_text("user_id,item_id,rating\n1,10,5\n2,10,3\n1,11,4\n3,99,2\n")
    (tmp / "movies.csv").write_text('movie_id,title,genres\n10,"Heat, The",Action|Crime\n'
                                    "11,Toy Story,Animation\n")
    (tmp / "users.csv").write_text("user_id,age,gender\n1,24,M\n2,53,F\n3,,F\n")
    return tmp / "ratings.csv"


def test_ratings_join_movies_and_users(tmp_path: Path) -> None:
    ratings = _files(tmp_path)
    schema = parse_schema(_schema(), "ml.toml")
    result = prepare(schema, ratings, tmp_path / "c", progress=False)
    assert result.num_rows == 4 and result.join_unmatched == {"movies.csv": 1}
    data = PreparedData.open(result.out_dir)
    assert data.schema.fingerprint() == schema.fingerprint()
    genres = {i: v for v, i in data.vocab("genres").items()}
    offsets, values = data.offsets("genres"), data.values("genres")
    rows = [sorted(genres[i] for i in values[offsets[r]:offsets[r + 1]]) for r in range(4)]
    assert rows == [["Action", "Crime"], ["Action", "Crime"], ["Animation"], []]
    gender = data.vocab("gender")
    assert data.values("gender").tolist() == [gender["M"], gender["F"], gender["M"], gender["F"]]
    np.testing.assert_allclose(data.dense[:, 0], np.log1p([24, 53, 24, 0]), rtol=1e-6)


def test_side_table_change_rebuilds_the_cache(tmp_path: Path) -> None:
    ratings = _files(tmp_path)
    schema = parse_schema(_schema(), "ml.toml")
    first = prepare(schema, ratings, tmp_path / "c", progress=False)
    assert prepare(schema, ratings, tmp_path / "c", progress=False).reused
    (tmp_path / "users.csv").write_text("user_id,age,gender\n1,24,F\n2,53,F\n3,,F\n")
    again = prepare(schema, ratings, tmp_path / "c", progress=False)
    assert not again.reused and again.input_hash != first.input_hash


def test_duplicate_side_key_and_bad_number_are_named(tmp_path: Path) -> None:
    ratings = _files(tmp_path)
    (tmp_path / "movies.csv").write_text("movie_id,title,genres\n10,A,x\n11,B,y\n10,C,z\n")
    with pytest.raises(DataError, match=r"movies.csv:4: join key '10' occurs twice"):
        prepare(parse_schema(_schema(), "ml.toml"), ratings, tmp_path / "c", progress=False)
    _files(tmp_path)
    (tmp_path / "users.csv").write_text("user_id,age,gender\n1,old,M\n")
    with pytest.raises(DataError, match=r"users.csv:2: not a number: 'old' \(field age\)"):
        prepare(parse_schema(_schema(), "ml.toml"), ratings, tmp_path / "c", progress=False)


@pytest.mark.parametrize(("extra", "message"), [
    ({"how": "left"}, r"unknown key\(s\) how"),
    ({"columns": []}, "list the columns it adds"),
    ({"header": False}, "without a header needs names"),
])
def test_bad_join_tables_are_named(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        parse_schema(_schema(**extra), "ml.toml")


def test_missing_side_column_is_named(tmp_path: Path) -> None:
    ratings = _files(tmp_path)
    raw = _schema(columns=["title", "year"])
    with pytest.raises(SchemaError, match="column 'year' is not in the side table"):
        prepare(parse_schema(raw, "ml.toml"), ratings, tmp_path / "c", progress=False)
