"""The readers registry is the one list of input formats: the schema accepts exactly its names,
each resolves to a reader, and each has tests of its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from plexrec.features.errors import SchemaError
from plexrec.features.reader_registry import READERS, Reader, reader_for
from plexrec.features.schema import parse_schema

TESTS = Path(__file__).parent


@pytest.mark.parametrize("fmt", list(READERS))
def test_every_format_resolves_and_is_accepted_by_the_schema(fmt: str) -> None:
    assert isinstance(reader_for(fmt), Reader)
    raw = {"dataset": {"name": "x", "format": fmt}, "label": {"column": "y"},
           "features": [{"name": "a", "kind": "dense"}]}
    assert parse_schema(raw).format == fmt


def test_unknown_format_names_the_known_ones() -> None:
    raw = {"dataset": {"name": "x", "format": "avro"}, "label": {"column": "y"},
           "features": [{"name": "a", "kind": "dense"}]}
    with pytest.raises(SchemaError, match="format"):
        parse_schema(raw, "s.toml")
    with pytest.raises(SchemaError, match="known: criteo, movielens"):
        reader_for("avro", "s.toml")


@pytest.mark.parametrize("fmt", list(READERS))
def test_every_registered_format_has_a_test(fmt: str) -> None:
    """A format registered without a test of its own fails here: some test function in
    tests/features names it (e.g. test_<fmt>_... or test_..._<fmt>_...)."""
    names = [node.name for path in TESTS.glob("test_*.py") if path.name != Path(__file__).name
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]
    assert any(fmt in name.split("_") for name in names), f"no test names format {fmt!r}"
