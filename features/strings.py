"""Raw values as strings, the one form every categorical value takes before it becomes an id
(vocabulary look-up, hashing, derivation, join keys). No dependency on the schema, so every
module of the data path can use it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def as_strings(values: Any) -> pd.Series:
    """Raw values as strings (object Series), missing as None. Integral floats become '12', not
    '12.0', so a numeric column read as float encodes like the same column read as text."""
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    s = s.reset_index(drop=True)
    if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
        out = s.astype(object)
        empty = out.isna() | (out == "")
        return out.where(~empty, None)
    if pd.api.types.is_float_dtype(s.dtype):
        arr = s.to_numpy(dtype=np.float64)
        missing = np.isnan(arr)
        integral = ~missing & (arr == np.round(arr))
        out = np.empty(len(arr), dtype=object)
        out[integral] = arr[integral].astype(np.int64).astype(str)
        other = ~missing & ~integral
        out[other] = arr[other].astype(str)
        out[missing] = None
        return pd.Series(out, dtype=object)
    return s.astype(str).astype(object)
