from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchrec.datasets.utils import Batch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from plexrec.features.batching import BatchLoader, split_rows
from plexrec.features.cache import PreparedData
from plexrec.features.errors import ConfigError, DataError


def test_random_split(criteo_cache: PreparedData) -> None:
    s = split_rows(criteo_cache, (0.8, 0.1, 0.1), seed=3)
    assert (len(s.train), len(s.val), len(s.test)) == (8000, 1000, 1000)
    every = np.concatenate([s.train, s.val, s.test])
    np.testing.assert_array_equal(np.sort(every), np.arange(10_000))
    assert (np.diff(s.train) > 0).all()
    assert np.array_equal(split_rows(criteo_cache, seed=3).test, s.test)
    assert not np.array_equal(split_rows(criteo_cache, seed=4).test, s.test)
    with pytest.raises(ConfigError, match="summing to 1"):
        split_rows(criteo_cache, (0.5, 0.1, 0.1))
    with pytest.raises(DataError, match="time column"):
        split_rows(criteo_cache, by_time=True)


def test_time_split_puts_newest_in_test(movielens_cache: PreparedData) -> None:
    s = split_rows(movielens_cache, by_time=True)
    t = np.asarray(movielens_cache.time)
    assert t[s.train].max() <= t[s.val].min() and t[s.val].max() <= t[s.test].min()
    assert len(s.train) + len(s.val) + len(s.test) == 100_000


def _expected(d: PreparedData, name: str, rows: np.ndarray) -> tuple[list[int], list[int]]:
    off, vals = d.offsets(name), d.values(name)
    lengths = [int(off[r + 1] - off[r]) for r in rows]
    values = [int(v) for r in rows for v in vals[off[r]:off[r + 1]]]
    return values, lengths


def test_batch_matches_cache(movielens_cache: PreparedData) -> None:
    d = movielens_cache
    rows = np.array([5, 17, 99_999, 42, 0])
    loader = BatchLoader(d, rows, batch_size=10)
    (batch,) = list(loader)
    assert isinstance(batch, Batch) and isinstance(batch.sparse_features, KeyedJaggedTensor)
    kjt = batch.sparse_features
    assert kjt.keys() == d.sparse_names and kjt.stride() == 5
    assert kjt.lengths().dtype == torch.int32 and kjt.values().dtype == torch.int64
    order = np.sort(rows)
    for name in d.sparse_names:
        values, lengths = _expected(d, name, order)
        assert kjt[name].values().tolist() == values
        assert kjt[name].lengths().tolist() == lengths
    assert kjt["genres"].lengths().tolist() != [1] * 5
    assert batch.labels.tolist() == d.labels[order].tolist()
    assert torch.equal(batch.dense_features, torch.from_numpy(d.dense[order]))
    assert int(kjt.offsets()[-1]) == kjt.values().numel()


def test_feature_subset(movielens_cache: PreparedData) -> None:
    loader = BatchLoader(movielens_cache, None, batch_size=64, features=["item_id", "genres"])
    batch = next(iter(loader))
    assert batch.sparse_features.keys() == ["item_id", "genres"]
    assert len(loader) == 1563


def test_epochs_shuffle_and_cover_all_rows(criteo_cache: PreparedData) -> None:
    rows = np.arange(0, 1000)
    loader = BatchLoader(criteo_cache, rows, 128, shuffle=True, seed=1)
    labels_e0 = torch.cat([b.labels for b in loader])
    again = torch.cat([b.labels for b in loader])
    assert torch.equal(labels_e0, again)
    loader.set_epoch(1)
    first_e1 = next(iter(loader)).sparse_features["C3"].values()
    loader.set_epoch(0)
    first_e0 = next(iter(loader)).sparse_features["C3"].values()
    assert not torch.equal(first_e0, first_e1)
    assert len(loader) == 8 and labels_e0.numel() == 1000
    assert labels_e0.sum().item() == criteo_cache.labels[:1000].sum()


def test_ranks_get_equal_disjoint_shares(criteo_cache: PreparedData) -> None:
    rows = np.arange(1003)
    seen = []
    counts = []
    for rank in range(3):
        loader = BatchLoader(criteo_cache, rows, 100, shuffle=True, seed=7, rank=rank,
                             world_size=3)
        order = loader._order()
        seen.append(set(order.tolist()))
        counts.append(sum(1 for _ in loader))
        assert len(loader) == counts[-1]
    assert counts == [4, 4, 4]
    assert seen[0].isdisjoint(seen[1]) and seen[1].isdisjoint(seen[2])
    assert sum(len(s) for s in seen) == 1002
    drop = BatchLoader(criteo_cache, rows, 100, rank=1, world_size=3, drop_last=True)
    assert len(drop) == 3 and all(len(b.labels) == 100 for b in drop)
    with pytest.raises(ConfigError, match="rank 3"):
        BatchLoader(criteo_cache, rows, 100, rank=3, world_size=3)


def test_skip_resumes_exactly(criteo_cache: PreparedData) -> None:
    loader = BatchLoader(criteo_cache, None, 1000, shuffle=True, seed=5)
    loader.set_epoch(2)
    full = [b.labels for b in loader]
    loader.skip(7)
    rest = [b.labels for b in loader]
    assert len(rest) == 3 and all(torch.equal(a, b) for a, b in zip(full[7:], rest, strict=True))
    assert len(list(loader)) == 10


def test_empty_multi_hot_rows(tmp_path: Path) -> None:
    from plexrec.features.prepare import prepare
    from tests.features.helpers import csv_schema, write_lines

    path = write_lines(tmp_path / "d.csv", ["user,tags,x,y", "u1,,1,5", "u2,,2,3"])
    d = PreparedData.open(prepare(csv_schema(), path, tmp_path / "c", progress=False).out_dir)
    batch = next(iter(BatchLoader(d, None, 8)))
    assert batch.sparse_features["tags"].lengths().tolist() == [0, 0]
    assert batch.sparse_features["user"].values().tolist() == [1, 2]
