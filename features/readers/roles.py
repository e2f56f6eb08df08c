"""Which raw columns a schema reads, and as what: numbers (label, dense, time) or strings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from plexrec.features.errors import SchemaError
from plexrec.features.schema import Schema


@dataclass(frozen=True)
class ColumnRoles:
    numeric: tuple[str, ...]
    strings: tuple[str, ...]
    required: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.numeric + self.strings))


def column_roles(schema: Schema, joined: bool = False) -> ColumnRoles:
    """A missing label or time makes a row bad; a missing dense value takes the feature's fill.
    By default the roles of the input's own columns (joined ones come from side tables, join
    keys are strings); with `joined`, of every column the schema reads."""
    numeric = [schema.label.column] + [f.column for f in schema.dense]
    if schema.time_column:
        numeric.append(schema.time_column)
    numeric = list(dict.fromkeys(numeric))
    strings = [c for c in dict.fromkeys(
        [c for f in schema.sparse for c in f.source_columns]
        + ([schema.split_column] if schema.split_column else []))
        if c not in numeric]
    required = [schema.label.column] + ([schema.time_column] if schema.time_column else [])
    if not joined and schema.joins:
        side = schema.joined_columns
        numeric = [c for c in numeric if c not in side]
        strings = [c for c in dict.fromkeys(strings + [j.on for j in schema.joins])
                   if c not in side and c not in numeric]
        required = [c for c in required if c not in side]
    return ColumnRoles(tuple(numeric), tuple(strings), tuple(required))


def require_columns(schema: Schema, available: Sequence[str], path: Path) -> None:
    """A schema naming a column the input lacks fails before any row is read."""
    missing = [c for c in schema.input_columns() if c not in available]
    if missing:
        raise SchemaError(f"{schema.source}: column {missing[0]!r} is not in input {path} "
                          f"(it has: {', '.join(available)})")
