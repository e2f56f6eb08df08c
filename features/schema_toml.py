"""Schema -> TOML text, so a prepared cache carries the exact schema it was built with (even one
built from a dict in memory), and `parse_schema` of that text has the same fingerprint."""

from __future__ import annotations

import json
from typing import Any

from plexrec.features.schema import Feature, Schema


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items() if x is not None) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")


def _table(pairs: dict[str, Any]) -> list[str]:
    return [f"{k} = {_value(v)}" for k, v in pairs.items() if v is not None]


def _feature(f: Feature) -> dict[str, Any]:
    out: dict[str, Any] = {"name": f.name, "kind": f.kind, "side": f.side, "column": f.column}
    if f.kind == "dense":
        out.update(fill=f.fill, transform=f.transform, min=f.clamp_min, max=f.clamp_max)
    else:
        out.update(min_count=f.min_count, hash_size=f.hash_size, separator=f.separator,
                   max_length=f.max_length, derive=f.derive.to_toml() if f.derive else None)
    return out


def schema_to_toml(schema: Schema) -> str:
    dataset = {"name": schema.name, "format": schema.format, "columns": list(schema.columns),
               "delimiter": schema.delimiter, "header": schema.header,
               "time_column": schema.time_column, "user_key": schema.user_key,
               "item_key": schema.item_key, "split_column": schema.split_column}
    label = {"column": schema.label.column, "kind": schema.label.kind,
             "threshold": schema.label.threshold}
    lines = [f"# written from {schema.source}", "[dataset]", *_table(dataset)]
    for j in schema.joins:
        lines += ["", "[[dataset.join]]", *_table(j.to_toml())]
    lines += ["", "[label]", *_table(label)]
    for f in schema.features:
        lines += ["", "[[features]]", *_table(_feature(f))]
    return "\n".join(lines) + "\n"
