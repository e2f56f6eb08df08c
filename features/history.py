"""A user's interaction history as one more user-side feature: the items of the user's earlier
interactions, a mean-pooled bag, as in YouTube's candidate generator (Covington et al., RecSys
2016).

The history is not a column of the input: it depends on the other rows of the same user and on
which of those rows a model may know. `HistoryView` wraps a run's view of the cache and adds the
feature `name` (multi-valued, ids of the item key, newest first, at most `max_length`):

- per row (training): the items of the user's *known* rows strictly earlier in time than the
  row (a row never sees itself, nor rows of the same second);
- for evaluation and export (`end_rows`): the user's known rows earlier than a bound row (the
  user's first held-out target: "strictly before the target's time"), or every known row
  (export: the state a server has when it asks for the user's vector). Other rows get an empty
  history.

Known rows are those a run may read (its training rows; for the test, training plus validation
rows; for export, every row), filtered by the positives policy: `positives = "threshold"` keeps
the labelled positives. The ids are the item key's, so the serving contract's vocabulary for the
feature is the item vocabulary and a request lists raw item ids, newest first."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from plexrec.features.errors import ConfigError
from plexrec.features.schema import Feature, Schema
from plexrec.features.training_view import key_ids


@dataclass(frozen=True)
class HistorySpec:
    """What the history feature is: its name, the keys it follows, how many items it keeps and
    which rows count as interactions ("all", or "threshold": labelled positives only)."""

    name: str
    user_key: str
    item_key: str
    max_length: int
    positives: str = "all"

    def feature(self) -> Feature:
        return Feature(name=self.name, kind="multi_hot", side="user", min_count=1,
                       max_length=self.max_length, separator="|")


def _time_rank(data: Any) -> np.ndarray:
    """Each row's dense rank in time (row order without a time column): equal times, equal
    ranks, so "strictly earlier" excludes rows of the same second."""
    time_ = data.time
    if time_ is None:
        return np.arange(data.num_rows, dtype=np.int64)
    return np.unique(np.asarray(time_), return_inverse=True)[1].astype(np.int64)


def build_histories(users: np.ndarray, items: np.ndarray, rank: np.ndarray,
                    known: np.ndarray, fill: np.ndarray, before: np.ndarray | None,
                    max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets over all rows): for each row fill[i], the items of the same user's
    `known` rows of rank below before[i] (its own rank when `before` is None; no bound where
    before[i] < 0), newest first, at most `max_length`; every other row is empty. Vectorised:
    one sort and two binary searches."""
    n = len(users)
    known = np.asarray(known, dtype=np.int64)
    fill = np.asarray(fill, dtype=np.int64)
    span = int(rank.max()) + 2 if n else 1
    bound = rank[fill] if before is None else np.asarray(before, dtype=np.int64)
    bound = np.where(bound < 0, span - 1, bound)
    fill, first_of = np.unique(fill, return_index=True)
    bound = bound[first_of]
    order = known[np.lexsort((known, rank[known], users[known]))]
    codes = users[order] * span + rank[order]
    start = np.searchsorted(codes, users[fill] * span, side="left")
    stop = np.searchsorted(codes, users[fill] * span + bound, side="left")
    first = np.maximum(start, stop - max_length)
    lengths = np.zeros(n, dtype=np.int64)
    lengths[fill] = stop - first
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    per = lengths[fill]
    total = int(per.sum())
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(per) - per, per)
    positions = np.repeat(stop - 1, per) - within
    return items[order][positions].astype(np.int64), offsets


class HistoryView:
    """A run's data view plus the history feature (see the module docstring). Everything else
    is the wrapped view's own. `at(known_rows, end_rows)` is the same feature over other known
    rows, at the end for `end_rows`."""

    def __init__(self, base: Any, spec: HistorySpec, known_rows: np.ndarray,
                 end_rows: np.ndarray | None = None, bound_rows: np.ndarray | None = None
                 ) -> None:
        if spec.name in base.sparse_names:
            raise ConfigError(f"history feature {spec.name!r}: the schema already has a feature "
                              "of that name")
        if spec.max_length < 1:
            raise ConfigError(f"history max_length = {spec.max_length} must be >= 1")
        self.base = base
        self.spec = spec
        self.known_rows = np.asarray(known_rows, dtype=np.int64)
        self.end_rows = None if end_rows is None else np.asarray(end_rows, dtype=np.int64)
        self.bound_rows = (None if bound_rows is None or end_rows is None
                           else np.asarray(bound_rows, dtype=np.int64))
        if self.bound_rows is not None and self.end_rows is not None and \
                len(self.bound_rows) != len(self.end_rows):
            raise ValueError("one bound row per end row")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)

    def at(self, known_rows: np.ndarray, end_rows: np.ndarray | None = None,
           bound_rows: np.ndarray | None = None) -> HistoryView:
        return HistoryView(self.base, self.spec, known_rows, end_rows, bound_rows)

    @property
    def path(self) -> Path:
        return Path(self.base.path)

    @property
    def num_rows(self) -> int:
        return int(self.base.num_rows)

    @cached_property
    def sparse_names(self) -> list[str]:
        return [*self.base.sparse_names, self.spec.name]

    @cached_property
    def schema(self) -> Schema:
        base: Schema = self.base.schema
        return replace(base, features=(*base.features, self.spec.feature()))

    @cached_property
    def meta(self) -> dict[str, Any]:
        meta = dict(self.base.meta)
        meta["sparse"] = [*meta.get("sparse", []), {"name": self.spec.name, "pooling": "mean"}]
        return meta

    @cached_property
    def _history(self) -> tuple[np.ndarray, np.ndarray]:
        spec, data = self.spec, self.base
        users, items = key_ids(data, spec.user_key), key_ids(data, spec.item_key)
        known = self.known_rows
        if spec.positives == "threshold":
            known = known[np.asarray(data.labels)[known] > 0.5]
        rank = _time_rank(data)
        if self.end_rows is None:
            fill, before = np.arange(self.num_rows, dtype=np.int64), None
        else:
            fill = self.end_rows
            before = (np.full(len(fill), -1, dtype=np.int64) if self.bound_rows is None
                      else np.where(self.bound_rows >= 0, rank[self.bound_rows], -1))
        return build_histories(users, items, rank, known, fill, before, spec.max_length)

    def _own(self, name: str) -> bool:
        return name == self.spec.name

    def kind(self, name: str) -> str:
        return "multi_hot" if self._own(name) else str(self.base.kind(name))

    def values(self, name: str) -> Any:
        return self._history[0] if self._own(name) else self.base.values(name)

    def offsets(self, name: str) -> Any:
        return self._history[1] if self._own(name) else self.base.offsets(name)

    def id_map(self, name: str) -> np.ndarray | None:
        return None if self._own(name) else self.base.id_map(name)

    def cardinality(self, name: str) -> int:
        return int(self.base.cardinality(self.spec.item_key if self._own(name) else name))

    def counts(self, name: str) -> np.ndarray:
        if not self._own(name):
            return np.asarray(self.base.counts(name))
        return np.bincount(self._history[0], minlength=self.cardinality(name)).astype(np.int64)

    def vocab(self, name: str) -> dict[str, int]:
        return dict(self.base.vocab(self.spec.item_key if self._own(name) else name))

    def __repr__(self) -> str:
        return (f"HistoryView({self.base!r}, {self.spec.name}, known={len(self.known_rows)}, "
                f"end_rows={None if self.end_rows is None else len(self.end_rows)})")


def known_at(data: Any, known_rows: np.ndarray, end_rows: np.ndarray,
             bound_rows: np.ndarray | None = None) -> Any:
    """`data` with the history (if it has one) over `known_rows` for `end_rows`: the view whose
    user vectors an evaluation or an export takes. Each end row's history holds the known rows
    earlier than its bound row (bound_rows[i], -1 or None: every known row). Data without a
    history is returned as is."""
    if not isinstance(data, HistoryView):
        return data
    return data.at(known_rows, end_rows, bound_rows)
