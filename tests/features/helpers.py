"""Small synthetic inputs written into tmp_path by the feature tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plexrec.features.schema import Schema, parse_schema


def criteo_line(label: int = 0, dense: list[str] | None = None,
                cats: list[str] | None = None) -> str:
    dense = dense if dense is not None else [str(i) for i in range(13)]
    cats = cats if cats is not None else [f"{i:08x}" for i in range(26)]
    return "\t".join([str(label), *dense, *cats])


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def small_criteo_schema(min_count: int = 1, dense: int = 2, cats: int = 3) -> Schema:
    feats: list[dict[str, Any]] = [
        {"name": f"I{i}", "kind": "dense", "transform": "log1p"} for i in range(1, dense + 1)]
    feats += [{"name": f"C{i}", "kind": "categorical", "min_count": min_count}
              for i in range(1, cats + 1)]
    return parse_schema({"dataset": {"name": "small", "format": "criteo"},
                         "label": {"column": "label"}, "features": feats}, "small.toml")


def csv_schema(**dataset: Any) -> Schema:
    raw = {"dataset": {"name": "t", "format": "csv", **dataset},
           "label": {"column": "y", "kind": "threshold", "threshold": 4},
           "features": [{"name": "user", "kind": "categorical", "side": "user", "min_count": 1},
                        {"name": "tags", "kind": "multi_hot", "side": "item", "min_count": 1,
                         "max_length": 2},
                        {"name": "x", "kind": "dense", "transform": "clamp", "min": 0, "max": 5},
                        {"name": "h", "column": "user", "kind": "categorical",
                         "hash_size": 7}]}
    return parse_schema(raw, "t.toml")
