from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from plexrec.features.cache import PreparedData
from plexrec.features.errors import DataError
from plexrec.features.schema import load_schema
from tests.conftest import CONFIGS


def test_open_rejects_non_cache(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="directory not found"):
        PreparedData.open(tmp_path / "nope")
    with pytest.raises(DataError, match="not a prepared cache") as exc:
        PreparedData.open(tmp_path)
    assert exc.value.path == str(tmp_path)
    (tmp_path / "meta.json").write_text('{"format_version": 99}')
    with pytest.raises(DataError, match="format_version 99"):
        PreparedData.open(tmp_path)


def test_memory_mapped_api(criteo_cache: PreparedData) -> None:
    d = PreparedData.open(criteo_cache.path)
    assert isinstance(d.labels, np.memmap) and isinstance(d.values("C1"), np.memmap)
    assert d.num_rows == 10_000 and d.time is None
    assert d.dense_names == [f"I{i}" for i in range(1, 14)]
    assert d.sparse_names == [f"C{i}" for i in range(1, 27)]
    assert d.kind("C1") == "categorical"
    vocab = d.vocab("C9")
    assert len(vocab) == d.cardinality("C9") - 1 and 0 not in vocab.values()
    with pytest.raises(DataError, match="no sparse feature 'C99'"):
        d.values("C99")


def test_schema_copy_round_trips(criteo_cache: PreparedData,
                                 movielens_cache: PreparedData) -> None:
    for cache, name in ((criteo_cache, "criteo"), (movielens_cache, "movielens")):
        original = load_schema(CONFIGS / f"{name}.toml")
        assert cache.schema == original
        assert cache.schema.fingerprint() == cache.meta["schema_fingerprint"]
        assert cache.schema.source == str(cache.path / "schema.toml")


def test_missing_file_is_named(criteo_cache: PreparedData, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(criteo_cache.path, copy)
    (copy / "sparse" / "C2.values.npy").unlink()
    with pytest.raises(DataError, match="C2.values.npy"):
        PreparedData.open(copy).values("C2")
