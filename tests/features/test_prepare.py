from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plexrec.features.cache import PreparedData
from plexrec.features.errors import DataError
from plexrec.features.prepare import prepare
from plexrec.features.readers import read_chunks
from plexrec.features.schema import load_schema, parse_schema
from tests.conftest import CONFIGS, criteo_label_rate
from tests.features.helpers import criteo_line, csv_schema, small_criteo_schema, write_lines


def test_criteo_cache_layout(criteo_cache: PreparedData, criteo_10k: Path) -> None:
    d = criteo_cache
    meta = json.loads((d.path / "meta.json").read_text())
    assert meta["num_rows"] == 10_000 and meta["skipped_rows"] == 0
    assert meta["label_rate"] == pytest.approx(criteo_label_rate(criteo_10k), abs=1e-9)
    assert meta["has_time"] is False and not (d.path / "time.npy").exists()
    assert d.labels.dtype == np.float32 and d.labels.shape == (10_000,)
    assert d.dense.dtype == np.float32 and d.dense.shape == (10_000, 13)
    assert d.dense.min() >= 0
    for name in d.sparse_names:
        offsets = d.offsets(name)
        np.testing.assert_array_equal(offsets, np.arange(10_001))
        values = d.values(name)
        assert values.dtype == np.int64 and values.shape == (10_000,)
        counts = d.counts(name)
        assert len(counts) == d.cardinality(name) and counts.sum() == 10_000
        np.testing.assert_array_equal(counts, np.bincount(values, minlength=len(counts)))


def test_cache_keeps_every_value_in_frequency_order(criteo_cache: PreparedData,
                                                    criteo_10k: Path) -> None:
    raw = pd.concat(read_chunks(load_schema(CONFIGS / "criteo.toml"), criteo_10k, 10_000))
    freq = raw["C3"].value_counts()
    assert (freq < 2).any()
    assert criteo_cache.cardinality("C3") == len(freq) + 1
    vocab = criteo_cache.vocab("C3")
    assert sorted(vocab.values()) == list(range(1, len(freq) + 1))
    by_id = sorted(vocab, key=vocab.get)
    assert by_id == sorted(freq.index, key=lambda v: (-freq[v], v))
    ids = criteo_cache.values("C3")
    missing = raw["C3"].isna().to_numpy()
    assert (ids[missing] == 0).all() and (ids[~missing] > 0).all()
    assert criteo_cache.counts("C3")[0] == missing.sum()
    assert criteo_cache.id_map("C3") is None


def test_chunking_does_not_change_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("plexrec.features.cache_writer.ChunkVocab._MIN_FOLD", 1)
    schema = small_criteo_schema(min_count=2)
    lines = [criteo_line(label=i % 2, cats=[f"{(i * 7 + j) % (j + 3):x}" for j in range(26)])
             for i in range(50)]
    path = write_lines(tmp_path / "t.txt", lines)
    a = PreparedData.open(prepare(schema, path, tmp_path / "a", chunk_rows=7,
                                  progress=False).out_dir)
    b = PreparedData.open(prepare(schema, path, tmp_path / "b", chunk_rows=1000,
                                  progress=False).out_dir)
    for name in a.sparse_names:
        np.testing.assert_array_equal(a.values(name), b.values(name))
        assert a.vocab(name) == b.vocab(name)
    np.testing.assert_array_equal(a.dense, b.dense)
    assert a.labels.tolist() == [i % 2 for i in range(50)]


def test_movielens_cache(movielens_cache: PreparedData, ml_100k: Path) -> None:
    d = movielens_cache
    user, _, _, stamp = (ml_100k / "u.data").open().readline().split()
    age = next(int(line.split("|")[1]) for line in (ml_100k / "u.user").open(encoding="latin-1")
               if line.split("|")[0] == user)
    flags = next(line.rstrip("\n").split("|")[5:] for line in
                 (ml_100k / "u.item").open(encoding="latin-1") if line.split("|")[0] == "1")
    genre_names = [line.split("|")[0] for line in (ml_100k / "u.genre").read_text().split()]
    assert d.num_rows == 100_000
    assert d.meta["label_rate"] == pytest.approx(0.554, abs=0.001)
    assert d.time is not None and d.time.dtype == np.int64 and d.time[0] == int(stamp)
    assert d.cardinality("user_id") == 944 and d.cardinality("item_id") == 1683
    assert d.dense_names == ["age_years"]
    assert d.dense[0, 0] == pytest.approx(np.log1p(age))
    offsets, values = d.offsets("genres"), d.values("genres")
    assert offsets[0] == 0 and offsets[-1] == len(values)
    lengths = np.diff(offsets)
    assert lengths.min() >= 1 and lengths.max() <= 6
    genres = d.vocab("genres")
    names = {i: v for v, i in genres.items()}
    toy = int(np.argmax(d.values("item_id") == d.vocab("item_id")["1"]))
    assert sorted(names[i] for i in values[offsets[toy]:offsets[toy + 1]]) == sorted(
        g for g, f in zip(genre_names, flags, strict=True) if f == "1")
    assert d.counts("genres").sum() == len(values)
    spec = {s["name"]: s for s in d.meta["sparse"]}
    assert spec["genres"]["kind"] == "multi_hot" and spec["genres"]["side"] == "item"


def test_reuse_and_rebuild(tmp_path: Path) -> None:
    schema = small_criteo_schema()
    path = write_lines(tmp_path / "t.txt", [criteo_line(label=1), criteo_line(label=0)])
    out = tmp_path / "cache"
    first = prepare(schema, path, out, progress=False)
    assert not first.reused and first.num_rows == 2
    again = prepare(schema, path, out, progress=False)
    assert again.reused and again.input_hash == first.input_hash
    assert prepare(small_criteo_schema(min_count=2), path, out, progress=False).reused is False
    stat = path.stat()
    path.write_text(path.read_text().replace("1\t", "0\t", 1))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    rebuilt = prepare(small_criteo_schema(min_count=2), path, out, progress=False)
    assert not rebuilt.reused and rebuilt.label_rate == 0.0


def test_refuses_to_replace_non_cache_dir(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.txt", [criteo_line()])
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a prepared cache"):
        prepare(small_criteo_schema(), path, out, progress=False)
    assert (out / "notes.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".precious.building-*"))


def test_skip_bad_rows_recorded(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.txt", [criteo_line(label=1), "bad\tline", criteo_line()])
    with pytest.raises(DataError, match=r"t.txt:2: expected 40 fields"):
        prepare(small_criteo_schema(), path, tmp_path / "c", progress=False)
    result = prepare(small_criteo_schema(), path, tmp_path / "c", on_bad_row="skip",
                     progress=False)
    assert (result.num_rows, result.skipped_rows) == (2, 1)
    assert PreparedData.open(result.out_dir).meta["skipped_rows"] == 1
    with pytest.raises(DataError, match=r"t.txt:2: expected 40 fields"):
        prepare(small_criteo_schema(), path, tmp_path / "c", progress=False)


def test_binary_label_must_be_0_or_1(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.txt", [criteo_line(label=0), criteo_line(label=3)])
    with pytest.raises(DataError, match="binary label must be 0 or 1") as exc:
        prepare(small_criteo_schema(), path, tmp_path / "c", progress=False)
    assert (exc.value.line, exc.value.field) == (2, "label")


def test_csv_hashed_multi_hot_threshold(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.csv", ["user,tags,x,y", "u1,a|b|c,1.5,5", "u2,,,3",
                                            "u1,b,9,4"])
    d = PreparedData.open(prepare(csv_schema(), path, tmp_path / "c", progress=False).out_dir)
    assert d.labels.tolist() == [1, 0, 1]
    np.testing.assert_allclose(d.dense[:, 0], [1.5, 0, 5])
    assert d.vocab("user") == {"u1": 1, "u2": 2}
    assert d.vocab("tags") == {"b": 1, "a": 2}
    assert d.offsets("tags").tolist() == [0, 2, 2, 3]
    assert d.values("tags").tolist() == [2, 1, 1]
    assert d.cardinality("h") == 7 and d.vocab("h") == {}
    assert d.values("h")[0] == d.values("h")[2] and d.counts("h").sum() == 3


def test_empty_input_is_an_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.csv", ["user,tags,x,y"])
    with pytest.raises(DataError, match="no rows read"):
        prepare(csv_schema(), path, tmp_path / "c", progress=False)


def test_schema_missing_column_from_prepare(tmp_path: Path, ml_100k: Path) -> None:
    raw = {"dataset": {"name": "m", "format": "movielens"}, "label": {"column": "stars"},
           "features": [{"name": "user_id", "kind": "categorical", "min_count": 1}]}
    with pytest.raises(Exception, match="'stars'") as exc:
        prepare(parse_schema(raw, "m.toml"), ml_100k, tmp_path / "c", progress=False)
    assert "m.toml" in str(exc.value)


def test_empty_strings_and_all_missing_chunks(tmp_path: Path) -> None:
    users = ["", None, None, "b", "a", "b", "", "a", "b"]
    pd.DataFrame({"user": users, "y": [1, 0, 1, 0, 1, 0, 1, 0, 1]}).to_parquet(
        tmp_path / "d.parquet")
    raw = {"dataset": {"name": "p", "format": "parquet"}, "label": {"column": "y"},
           "features": [{"name": "user", "kind": "categorical", "min_count": 1}]}
    d = PreparedData.open(prepare(parse_schema(raw), tmp_path / "d.parquet", tmp_path / "c",
                                  chunk_rows=3, progress=False).out_dir)
    assert d.vocab("user") == {"b": 1, "a": 2}
    assert d.values("user").tolist() == [0, 0, 0, 1, 2, 1, 0, 2, 1]
    assert d.counts("user").tolist() == [4, 3, 2]
