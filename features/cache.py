"""Read side of the prepared cache: everything memory-mapped, so opening a 10M-row cache is
instant and costs no memory until rows are touched."""

from __future__ import annotations

import json
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from plexrec.features.errors import DataError
from plexrec.features.schema import Schema, parse_schema

FORMAT_VERSION = 2


class PreparedData:
    """A prepared cache directory (see docs/DESIGN.md). Construct with `PreparedData.open(dir)`."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self._sparse = {s["name"]: s for s in meta["sparse"]}
        self._vocab: dict[str, dict[str, int]] = {}
        self._arrays: dict[str, np.ndarray] = {}

    @classmethod
    def open(cls, path: str | Path) -> PreparedData:
        path = Path(path)
        if not path.is_dir():
            raise DataError("prepared cache directory not found", path=str(path))
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise DataError("not a prepared cache (no meta.json); run `plexrec data prepare`",
                            path=str(path))
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"unreadable meta.json: {exc}", path=str(meta_path)) from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise DataError(f"cache format_version {meta.get('format_version')!r}, this code "
                            f"reads {FORMAT_VERSION}; prepare it again", path=str(meta_path))
        return cls(path, meta)

    def _load(self, rel: str) -> np.ndarray:
        if rel not in self._arrays:
            self._arrays[rel] = self._open_array(rel)
        return self._arrays[rel]

    def _open_array(self, rel: str) -> np.ndarray:
        file = self.path / rel
        if not file.is_file():
            raise DataError("prepared cache is missing a file", path=str(file))
        return np.load(file, mmap_mode="r")

    def _spec(self, name: str) -> dict[str, Any]:
        try:
            return self._sparse[name]
        except KeyError:
            raise DataError(f"no sparse feature {name!r} in cache (has: "
                            f"{', '.join(self._sparse)})", path=str(self.path)) from None

    @property
    def num_rows(self) -> int:
        return int(self.meta["num_rows"])

    @cached_property
    def labels(self) -> np.ndarray:
        return self._load("labels.npy")

    @cached_property
    def dense(self) -> np.ndarray:
        return self._load("dense.npy")

    @cached_property
    def time(self) -> np.ndarray | None:
        return self._load("time.npy") if self.meta.get("has_time") else None

    @cached_property
    def split_codes(self) -> np.ndarray | None:
        """int8 per row, 0 train input, 1 validation, 2 test (features.prepare.SPLITS), when the
        cache was built with fixed splits; None otherwise."""
        return self._load("split.npy") if (self.path / "split.npy").is_file() else None

    @property
    def fixed_splits(self) -> list[str]:
        """The splits the input fixed ("val", "test"); the others come from [data] split."""
        return list(self.meta.get("fixed_splits", []))

    @property
    def dense_names(self) -> list[str]:
        return list(self.meta["dense"])

    @property
    def sparse_names(self) -> list[str]:
        return [s["name"] for s in self.meta["sparse"]]

    def kind(self, name: str) -> str:
        return str(self._spec(name)["kind"])

    def cardinality(self, name: str) -> int:
        return int(self._spec(name)["cardinality"])

    def counts(self, name: str) -> np.ndarray:
        self._spec(name)
        return self._load(f"stats/{name}.counts.npy")

    def values(self, name: str) -> np.ndarray:
        self._spec(name)
        return self._load(f"sparse/{name}.values.npy")

    def offsets(self, name: str) -> np.ndarray:
        self._spec(name)
        return self._load(f"sparse/{name}.offsets.npy")

    def id_map(self, name: str) -> np.ndarray | None:
        """Cache id -> model id; None: the cache's ids are used as they are (see
        features/training_view.py for a run's training-only remap)."""
        self._spec(name)
        return None

    def vocab(self, name: str) -> dict[str, int]:
        """value -> id (id 0, the OOV/missing row, has no entry). Empty for hashed features."""
        if name not in self._vocab:
            self._spec(name)
            file = self.path / "vocab" / f"{name}.parquet"
            if not file.is_file():
                self._vocab[name] = {}
            else:
                import pyarrow.parquet as pq

                table = pq.read_table(file)
                self._vocab[name] = dict(zip(table.column("value").to_pylist(),
                                             table.column("id").to_pylist(), strict=True))
        return self._vocab[name]

    @cached_property
    def schema(self) -> Schema:
        file = self.path / "schema.toml"
        try:
            raw = tomllib.loads(file.read_text())
        except FileNotFoundError:
            raise DataError("prepared cache has no schema.toml", path=str(file)) from None
        return parse_schema(raw, source=str(file))

    def __repr__(self) -> str:
        return (f"PreparedData({str(self.path)!r}, rows={self.num_rows}, "
                f"dense={len(self.dense_names)}, sparse={len(self.sparse_names)})")
