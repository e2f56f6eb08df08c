"""Train/val/test splits and the batch loader: prepared cache -> torchrec `Batch` with a KJT.

Each batch is a handful of vectorised numpy gathers (no Python loop over rows or ids). Every rank
gets the same number of batches, so the collectives of DDP/DMP never wait on a rank that ran dry."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchrec.datasets.utils import Batch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from plexrec.features.cache import PreparedData
from plexrec.features.errors import ConfigError, DataError


@dataclass(frozen=True)
class Splits:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_rows(data: PreparedData, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
               by_time: bool = False) -> Splits:
    """Row indices (sorted, int64) of each split. A split the input fixed (test or validation
    files, a split column) is taken as given; the training input is divided among the other
    splits by their `fractions`, renormalised (with a fixed test set, [0.8, 0.1, 0.1] puts 8/9
    of the training input in train and 1/9 in validation). Random by `seed`, or by time: the
    oldest rows train and the newest test, the honest split for recommendation."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(
            sum(fractions), 1.0, abs_tol=1e-6):
        raise ConfigError(f"split fractions must be 3 non-negative numbers summing to 1, "
                          f"got {tuple(fractions)}")
    codes = data.split_codes
    fixed = set(data.fixed_splits) if codes is not None else set()
    pool = (np.arange(data.num_rows, dtype=np.int64) if codes is None
            else np.flatnonzero(np.asarray(codes) == 0).astype(np.int64))
    free = [f if name == "train" or name not in fixed else 0.0
            for name, f in zip(("train", "val", "test"), fractions, strict=True)]
    if sum(free) <= 0:
        raise ConfigError(f"split fractions {tuple(fractions)} give the training input no rows "
                          f"(fixed splits: {', '.join(sorted(fixed))})")
    if by_time:
        if data.time is None:
            raise DataError("split by time needs a time column, and this cache has none "
                            "(set [dataset] time_column in the schema)", path=str(data.path))
        order = pool[np.argsort(np.asarray(data.time)[pool], kind="stable")]
    else:
        order = pool[np.random.default_rng(seed).permutation(len(pool))]
    n, total = len(pool), sum(free)
    a = int(round(free[0] / total * n))
    b = min(max(a, int(round((free[0] + free[1]) / total * n))), n)
    parts = [order[:a], order[a:b], order[b:]]
    for code, name in ((1, "val"), (2, "test")):
        if name in fixed:
            assert codes is not None
            parts[code] = np.flatnonzero(np.asarray(codes) == code)
    return Splits(*(np.sort(p).astype(np.int64) for p in parts))


class _SparseColumn:
    """One feature's arrays as plain ndarray views of the memory maps."""

    def __init__(self, data: PreparedData, name: str) -> None:
        self.name = name
        self.values = np.asarray(data.values(name))
        self.id_map = data.id_map(name)
        self.categorical = data.kind(name) == "categorical"
        self.offsets = None if self.categorical else np.asarray(data.offsets(name))

    def _ids(self, pos: np.ndarray) -> np.ndarray:
        ids = self.values[pos]
        return ids if self.id_map is None else self.id_map[ids]

    def gather(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.offsets is None:
            return self._ids(idx), np.ones(len(idx), dtype=np.int32)
        starts = self.offsets[idx]
        lengths = self.offsets[idx + 1] - starts
        total = int(lengths.sum())
        if total == 0:
            return np.zeros(0, dtype=np.int64), lengths.astype(np.int32)
        ends = np.cumsum(lengths)
        pos = np.arange(total, dtype=np.int64) + np.repeat(starts - (ends - lengths), lengths)
        return self._ids(pos), lengths.astype(np.int32)


class BatchLoader:
    """Iterable of `Batch(dense [B, n_dense] float32, KJT, labels [B] float32)` over `rows`.

    The epoch's order is a permutation seeded by seed + epoch (when shuffling); rank r of
    world_size takes an equal contiguous share of it (the last n % world_size rows of the order
    are left out of that epoch). `skip(n)` makes the next iteration start at batch n, for exact
    resume."""

    def __init__(self, data: PreparedData, rows: np.ndarray | None, batch_size: int, *,
                 shuffle: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False, features: Sequence[str] | None = None) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in [0, world_size={world_size})")
        self.data = data
        self.rows = (np.arange(data.num_rows, dtype=np.int64) if rows is None
                     else np.asarray(rows, dtype=np.int64))
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= data.num_rows):
            raise DataError(f"row index out of range [0, {data.num_rows})", path=str(data.path))
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.keys = list(features) if features is not None else data.sparse_names
        self._columns = [_SparseColumn(data, k) for k in self.keys]
        self._dense = np.asarray(data.dense)
        self._labels = np.asarray(data.labels)
        self.epoch = 0
        self._skip = 0

    @property
    def rows_per_rank(self) -> int:
        return len(self.rows) // self.world_size

    def __len__(self) -> int:
        share = self.rows_per_rank
        return share // self.batch_size if self.drop_last else math.ceil(share / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, n_batches: int) -> None:
        """The next iteration starts at batch `n_batches` of the current epoch."""
        if n_batches < 0:
            raise ConfigError(f"cannot skip {n_batches} batches")
        self._skip = n_batches

    def _order(self) -> np.ndarray:
        rows = self.rows
        if self.shuffle:
            rows = rows[np.random.default_rng(self.seed + self.epoch).permutation(len(rows))]
        share = self.rows_per_rank
        return rows[self.rank * share:(self.rank + 1) * share]

    def batch(self, idx: np.ndarray) -> Batch:
        """The Batch of the given row indices (sorted first: same set, better memory locality)."""
        idx = np.sort(idx)
        parts = [c.gather(idx) for c in self._columns]
        values = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        lengths = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int32)
        kjt = KeyedJaggedTensor(keys=self.keys, values=torch.from_numpy(values),
                                lengths=torch.from_numpy(lengths), stride=len(idx),
                                length_per_key=[len(p[0]) for p in parts])
        return Batch(dense_features=torch.from_numpy(self._dense[idx]),
                     sparse_features=kjt,
                     labels=torch.from_numpy(self._labels[idx]))

    def __iter__(self) -> Iterator[Batch]:
        order = self._order()
        start, self._skip = self._skip, 0
        for b in range(start, len(self)):
            yield self.batch(order[b * self.batch_size:(b + 1) * self.batch_size])
