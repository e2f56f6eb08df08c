"""The prepared cache as one run sees it: vocabularies, `min_count` and frequency counts from the
run's training rows only.

The cache keeps every value with an id in full-data frequency order and decides nothing about
what is in vocabulary, so one cache serves any split. A run wraps it in a `TrainingView` over its
training rows: each vocabulary feature's kept values (training count >= min_count) get new ids
1..V in descending training count (ties by value), everything else maps to the OOV row 0 through
a look-up table applied where ids are read (the batch loader, the entity keys). Sizes,
mixed-dimension counts and exported vocabularies all come from the view, so a value that occurs
only in validation or test rows never gets an embedding row. The view is a pure function of the
cache and the training rows: trainer ranks and `plexrec export` rebuild the same one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from plexrec.features.cache import PreparedData
from plexrec.features.errors import DataError
from plexrec.features.schema import Schema


@dataclass(frozen=True)
class FeatureStats:
    """One feature's training-only statistics: `id_map` (cache id -> run id, None when they are
    the same), the run's cardinality, counts per run id, and the kept values in run-id order."""

    id_map: np.ndarray | None
    cardinality: int
    counts: np.ndarray
    values: pa.Array | None


def row_tokens(data: PreparedData, name: str, rows: np.ndarray | None) -> np.ndarray:
    """Cache ids of every value slot of `rows` (all rows when None), row-major."""
    values = np.asarray(data.values(name))
    if rows is None:
        return values
    if data.kind(name) == "categorical":
        return values[rows]
    offsets = np.asarray(data.offsets(name))
    mask = np.zeros(data.num_rows, dtype=bool)
    mask[rows] = True
    return values[np.repeat(mask, np.diff(offsets))]


def key_ids(data: Any, name: str) -> np.ndarray:
    """The run id of a categorical feature per row (one value per row)."""
    values = np.asarray(data.values(name))
    if len(values) != data.num_rows:
        raise DataError(f"{name} has {len(values)} values for {data.num_rows} rows",
                        path=str(data.path))
    id_map = data.id_map(name)
    return values if id_map is None else id_map[values]


def _vocab_values(data: PreparedData, name: str) -> pa.Array:
    """The cache's values by cache id (index 0, the OOV row, holds an empty string)."""
    import pyarrow.parquet as pq

    table = pq.read_table(data.path / "vocab" / f"{name}.parquet")
    ids = table.column("id").to_numpy()
    if not np.array_equal(ids, np.arange(1, data.cardinality(name))):
        raise DataError(f"vocabulary of {name!r} does not list ids 1..{data.cardinality(name) - 1}"
                        " in order; prepare the cache again", path=str(data.path))
    return pa.concat_arrays([pa.array([""], type=pa.string()),
                             table.column("value").combine_chunks().cast(pa.string())])


def training_stats(data: PreparedData, name: str, rows: np.ndarray | None,
                   min_count: int | None) -> FeatureStats:
    """Statistics of one feature over `rows`. With `min_count` None (hashed features, catalogue
    keys) the ids stay and are only counted; otherwise values are re-ranked by their count over
    `rows` and those below `min_count` join the OOV row."""
    full = data.cardinality(name)
    tokens = row_tokens(data, name, rows)
    counts = np.bincount(tokens, minlength=full).astype(np.int64)
    if min_count is None:
        return FeatureStats(None, full, counts, None)
    counts[0] = 0
    keep = np.flatnonzero(counts >= min_count)
    values = _vocab_values(data, name)
    table = pa.table({"neg": pa.array(-counts[keep], type=pa.int64()),
                      "value": values.take(pa.array(keep, type=pa.int64()))})
    order = pc.sort_indices(table, sort_keys=[("neg", "ascending"), ("value", "ascending")])
    kept = keep[order.to_numpy(zero_copy_only=False)]
    id_map = np.zeros(full, dtype=np.int64)
    id_map[kept] = np.arange(1, len(kept) + 1, dtype=np.int64)
    run_counts = np.zeros(len(kept) + 1, dtype=np.int64)
    run_counts[1:] = counts[kept]
    run_counts[0] = len(tokens) - run_counts[1:].sum()
    return FeatureStats(id_map, len(kept) + 1, run_counts,
                        values.take(pa.array(kept, type=pa.int64())))


class TrainingView:
    """A `PreparedData` whose sparse statistics come from `train_rows` only. `catalogue` names
    features that keep every cache id (the entity keys of retrieval: an id is an identity, not a
    statistic, and the snapshot lists every user and item). Everything not overridden here is
    the cache's own (labels, dense, time, offsets, schema...)."""

    def __init__(self, data: PreparedData, train_rows: np.ndarray,
                 catalogue: Iterable[str] = ()) -> None:
        self.base = data
        self.train_rows = np.asarray(train_rows, dtype=np.int64)
        self.catalogue = frozenset(catalogue)
        self._stats: dict[str, FeatureStats] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)

    @property
    def path(self) -> Path:
        return self.base.path

    @property
    def num_rows(self) -> int:
        return self.base.num_rows

    @cached_property
    def schema(self) -> Schema:
        return self.base.schema

    def stats(self, name: str) -> FeatureStats:
        if name not in self._stats:
            min_count = (None if name in self.catalogue
                         else self.schema.feature(name).min_count)
            self._stats[name] = training_stats(self.base, name, self.train_rows, min_count)
        return self._stats[name]

    def id_map(self, name: str) -> np.ndarray | None:
        return self.stats(name).id_map

    def cardinality(self, name: str) -> int:
        return self.stats(name).cardinality

    def counts(self, name: str) -> np.ndarray:
        return self.stats(name).counts

    def vocab(self, name: str) -> dict[str, int]:
        """value -> run id of the kept values (the catalogue's full vocabulary for its keys)."""
        values = self.stats(name).values
        if values is None:
            return self.base.vocab(name)
        return dict(zip(values.to_pylist(), range(1, len(values) + 1), strict=True))

    def write_vocabularies(self, out: Path, names: Iterable[str] | None = None) -> list[Path]:
        """One `<name>.parquet` (value, id) per vocabulary feature, in the run's ids: what a
        consumer of the trained model needs to encode raw values."""
        import pyarrow.parquet as pq

        out.mkdir(parents=True, exist_ok=True)
        files = []
        for name in self.base.sparse_names if names is None else names:
            if not self.schema.feature(name).uses_vocabulary:
                continue
            vocab = self.vocab(name)
            files.append(out / f"{name}.parquet")
            pq.write_table(pa.table({"value": pa.array(list(vocab), type=pa.string()),
                                     "id": pa.array(list(vocab.values()), type=pa.int64())}),
                           files[-1])
        return files

    def unseen(self, rows: np.ndarray, names: Iterable[str] | None = None) -> dict[str, int]:
        """Per vocabulary feature (of `names`, default all): value slots of `rows` that hold a
        value but map to the OOV row (unseen in training, or below min_count there)."""
        out = {}
        for name in self.base.sparse_names if names is None else names:
            id_map = self.id_map(name)
            if id_map is None:
                continue
            tokens = row_tokens(self.base, name, np.asarray(rows, dtype=np.int64))
            out[name] = int(((tokens != 0) & (id_map[tokens] == 0)).sum())
        return out

    def __repr__(self) -> str:
        return f"TrainingView({self.base!r}, train_rows={len(self.train_rows)})"
