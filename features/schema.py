"""The schema contract: what a dataset's columns are, how each becomes a feature, and which side
(user, item, context) it belongs to. A new dataset is a new TOML file, never new code."""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from plexrec.features.derive import Derive, parse_derive
from plexrec.features.errors import SchemaError
from plexrec.features.joins import Join, parse_join
from plexrec.features.reader_registry import READERS

FEATURE_KINDS = ("dense", "categorical", "multi_hot")
SIDES = ("user", "item", "context")
DENSE_TRANSFORMS = ("none", "log1p", "clamp")
FORMATS = tuple(READERS)
LABEL_KINDS = ("binary", "threshold")
# Which files of an input start with a header row: "every_file", only the "first_file" of a
# directory (read in name order), or "none". TOML `true` means every_file, `false` none.
HEADER_POLICIES = ("every_file", "first_file", "none")


@dataclass(frozen=True)
class Feature:
    """One model input. Categorical and multi-hot values become integer ids: with a vocabulary,
    id 0 is the shared out-of-vocabulary/missing row and ids 1..V follow descending frequency;
    with hashing, id = stable_hash(value) mod hash_size."""

    name: str
    kind: str
    side: str = "context"
    column: str = ""
    fill: float = 0.0
    transform: str = "none"
    clamp_min: float | None = None
    clamp_max: float | None = None
    min_count: int | None = None
    hash_size: int | None = None
    separator: str = "|"
    max_length: int = 1
    derive: Derive | None = None

    @property
    def source_columns(self) -> tuple[str, ...]:
        """The raw columns this feature is computed from."""
        if self.derive is not None and self.derive.kind == "cross":
            return self.derive.columns
        return (self.column,)

    @property
    def is_sparse(self) -> bool:
        return self.kind != "dense"

    @property
    def uses_vocabulary(self) -> bool:
        return self.is_sparse and self.hash_size is None


@dataclass(frozen=True)
class Label:
    """How the 0/1 target is derived: the column as is (binary) or `column >= threshold`."""

    column: str
    kind: str = "binary"
    threshold: float = 0.5


@dataclass(frozen=True)
class Schema:
    name: str
    format: str
    label: Label
    features: tuple[Feature, ...]
    columns: tuple[str, ...] = ()
    delimiter: str = ","
    header: str = "every_file"
    time_column: str | None = None
    user_key: str | None = None
    item_key: str | None = None
    split_column: str | None = None
    joins: tuple[Join, ...] = ()
    source: str = field(default="<memory>", compare=False)

    @property
    def dense(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.kind == "dense")

    @property
    def sparse(self) -> tuple[Feature, ...]:
        """Categorical and multi-hot features, in schema order: the KJT key order."""
        return tuple(f for f in self.features if f.is_sparse)

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise SchemaError(f"{self.source}: no feature named {name!r}")

    def side(self, side: str) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.side == side)

    @property
    def joined_columns(self) -> set[str]:
        """Columns that side tables add (so the input itself need not have them); a join that
        names no columns adds every column of its table, known only when it is read."""
        return {c for j in self.joins for c in j.columns}

    def input_columns(self) -> list[str]:
        """The columns the input files themselves must have: what the schema reads, less what
        joins add, plus the join keys."""
        joined = self.joined_columns
        own = [c for c in self.required_columns() if c not in joined]
        return list(dict.fromkeys(own + [j.on for j in self.joins]))

    def required_columns(self) -> list[str]:
        cols = [self.label.column] + [c for f in self.features for c in f.source_columns]
        if self.time_column:
            cols.append(self.time_column)
        if self.split_column:
            cols.append(self.split_column)
        return list(dict.fromkeys(cols))

    def fingerprint(self) -> str:
        """Content hash of everything that changes prepared data (not the file's path)."""
        payload = asdict(self)
        payload.pop("source")
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _expect(table: dict[str, Any], key: str, types: type | tuple[type, ...], where: str,
            default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise SchemaError(f"{where}: missing required field {key!r}")
        return default
    value = table[key]
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise SchemaError(f"{where}: field {key!r} must be {types}, got {value!r}")
    if not isinstance(value, types):
        raise SchemaError(f"{where}: field {key!r} must be {types}, got {value!r}")
    return value


def _one_of(value: str, allowed: tuple[str, ...], where: str, key: str) -> str:
    if value not in allowed:
        raise SchemaError(f"{where}: {key} {value!r} is not one of {', '.join(allowed)}")
    return value


_TOP_KEYS = ("dataset", "label", "features")
_DATASET_KEYS = ("name", "format", "columns", "delimiter", "header", "time_column", "user_key",
                 "item_key", "split_column", "join")
_LABEL_KEYS = ("column", "kind", "threshold")


def _header_policy(value: bool | str, where: str) -> str:
    if isinstance(value, bool):
        return "every_file" if value else "none"
    return _one_of(value, HEADER_POLICIES, where, "header")


def has_header(schema: Schema, file_index: int) -> bool:
    """Whether the `file_index`-th file (0-based, name order) of the input starts with a header."""
    return schema.header == "every_file" or (schema.header == "first_file" and file_index == 0)


def _known_keys(table: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    """Unknown keys are errors: a misspelt or unsupported key must not pass silently."""
    unknown = [key for key in table if key not in known]
    if unknown:
        raise SchemaError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} "
                          f"(known: {', '.join(known)})")


def _parse_feature(raw: dict[str, Any], where: str) -> Feature:
    name = _expect(raw, "name", str, where)
    where = f"{where} ({name})"
    kind = _one_of(_expect(raw, "kind", str, where), FEATURE_KINDS, where, "kind")
    side = _one_of(_expect(raw, "side", str, where, "context"), SIDES, where, "side")
    column = _expect(raw, "column", str, where, name)
    known = {"name", "kind", "side", "column", "fill", "transform", "min", "max", "min_count",
             "hash_size", "separator", "max_length", "derive"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SchemaError(f"{where}: unknown field(s) {', '.join(unknown)}")
    if kind == "dense":
        transform = _one_of(_expect(raw, "transform", str, where, "none"), DENSE_TRANSFORMS,
                            where, "transform")
        clamp_min = _expect(raw, "min", (int, float), where, None)
        clamp_max = _expect(raw, "max", (int, float), where, None)
        if transform == "clamp" and clamp_min is None and clamp_max is None:
            raise SchemaError(f"{where}: transform 'clamp' needs 'min' and/or 'max'")
        return Feature(name=name, kind=kind, side=side, column=column,
                       fill=float(_expect(raw, "fill", (int, float), where, 0.0)),
                       transform=transform,
                       clamp_min=None if clamp_min is None else float(clamp_min),
                       clamp_max=None if clamp_max is None else float(clamp_max))
    derive = parse_derive(raw["derive"], where) if "derive" in raw else None
    if derive is not None and kind != "categorical":
        raise SchemaError(f"{where}: derive makes one value per row, so the feature's kind must "
                          f"be 'categorical', not {kind!r}")
    min_count = _expect(raw, "min_count", int, where, None)
    hash_size = _expect(raw, "hash_size", int, where, None)
    if (min_count is None) == (hash_size is None):
        raise SchemaError(f"{where}: give exactly one of 'min_count' (vocabulary) or 'hash_size'")
    if min_count is not None and min_count < 1:
        raise SchemaError(f"{where}: min_count must be >= 1, got {min_count}")
    if hash_size is not None and hash_size < 1:
        raise SchemaError(f"{where}: hash_size must be >= 1, got {hash_size}")
    max_length = _expect(raw, "max_length", int, where, 1 if kind == "categorical" else 16)
    if max_length < 1:
        raise SchemaError(f"{where}: max_length must be >= 1, got {max_length}")
    if kind == "categorical" and max_length != 1:
        raise SchemaError(f"{where}: a categorical feature has max_length 1; use kind 'multi_hot'")
    return Feature(name=name, kind=kind, side=side, column=column, min_count=min_count,
                   hash_size=hash_size, separator=_expect(raw, "separator", str, where, "|"),
                   max_length=max_length, derive=derive)


def parse_schema(raw: dict[str, Any], source: str = "<memory>") -> Schema:
    """Validates a schema table (as read from TOML); every error names the file and the field."""
    _known_keys(raw, _TOP_KEYS, source)
    dataset = _expect(raw, "dataset", dict, source)
    where = f"{source} [dataset]"
    _known_keys(dataset, _DATASET_KEYS, where)
    fmt = _one_of(_expect(dataset, "format", str, where), FORMATS, where, "format")
    label_raw = _expect(raw, "label", dict, source)
    lwhere = f"{source} [label]"
    _known_keys(label_raw, _LABEL_KEYS, lwhere)
    label = Label(column=_expect(label_raw, "column", str, lwhere),
                  kind=_one_of(_expect(label_raw, "kind", str, lwhere, "binary"), LABEL_KINDS,
                               lwhere, "kind"),
                  threshold=float(_expect(label_raw, "threshold", (int, float), lwhere, 0.5)))
    raw_features = _expect(raw, "features", list, source)
    if not raw_features:
        raise SchemaError(f"{source}: [[features]] is empty")
    features = tuple(_parse_feature(f, f"{source} [[features]] #{i + 1}")
                     for i, f in enumerate(raw_features))
    names = [f.name for f in features]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SchemaError(f"{source}: duplicate feature name(s) {', '.join(dupes)}")
    columns = tuple(_expect(dataset, "columns", list, where, []))
    schema = Schema(
        name=_expect(dataset, "name", str, where),
        format=fmt,
        label=label,
        features=features,
        columns=columns,
        delimiter=_expect(dataset, "delimiter", str, where, "\t" if fmt == "criteo" else ","),
        header=_header_policy(_expect(dataset, "header", (bool, str), where, fmt == "csv"),
                              where),
        time_column=_expect(dataset, "time_column", str, where, None),
        user_key=_expect(dataset, "user_key", str, where, None),
        item_key=_expect(dataset, "item_key", str, where, None),
        split_column=_expect(dataset, "split_column", str, where, None),
        joins=tuple(parse_join(j, f"{where} [[dataset.join]] #{i + 1}")
                    for i, j in enumerate(_expect(dataset, "join", list, where, []))),
        source=source,
    )
    for key in ("user_key", "item_key"):
        value = getattr(schema, key)
        if value is not None and value not in names:
            raise SchemaError(f"{where}: {key} {value!r} is not a feature name")
    if schema.joins and fmt not in ("csv", "parquet"):
        raise SchemaError(f"{where}: join works on csv and parquet inputs, not {fmt!r}")
    unlisted = [j.path for j in schema.joins if not j.columns]
    if unlisted:
        raise SchemaError(f"{where} [[dataset.join]] {unlisted[0]}: list the columns it adds "
                          "(columns = [...]), so the input's own columns are known before "
                          "reading")
    if columns:
        missing = [c for c in schema.input_columns() if c not in columns]
        if missing:
            raise SchemaError(f"{where}: columns does not list {', '.join(missing)} "
                              "(named by the label or a feature)")
    return schema


def load_schema(path: str | Path) -> Schema:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SchemaError(f"schema file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SchemaError(f"{path}: invalid TOML: {exc}") from None
    return parse_schema(raw, source=str(path))
