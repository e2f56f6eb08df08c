from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from plexrec.features.encode import (
    as_strings,
    encode_categorical,
    encode_multi_hot,
    transform_dense,
    vocabulary_order,
)
from plexrec.features.errors import SchemaError
from plexrec.features.hashing import hash_strings
from plexrec.features.schema import Feature

CAT = Feature(name="c", kind="categorical", min_count=1)
HASHED = Feature(name="h", kind="categorical", hash_size=11)
MULTI = Feature(name="m", kind="multi_hot", min_count=1, max_length=2)


def test_vocabulary_orders_by_count_then_value_and_drops_rare() -> None:
    values = np.array(["b", "a", "z", "rare"], dtype=object)
    order = vocabulary_order(values, np.array([3, 3, 5, 1]), min_count=2)
    assert values[order].tolist() == ["z", "a", "b"]
    assert len(vocabulary_order(np.array(["x"], dtype=object), np.array([1]), 2)) == 0


def test_encode_categorical_vocab_oov_and_missing() -> None:
    vocab = {"a": 1, "b": 2}
    ids = encode_categorical(CAT, ["b", None, "unseen", "a", "", np.nan], vocab)
    assert ids.dtype == np.int64
    assert ids.tolist() == [2, 0, 0, 1, 0, 0]


def test_encode_categorical_hashed_matches_hash_strings() -> None:
    ids = encode_categorical(HASHED, ["x", None, "y"])
    expected = hash_strings(["x", "y"]) % 11
    assert ids.tolist() == [expected[0], 0, expected[1]]
    with pytest.raises(SchemaError, match="vocabulary"):
        encode_categorical(CAT, ["x"], None)


def test_numbers_encode_like_their_text() -> None:
    vocab = {"12": 1, "3.5": 2}
    assert as_strings(pd.Series([12.0, np.nan, 3.5])).tolist() == ["12", None, "3.5"]
    assert encode_categorical(CAT, pd.Series([12.0, 3.5, 7.0]), vocab).tolist() == [1, 2, 0]
    assert encode_categorical(CAT, pd.Series([12, 3]), vocab).tolist() == [1, 0]


def test_multi_hot_split_truncate_and_empty() -> None:
    vocab = {"a": 1, "b": 2, "c": 3}
    values, lengths = encode_multi_hot(MULTI, ["a|b|c", None, "c", "", "zz|a"], vocab)
    assert lengths.dtype == np.int32
    assert lengths.tolist() == [2, 0, 1, 0, 2]
    assert values.tolist() == [1, 2, 3, 0, 1]
    empty_v, empty_l = encode_multi_hot(MULTI, [None, None], vocab)
    assert len(empty_v) == 0 and empty_l.tolist() == [0, 0]


def test_transform_dense() -> None:
    log = Feature(name="d", kind="dense", transform="log1p", fill=0.0)
    out = transform_dense(log, [np.nan, -5, 0, np.e - 1])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0, 0, 0, 1], atol=1e-6)
    clamp = Feature(name="d", kind="dense", transform="clamp", clamp_min=-1, clamp_max=2, fill=7)
    np.testing.assert_allclose(transform_dense(clamp, [-3, 1.5, None, 9]), [-1, 1.5, 2, 2])
    with pytest.raises(SchemaError, match="not dense"):
        transform_dense(CAT, [1])
