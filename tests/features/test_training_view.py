from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from plexrec.features.batching import BatchLoader
from plexrec.features.cache import PreparedData
from plexrec.features.prepare import prepare
from plexrec.features.readers import read_chunks
from plexrec.features.schema import load_schema
from plexrec.features.training_view import TrainingView
from plexrec.models.layouts import LayoutConfig, build_layout, specs_from_prepared
from tests.conftest import CONFIGS
from tests.features.helpers import criteo_line, csv_schema, small_criteo_schema, write_lines


def _cache(tmp_path: Path, cats: list[list[str]], min_count: int = 1) -> PreparedData:
    lines = [criteo_line(label=i % 2, cats=c + ["x"] * (26 - len(c))) for i, c in enumerate(cats)]
    path = write_lines(tmp_path / "t.txt", lines)
    return PreparedData.open(prepare(small_criteo_schema(min_count=min_count), path,
                                     tmp_path / "cache", progress=False).out_dir)


def test_value_only_in_test_rows_maps_to_oov_and_sizes_the_table(tmp_path: Path) -> None:
    # rows 0-5 train, 6-7 test; "t" occurs only in test rows, "b" twice in test and once in train
    c1 = ["a", "a", "b", "a", "c", "c", "t", "t"]
    cache = _cache(tmp_path, [[v, "k", "k"] for v in c1] + [["b", "k", "k"], ["b", "k", "k"]])
    train = np.arange(6)
    view = TrainingView(cache, train)
    vocab = view.vocab("C1")
    assert vocab == {"a": 1, "c": 2, "b": 3}
    assert view.cardinality("C1") == 4 and cache.cardinality("C1") == 5
    np.testing.assert_array_equal(view.counts("C1"), [0, 3, 2, 1])
    ids = BatchLoader(view, None, 10).batch(np.arange(10)).sparse_features["C1"].values()
    assert ids.tolist() == [1, 1, 3, 1, 2, 2, 0, 0, 3, 3]
    assert view.unseen(np.array([6, 7, 8])) == {"C1": 2, "C2": 0, "C3": 0}
    layout = build_layout(specs_from_prepared(view, ["C1"]),
                          LayoutConfig.from_dict({"kind": "per_feature", "dim": 4}))
    assert [t.num_embeddings for t in layout.table_configs()] == [4]


def test_min_count_counts_training_rows_only(tmp_path: Path) -> None:
    # "b" reaches min_count 2 only through the test rows 4 and 5
    cache = _cache(tmp_path, [[v, "k", "k"] for v in ["a", "a", "b", "z", "b", "b"]],
                   min_count=2)
    view = TrainingView(cache, np.arange(4))
    assert view.vocab("C1") == {"a": 1}
    assert view.counts("C1").tolist() == [2, 2]
    everything = TrainingView(cache, np.arange(6))
    assert everything.vocab("C1") == {"b": 1, "a": 2}


def test_full_training_view_equals_prepare_with_min_count(criteo_cache: PreparedData,
                                                          criteo_10k: Path) -> None:
    raw = pd.concat(read_chunks(load_schema(CONFIGS / "criteo.toml"), criteo_10k, 10_000))
    freq = raw["C3"].value_counts()
    kept = freq[freq >= 2]
    view = TrainingView(criteo_cache, np.arange(criteo_cache.num_rows))
    assert view.cardinality("C3") == len(kept) + 1
    vocab = view.vocab("C3")
    assert sorted(vocab, key=vocab.get) == sorted(kept.index, key=lambda v: (-kept[v], v))
    ids = BatchLoader(view, None, 10_000).batch(np.arange(10_000)).sparse_features["C3"]
    rare = raw["C3"].map(freq).fillna(0).to_numpy() < 2
    assert (ids.values().numpy()[rare] == 0).all() and (ids.values().numpy()[~rare] > 0).all()
    assert view.counts("C3")[0] == rare.sum() and view.counts("C3").sum() == 10_000


def test_multi_hot_hashed_and_catalogue_features(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("user,tags,x,y\nu1,a|b,1,5\nu2,b|c,2,3\nu3,c|zz,3,4\n")
    cache = PreparedData.open(prepare(csv_schema(), path, tmp_path / "c", progress=False).out_dir)
    view = TrainingView(cache, np.array([0, 1]), catalogue=["user"])
    assert view.vocab("tags") == {"b": 1, "a": 2, "c": 3}
    assert view.unseen(np.array([2])) == {"tags": 1}
    batch = BatchLoader(view, None, 3).batch(np.arange(3)).sparse_features
    assert batch["tags"].values().tolist() == [2, 1, 1, 3, 3, 0]
    assert view.id_map("user") is None and view.cardinality("user") == 4
    assert view.counts("user").tolist() == [0, 1, 1, 0]
    assert view.id_map("h") is None and view.cardinality("h") == 7
    assert view.counts("h").sum() == 2
