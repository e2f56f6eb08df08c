from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plexrec.features.cache import PreparedData
from plexrec.features.derive import Derive, derive_values, parse_derive
from plexrec.features.errors import DataError, SchemaError
from plexrec.features.prepare import prepare
from plexrec.features.schema import parse_schema
from plexrec.features.schema_toml import schema_to_toml


def _one(d: Derive, values: list, **others: list) -> tuple[list, list]:
    cols = {"v": pd.Series(values, dtype=object), **{k: pd.Series(v, dtype=object)
                                                     for k, v in others.items()}}
    out, bad = derive_values(d, cols, "v")
    return out.tolist(), bad.tolist()


def test_hour_and_weekday_from_yymmddhh_and_unix_seconds() -> None:
    # 14102100: 2014-10-21 00h, a Tuesday; 1_000_000_000 s: 2001-09-09 01:46 UTC, a Sunday
    assert _one(Derive("hour", "yymmddhh"), ["14102100", "14102123", None]) == (
        ["0", "23", None], [False, False, False])
    assert _one(Derive("weekday", "yymmddhh"), ["14102100"])[0] == ["1"]
    assert _one(Derive("hour", "yymmddhh"), ["1410210", "14132100"])[1] == [True, True]
    assert _one(Derive("hour"), [1_000_000_000, "1000003600"])[0] == ["1", "2"]
    assert _one(Derive("weekday"), [1_000_000_000])[0] == ["6"]
    assert _one(Derive("hour"), ["soon"])[1] == [True]


def test_slice_buckets_log_square_and_cross() -> None:
    assert _one(Derive("slice", start=0, stop=3), ["02139", "9", None])[0] == ["021", "9", None]
    assert _one(Derive("buckets", boundaries=(0.0, 10.0, 100.0)), [-1, 0, 9.5, 10, 500, None]
                )[0] == ["0", "1", "1", "2", "3", None]
    # x <= 2 stays itself; larger counts share a bucket per floor(ln(x)^2), apart from them
    out, bad = _one(Derive("log_square"), [-3, 0, 2, 3, 7, 8, 1000, None, "x"])
    assert out[:7] == ["-3", "0", "2", "L1", "L3", "L4", "L47"] and out[7] is None
    assert bad == [False] * 8 + [True]
    cross = Derive("cross", columns=("a", "b"))
    cols = {"a": pd.Series(["s1", "s1", "s2", None]), "b": pd.Series(["x", "y", "x", "x"])}
    values, bad = derive_values(cross, cols, "")
    assert values[0] != values[1] != values[2] and values[3] is None and not bad.any()
    again, _ = derive_values(cross, cols, "")
    assert values.tolist() == again.tolist()


@pytest.mark.parametrize(("raw", "message"), [
    ({"kind": "minute"}, "derive kind 'minute' is not one of"),
    ({"kind": "hour", "from": "iso"}, "from 'iso' is not one of"),
    ({"kind": "hour", "start": 1}, r"unknown key\(s\) start"),
    ({"kind": "buckets", "boundaries": [3, 1]}, "strictly increasing"),
    ({"kind": "cross", "columns": ["a"]}, "at least two"),
    ("hour", "must be a table"),
])
def test_bad_derive_tables_are_named(raw: object, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        parse_derive(raw, "s.toml [[features]] #1 (f)")


def _click_schema() -> dict:
    return {"dataset": {"name": "clicks", "format": "csv"}, "label": {"column": "click"},
            "features": [
                {"name": "hour_of_day", "kind": "categorical", "column": "hour",
                 "derive": {"kind": "hour", "from": "yymmddhh"}, "min_count": 1},
                {"name": "count_bucket", "kind": "categorical", "column": "n",
                 "derive": {"kind": "log_square"}, "min_count": 1},
                {"name": "n", "kind": "dense", "transform": "log1p"},
                {"name": "site_x_app", "kind": "categorical",
                 "derive": {"kind": "cross", "columns": ["site", "app"]}, "hash_size": 1000},
                {"name": "site", "kind": "categorical", "min_count": 1}]}


def test_prepare_derives_from_the_schema_alone(tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    path.write_text("click,hour,n,site,app\n1,14102100,5,s1,a\n0,14102113,,s1,b\n"
                    "1,14102113,1000,s2,a\n")
    schema = parse_schema(_click_schema(), "clicks.toml")
    assert parse_schema(__import__("tomllib").loads(schema_to_toml(schema)), "x").fingerprint() \
        == schema.fingerprint()
    data = PreparedData.open(prepare(schema, path, tmp_path / "c", progress=False).out_dir)
    hours = data.vocab("hour_of_day")
    assert [k for k, _ in sorted(hours.items(), key=lambda kv: kv[1])] == ["13", "0"]
    assert data.values("hour_of_day").tolist() == [hours["0"], hours["13"], hours["13"]]
    buckets = data.vocab("count_bucket")
    assert set(buckets) == {"L2", "L47"} and data.values("count_bucket")[1] == 0
    cross = data.values("site_x_app")
    assert len(set(cross.tolist())) == 3 and (cross < 1000).all()
    np.testing.assert_allclose(data.dense[:, 0], np.log1p([5, 0, 1000]), rtol=1e-6)


def test_underivable_value_is_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    path.write_text("click,hour,n,site,app\n1,14102100,5,s1,a\n0,2014-10-21,3,s1,b\n")
    schema = parse_schema(_click_schema(), "clicks.toml")
    with pytest.raises(DataError, match=r"clicks.csv:3: cannot derive hour .*'2014-10-21'"):
        prepare(schema, path, tmp_path / "c", progress=False)
    result = prepare(schema, path, tmp_path / "c", on_bad_row="skip", progress=False)
    assert result.num_rows == 1
    assert result.skipped_by_reason == {"hour_of_day: cannot derive hour": 1}


def test_derive_needs_a_categorical_feature() -> None:
    raw = _click_schema()
    raw["features"][0]["kind"] = "multi_hot"
    with pytest.raises(SchemaError, match="must be 'categorical'"):
        parse_schema(raw, "clicks.toml")
