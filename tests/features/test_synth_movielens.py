"""The MovieLens-100K look-alike: the real folder's files and formats, a learnable taste signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plexrec.features.errors import ConfigError
from plexrec.features.readers import read_chunks
from plexrec.features.schema import load_schema
from plexrec.features.synth_movielens import FILES, write_movielens
from tests.conftest import CONFIGS


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ml") / "ml-small"
    write_movielens(out, seed=3, users=60, items=200, ratings=3000, progress=False)
    return out


def test_same_arguments_same_bytes(tmp_path: Path, small: Path) -> None:
    write_movielens(tmp_path / "again", seed=3, users=60, items=200, ratings=3000, progress=False)
    write_movielens(tmp_path / "other", seed=4, users=60, items=200, ratings=3000, progress=False)
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (small / name).read_bytes()
    assert (tmp_path / "other" / "u.data").read_bytes() != (small / "u.data").read_bytes()


def test_reads_as_movielens_with_the_real_shape(small: Path) -> None:
    df = pd.concat(read_chunks(load_schema(CONFIGS / "movielens.toml"), small, 1000))
    assert len(df) == 3000
    per_user = df.groupby("user_id").size()
    assert len(per_user) == 60 and per_user.min() >= 20 and df["item_id"].nunique() == 200
    assert not df.duplicated(["user_id", "item_id"]).any()
    assert (df["rating"] >= 4).mean() == pytest.approx(0.554, abs=0.002)
    assert set(df["rating"].unique()) == {1, 2, 3, 4, 5}
    assert (df["genres"].str.len() > 0).all()


def test_tastes_beat_popularity_as_on_the_real_data(tmp_path: Path) -> None:
    """Each user's 5 latest positives held out: a rank-32 SVD of the rest finds about twice the
    recall@10 of popularity, as on the real ml-100k (0.21 vs 0.10), so retrieval has a signal."""
    write_movielens(tmp_path / "ml", progress=False)
    d = np.loadtxt(tmp_path / "ml" / "u.data", dtype=np.int64)
    d = d[np.lexsort((d[:, 3], d[:, 0]))]
    seen = np.zeros((d[:, 0].max() + 1, d[:, 1].max() + 1))
    held: dict[int, np.ndarray] = {}
    train = np.ones(len(d), dtype=bool)
    for u in np.unique(d[:, 0]):
        positives = np.flatnonzero((d[:, 0] == u) & (d[:, 2] >= 4))
        if len(positives) > 5:
            train[positives[-5:]] = False
            held[int(u)] = d[positives[-5:], 1]
    seen[d[train, 0], d[train, 1]] = 1
    u_, s_, vt = np.linalg.svd(seen, full_matrices=False)
    scores = {"svd": (u_[:, :32] * s_[:32]) @ vt[:32], "popularity": np.tile(seen.sum(0),
                                                                              (len(seen), 1))}
    recall = {}
    for name, score in scores.items():
        score = np.where(seen > 0, -np.inf, score)
        score[:, 0] = -np.inf
        top = np.argpartition(-score, 10, axis=1)[:, :10]
        recall[name] = np.mean([np.isin(items, top[u]).mean() for u, items in held.items()])
    assert 0.05 < recall["popularity"] < 0.14
    assert recall["svd"] > 1.8 * recall["popularity"]


def test_bad_sizes_name_the_argument(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ratings = 10"):
        write_movielens(tmp_path / "x", users=5, items=100, ratings=10, progress=False)
    with pytest.raises(ConfigError, match="items=3"):
        write_movielens(tmp_path / "x", users=5, items=3, ratings=100, progress=False)
