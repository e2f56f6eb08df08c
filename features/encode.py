"""Value -> id encoding, shared by data preparation and by the serving tier (which encodes raw
request features with the same functions and the vocabularies stored in the prepared cache), so
an id means the same thing in training and in serving."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from plexrec.features.errors import SchemaError
from plexrec.features.hashing import hash_strings
from plexrec.features.schema import Feature
from plexrec.features.strings import as_strings

OOV_ID = 0


def vocabulary_order(values: np.ndarray, freq: np.ndarray, min_count: int) -> np.ndarray:
    """Indices of the kept values in id order (descending count, then value)."""
    keep = np.flatnonzero(freq >= min_count)
    if len(keep) == 0:
        return keep
    kept_values = values[keep].astype(str)
    order = np.lexsort((kept_values, -freq[keep]))
    return keep[order]


def _check_sparse(feature: Feature) -> None:
    if not feature.is_sparse:
        raise SchemaError(f"feature {feature.name!r} is dense, not categorical/multi_hot")


def encode_strings(feature: Feature, values: pd.Series, vocab: Mapping[str, int] | None
                   ) -> np.ndarray:
    """Ids of non-null string values (hash or vocabulary look-up; unknown -> 0)."""
    if feature.hash_size is not None:
        return hash_strings(values.tolist()) % feature.hash_size
    if vocab is None:
        raise SchemaError(f"feature {feature.name!r} uses a vocabulary but none was given")
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    ids = np.fromiter((vocab.get(u, OOV_ID) for u in uniques), dtype=np.int64,
                      count=len(uniques))
    out = np.zeros(len(codes), dtype=np.int64)
    present = codes >= 0
    out[present] = ids[codes[present]]
    return out


def encode_categorical(feature: Feature, values: Any, vocab: Mapping[str, int] | None = None
                       ) -> np.ndarray:
    """One id per value (int64); missing or unseen values -> 0."""
    _check_sparse(feature)
    s = as_strings(values)
    present = s.notna().to_numpy()
    out = np.zeros(len(s), dtype=np.int64)
    if present.any():
        out[present] = encode_strings(feature, s[present], vocab)
    return out


def split_multi_hot(feature: Feature, values: Any) -> tuple[pd.Series, np.ndarray]:
    """Tokens (flat, row-major) and per-row lengths after splitting on the separator, dropping
    empty tokens and truncating each row to max_length."""
    s = as_strings(values)
    if len(s) == 0:
        return pd.Series([], dtype=object), np.zeros(0, dtype=np.int32)
    tokens = s.str.split(feature.separator, regex=False).explode()
    row = tokens.index.to_numpy()
    tok = tokens.reset_index(drop=True)
    present = (tok.notna() & (tok != "")).to_numpy()
    row, tok = row[present], tok[present]
    pos = pd.Series(row).groupby(row).cumcount().to_numpy()
    keep = pos < feature.max_length
    row, tok = row[keep], tok[keep]
    lengths = np.bincount(row, minlength=len(s)).astype(np.int32)
    return tok.reset_index(drop=True), lengths


def encode_multi_hot(feature: Feature, values: Any, vocab: Mapping[str, int] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64 flat, lengths int32 per row). An unseen token keeps its slot as id 0; a missing
    or empty value has length 0."""
    _check_sparse(feature)
    tokens, lengths = split_multi_hot(feature, values)
    if len(tokens) == 0:
        return np.zeros(0, dtype=np.int64), lengths
    return encode_strings(feature, tokens, vocab), lengths


def transform_dense(feature: Feature, values: Any) -> np.ndarray:
    """float32: missing -> fill, then log1p(max(x, 0)) or clamp to [min, max]."""
    if feature.kind != "dense":
        raise SchemaError(f"feature {feature.name!r} is {feature.kind}, not dense")
    x = pd.to_numeric(pd.Series(values).reset_index(drop=True), errors="coerce")
    arr = x.to_numpy(dtype=np.float64, na_value=np.nan)
    arr = np.where(np.isnan(arr), feature.fill, arr)
    if feature.transform == "log1p":
        arr = np.log1p(np.maximum(arr, 0.0))
    elif feature.transform == "clamp":
        lo = -np.inf if feature.clamp_min is None else feature.clamp_min
        hi = np.inf if feature.clamp_max is None else feature.clamp_max
        arr = np.clip(arr, lo, hi)
    return arr.astype(np.float32)
