"""Derived categorical values from raw columns, declared in the schema instead of written as a
pandas script: timestamp parts, substrings, bucketized numbers and hashed crosses.

A derived feature reads its source column(s) and yields one string per row (None = missing),
which then goes through the feature's vocabulary or hash like any raw value. Data preparation
and the serving tier call the same `derive_values`, so a derived id means the same in both."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from plexrec.features.errors import SchemaError
from plexrec.features.hashing import hash_strings
from plexrec.features.strings import as_strings

DERIVE_KINDS = ("hour", "weekday", "slice", "log_square", "buckets", "cross")
TIME_FORMATS = ("unix", "yymmddhh")
_KEYS = {"hour": {"from"}, "weekday": {"from"}, "slice": {"start", "stop"},
         "log_square": set(), "buckets": {"boundaries"}, "cross": {"columns"}}


@dataclass(frozen=True)
class Derive:
    """`kind`: hour / weekday of a timestamp (`time_format` unix seconds or a YYMMDDHH string);
    slice [start:stop] of the string; log_square (bucket "L<floor(ln(x)^2)>" for x > 2, else
    floor(x): the Criteo winners' count buckets, kept apart from the small values); buckets (index among sorted `boundaries`); cross (a stable hash of
    the values of `columns`, for a hashed feature)."""

    kind: str
    time_format: str = "unix"
    start: int = 0
    stop: int | None = None
    boundaries: tuple[float, ...] = ()
    columns: tuple[str, ...] = ()

    def to_toml(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind in ("hour", "weekday"):
            out["from"] = self.time_format
        elif self.kind == "slice":
            out.update(start=self.start, stop=self.stop)
        elif self.kind == "buckets":
            out["boundaries"] = list(self.boundaries)
        elif self.kind == "cross":
            out["columns"] = list(self.columns)
        return out


def derived_column(feature: Any) -> str:
    """The frame column that holds a derived feature's values during preparation."""
    return f"__derived__{feature.name}"


def parse_derive(raw: Any, where: str) -> Derive:
    """The `derive = { kind = ..., ... }` table of a feature; unknown keys are errors."""
    if not isinstance(raw, Mapping):
        raise SchemaError(f"{where}: derive must be a table, e.g. derive = {{ kind = \"hour\" }}")
    kind = raw.get("kind")
    if kind not in DERIVE_KINDS:
        raise SchemaError(f"{where}: derive kind {kind!r} is not one of {', '.join(DERIVE_KINDS)}")
    unknown = sorted(set(raw) - {"kind"} - _KEYS[kind])
    if unknown:
        raise SchemaError(f"{where}: derive {kind}: unknown key(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(_KEYS[kind])) or 'none'})")
    if kind in ("hour", "weekday"):
        fmt = raw.get("from", "unix")
        if fmt not in TIME_FORMATS:
            raise SchemaError(f"{where}: derive {kind}: from {fmt!r} is not one of "
                              f"{', '.join(TIME_FORMATS)}")
        return Derive(kind, time_format=fmt)
    if kind == "slice":
        start, stop = raw.get("start", 0), raw.get("stop")
        if not isinstance(start, int) or isinstance(start, bool) or not (
                stop is None or isinstance(stop, int) and not isinstance(stop, bool)):
            raise SchemaError(f"{where}: derive slice: start and stop must be integers")
        return Derive(kind, start=start, stop=stop)
    if kind == "buckets":
        bounds = raw.get("boundaries")
        if (not isinstance(bounds, list) or not bounds
                or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
                or any(b >= c for b, c in zip(bounds, bounds[1:], strict=False))):
            raise SchemaError(f"{where}: derive buckets: boundaries must be a non-empty, "
                              f"strictly increasing list of numbers, got {bounds!r}")
        return Derive(kind, boundaries=tuple(float(b) for b in bounds))
    if kind == "cross":
        columns = raw.get("columns")
        if (not isinstance(columns, list) or len(columns) < 2
                or not all(isinstance(c, str) and c for c in columns)):
            raise SchemaError(f"{where}: derive cross: columns must list at least two column "
                              f"names, got {columns!r}")
        return Derive(kind, columns=tuple(columns))
    return Derive(kind)


def _numbers(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """float64 values (NaN when missing) and a mask of present values that are not numbers."""
    s = values.reset_index(drop=True)
    x = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
    present = s.notna().to_numpy() & (s.astype(str).str.strip() != "").to_numpy()
    return x, present & ~np.isfinite(x)


def _from_ints(x: np.ndarray, valid: np.ndarray) -> pd.Series:
    out = np.full(len(x), None, dtype=object)
    out[valid] = x[valid].astype(np.int64).astype(str)
    return pd.Series(out, dtype=object)


def _time_parts(d: Derive, values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    if d.time_format == "unix":
        secs, bad = _numbers(values)
        ok = np.isfinite(secs)
        secs = np.where(ok, np.floor(secs), 0)
        part = (secs // 3600) % 24 if d.kind == "hour" else (secs // 86400 + 3) % 7
        return _from_ints(part, ok), bad
    s = as_strings(values)
    text = s.astype("string").str.strip()
    present = text.notna().to_numpy()
    stamp = pd.to_datetime(text.str.slice(0, 8), format="%y%m%d%H", errors="coerce")
    ok = stamp.notna().to_numpy() & (text.str.len() == 8).fillna(False).to_numpy()
    part = (stamp.dt.hour if d.kind == "hour" else stamp.dt.weekday).to_numpy(
        dtype=np.float64, na_value=0)
    return _from_ints(part, ok), present & ~ok


def derive_values(d: Derive, columns: Mapping[str, pd.Series], source: str
                  ) -> tuple[pd.Series, np.ndarray]:
    """(derived strings, None where missing; mask of rows whose source value cannot be derived
    from, e.g. a timestamp in the wrong format). `source` is the feature's column."""
    if d.kind == "cross":
        parts = [as_strings(columns[c]) for c in d.columns]
        missing = np.logical_or.reduce([p.isna().to_numpy() for p in parts])
        joined = parts[0].fillna("").astype(str)
        for p in parts[1:]:
            joined = joined + "\x1f" + p.fillna("").astype(str)
        out = np.full(len(joined), None, dtype=object)
        keep = ~missing
        if keep.any():
            out[keep] = hash_strings(joined[keep].tolist()).astype(str)
        return pd.Series(out, dtype=object), np.zeros(len(joined), dtype=bool)
    values = columns[source]
    if d.kind in ("hour", "weekday"):
        return _time_parts(d, values)
    if d.kind == "slice":
        s = as_strings(values).str.slice(d.start, d.stop)
        return s.where(s.notna() & (s != ""), None).astype(object), np.zeros(len(s), dtype=bool)
    x, bad = _numbers(values)
    ok = np.isfinite(x)
    if d.kind == "log_square":
        large = ok & (x > 2)
        small = _from_ints(np.where(ok, np.floor(np.where(ok, x, 0)), 0), ok & ~large)
        logs = _from_ints(np.floor(np.log(np.where(large, x, 3.0)) ** 2), large)
        return small.where(~large, "L" + logs.astype(str)), bad
    index = np.searchsorted(np.asarray(d.boundaries), np.where(ok, x, 0), side="right")
    return _from_ints(index.astype(np.float64), ok), bad
