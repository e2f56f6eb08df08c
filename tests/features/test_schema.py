"""The integrator's schema validation: every error names the file and the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from plexrec.features.errors import SchemaError
from plexrec.features.schema import load_schema, parse_schema
from tests.conftest import CONFIGS

BASE: dict[str, Any] = {
    "dataset": {"name": "d", "format": "csv"},
    "label": {"column": "y"},
    "features": [{"name": "a", "kind": "categorical", "min_count": 1},
                 {"name": "b", "kind": "dense"}],
}


def _with(path: tuple, value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    node = raw
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return raw


@pytest.mark.parametrize(("path", "value", "needle"), [
    (("features", 0, "kind"), "embedding", "kind 'embedding' is not one of"),
    (("features", 0, "side"), "both", "side 'both' is not one of"),
    (("features", 0, "hash_size"), 10, "exactly one of 'min_count'"),
    (("features", 0, "min_count"), None, "exactly one of 'min_count'"),
    (("features", 0, "min_count"), 0, "min_count must be >= 1"),
    (("features", 0, "max_length"), 3, "use kind 'multi_hot'"),
    (("features", 0, "colour"), "red", "unknown field(s) colour"),
    (("features", 1, "transform"), "clamp", "needs 'min' and/or 'max'"),
    (("features", 1, "fill"), "zero", "field 'fill' must be"),
    (("dataset", "format"), "xml", "format 'xml' is not one of"),
    (("dataset", "user_key"), "nobody", "user_key 'nobody' is not a feature name"),
    (("dataset", "columns"), ["a", "b"], "columns does not list y"),
    (("label", "column"), None, "missing required field 'column'"),
    (("label", "kind"), "ordinal", "kind 'ordinal' is not one of"),
])
def test_invalid_schema_names_file_and_field(path: tuple, value: Any, needle: str) -> None:
    with pytest.raises(SchemaError) as exc:
        parse_schema(_with(path, value), "bad.toml")
    assert "bad.toml" in str(exc.value)
    assert needle in str(exc.value)


def test_feature_errors_name_the_feature() -> None:
    with pytest.raises(SchemaError, match=r"#1 \(a\)"):
        parse_schema(_with(("features", 0, "kind"), "nope"), "bad.toml")


def test_duplicate_and_empty_features() -> None:
    raw = _with(("features",), [BASE["features"][0], BASE["features"][0]])
    with pytest.raises(SchemaError, match="duplicate feature name"):
        parse_schema(raw, "bad.toml")
    with pytest.raises(SchemaError, match="empty"):
        parse_schema(_with(("features",), []), "bad.toml")


def test_load_schema_missing_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="not found"):
        load_schema(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[dataset\nname=")
    with pytest.raises(SchemaError, match="invalid TOML") as exc:
        load_schema(bad)
    assert str(bad) in str(exc.value)


def test_fingerprint_ignores_source_but_not_content() -> None:
    a = parse_schema(BASE, "one.toml")
    assert a.fingerprint() == parse_schema(BASE, "two.toml").fingerprint()
    changed = _with(("features", 0, "min_count"), 2)
    assert parse_schema(changed).fingerprint() != a.fingerprint()


def test_shipped_configs_load() -> None:
    criteo = load_schema(CONFIGS / "criteo.toml")
    assert [f.name for f in criteo.dense] == [f"I{i}" for i in range(1, 14)]
    assert [f.name for f in criteo.sparse] == [f"C{i}" for i in range(1, 27)]
    assert all(f.min_count == 2 and f.transform == "none" for f in criteo.sparse)
    assert all(f.transform == "log1p" for f in criteo.dense)
    ml = load_schema(CONFIGS / "movielens.toml")
    assert (ml.user_key, ml.item_key, ml.time_column) == ("user_id", "item_id", "timestamp")
    assert ml.label.kind == "threshold" and ml.label.threshold == 4
    assert ml.feature("genres").kind == "multi_hot"
    assert {f.side for f in ml.features} == {"user", "item"}


@pytest.mark.parametrize("table", ["top", "dataset", "label"])
def test_unknown_keys_are_named(table: str) -> None:
    raw: dict[str, Any] = {"dataset": {"name": "x", "format": "csv"}, "label": {"column": "y"},
                           "features": [{"name": "a", "kind": "dense"}]}
    target = raw if table == "top" else raw[table]
    target["joins"] = [{"path": "movies.csv"}]
    with pytest.raises(SchemaError, match="s.toml.*unknown key\\(s\\) 'joins' \\(known: "):
        parse_schema(raw, "s.toml")
