"""Two-tower retrieval on a prepared cache: builds the model, trains it on positive interactions
with in-batch negatives, and evaluates Recall@K / NDCG@K on a leave-last-out split.

`training/tasks/retrieval.py` plugs the model into the trainer (the one training loop, used by
`plexrec train`, the tests and the benchmarks). Evaluation and export need the vectors of given
rows (each user's and each item's feature row), hence `entity_rows` and `tower_vectors`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator

from plexrec.features.config import Section, parse_section
from plexrec.features.errors import ConfigError, DataError
from plexrec.features.history import HistorySpec, HistoryView, known_at
from plexrec.features.training_view import key_ids
from plexrec.models.layouts import Budget, LayoutConfig, build_layout, specs_from_prepared
from plexrec.models.two_tower import (
    Tower,
    TwoTower,
    log_q_from_counts,
    prefix_vectors,
    width_problem,
)
from plexrec.training.retrieval_metrics import (
    DEFAULT_KS,
    LeaveLastOut,
    evaluate_topk,
    leave_last_out,
    seen_before_test,
    seen_before_val,
)

log = logging.getLogger(__name__)


PositiveInts = tuple[Annotated[int, Field(ge=1)], ...]


class RetrievalConfig(Section):
    """The settings of a two-tower run: the [retrieval] table's own keys (temperature, log_q,
    holdout, ks, positives, monitor) and those gathered from [model], [optim], [data] and
    [train] by tasks.retrieval.retrieval_config (layout settings live in [layout]).
    `max_steps` (when > 0) is the exact number of steps; otherwise `epochs` passes are made.

    `positives`: which training rows are positive pairs. "threshold" keeps the rows the schema's
    [label] calls positive (MovieLens: rating >= 4); "all" trains on every interaction as
    implicit feedback, as ALS does (the held-out targets stay the thresholded positives either
    way). `log_q_weight` scales the log-Q correction (1: the full correction of Yi et al.; less
    leaves part of the popularity prior in the scores). `monitor`: the full-corpus validation metric ("recall@50", "ndcg@10", ...; its K must
    be in `ks`) that drives early stopping and the best checkpoint. `final_fit`: after the
    held-out run, `plexrec train` trains once more on every row for the best checkpoint's number
    of steps (training/final_fit.py); that run has `train_rows = "all"` (the held-out rows join
    the training rows, so its own validation and test figures mean nothing and are not
    reported).

    `history`: how many of the user's latest earlier interactions (of the `positives` policy)
    feed the user tower as a mean-pooled bag of item ids (features/history.py); 0 is off.

    `corpus_negatives`: M items drawn uniformly from the corpus per batch as extra negative
    columns beside the in-batch ones (Mixed Negative Sampling, Yang et al. 2020); the log-Q
    correction is then the mixture's, log(batch_size * p(item) + M / N). 0 is off.

    `matryoshka`: nested prefix widths trained with the same loss (models/two_tower.py, which
    also says how a prefix is scored): `true` means d/8, d/4, d/2 and d; a list such as
    [8, 16, 32] gets d appended; empty or `false` is off. Each width must divide d. Stored
    resolved (ending at d). `matryoshka_weights`: one weight per resolved width (default 1
    each); the weighted losses are summed, as in Kusupati et al."""

    dim: int = Field(64, ge=1)
    hidden: PositiveInts = (128,)
    dropout: float = Field(0.0, ge=0, lt=1)
    temperature: float = Field(0.05, gt=0)
    log_q: bool = True
    log_q_weight: float = Field(1.0, ge=0, le=2)
    lr: float = Field(0.005, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(512, ge=2, description="in-batch negatives need other rows")
    epochs: int = Field(5, ge=0)
    max_steps: int = Field(0, ge=0)
    holdout: int = Field(5, ge=1)
    ks: PositiveInts = DEFAULT_KS
    positives: Literal["threshold", "all"] = "threshold"
    monitor: str = "recall@50"
    final_fit: bool = True
    train_rows: Literal["split", "all"] = "split"
    seed: int = 0
    history: int = Field(0, ge=0)
    corpus_negatives: int = Field(0, ge=0)
    matryoshka: tuple[int, ...] = ()
    matryoshka_weights: tuple[Annotated[float, Field(gt=0)], ...] = ()

    @field_validator("hidden", "ks", "matryoshka_weights", mode="before")
    @classmethod
    def _list_as_tuple(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("matryoshka", mode="before")
    @classmethod
    def _nested_widths(cls, value: Any, info: ValidationInfo) -> Any:
        """`true` -> d/8, d/4, d/2, d; a list gets d appended; checked against d (the vector
        width, validated before this key)."""
        dim = info.data.get("dim")
        if isinstance(value, bool):
            if not value or dim is None:
                return ()
            if dim % 8:
                raise ValueError(f"true means d/8, d/4, d/2 and d: the vector width {dim} is "
                                 "not a multiple of 8; list the widths")
            return (dim // 8, dim // 4, dim // 2, dim)
        if not isinstance(value, list | tuple):
            raise ValueError("give true, false or a list of prefix widths")
        if not all(isinstance(w, int) and not isinstance(w, bool) for w in value):
            raise ValueError("widths must be integers")
        widths = tuple(value)
        if dim is None:
            return widths
        if widths and all(0 < w < dim for w in widths):
            widths = (*widths, dim)
        problem = width_problem(widths, dim)
        if problem:
            raise ValueError(problem)
        return widths

    @field_validator("monitor")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        name, _, k = value.partition("@")
        if name not in ("recall", "ndcg") or not k.isdigit() or int(k) < 1:
            raise ValueError("must be recall@K or ndcg@K")
        return value

    @model_validator(mode="after")
    def _some_training(self) -> RetrievalConfig:
        if self.epochs < 1 and self.max_steps < 1:
            raise ValueError("give epochs >= 1 or max_steps >= 1")
        if int(self.monitor.partition("@")[2]) not in self.ks:
            raise ValueError(f"monitor {self.monitor!r}: its K is not in ks {list(self.ks)}")
        if self.matryoshka_weights and len(self.matryoshka_weights) != len(self.matryoshka):
            raise ValueError(f"matryoshka_weights = {list(self.matryoshka_weights)}: one weight "
                             f"per matryoshka width {list(self.matryoshka)}")
        return self

    @property
    def prefix_widths(self) -> tuple[int, ...]:
        """The trained prefix widths below the full width (evaluated on their own)."""
        return tuple(w for w in self.matryoshka if w < self.dim)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "retrieval") -> RetrievalConfig:
        """Build from a TOML table; a ConfigError names the bad key and value."""
        return parse_section(cls, d, where)

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump()
        d["hidden"], d["ks"] = list(self.hidden), list(self.ks)
        d["matryoshka"] = list(self.matryoshka)
        d["matryoshka_weights"] = list(self.matryoshka_weights)
        return d


def side_features(data: Any, side: str) -> tuple[list[str], list[int]]:
    """Sparse feature names (cache order) and dense column indices of one side of the schema."""
    schema = data.schema
    names = {f.name for f in schema.side(side)}
    sparse = [n for n in data.sparse_names if n in names]
    dense = [i for i, n in enumerate(data.dense_names) if n in names]
    if not sparse:
        raise ConfigError(f"{schema.source}: the two-tower model needs at least one sparse "
                          f"feature with side = {side!r}")
    return sparse, dense


def key_names(data: Any) -> tuple[str, str]:
    schema = data.schema
    if not schema.user_key or not schema.item_key:
        raise ConfigError(f"{schema.source}: [dataset] needs user_key and item_key for "
                          "retrieval")
    for key in (schema.user_key, schema.item_key):
        if data.kind(key) != "categorical":
            raise ConfigError(f"{schema.source}: {key} must be a categorical feature")
    return schema.user_key, schema.item_key


@dataclass
class TwoTowerParts:
    model: TwoTower
    user_layout: Any
    item_layout: Any
    user_sparse: list[str]
    user_dense: list[int]
    item_sparse: list[str]
    item_dense: list[int]

    @property
    def embedding_params(self) -> int:
        return int(self.user_layout.total_params + self.item_layout.total_params)

    @property
    def embedding_bytes(self) -> int:
        return int(self.user_layout.total_bytes + self.item_layout.total_bytes)


def split_budget(layout: LayoutConfig, sizes: Sequence[int]) -> list[LayoutConfig]:
    """One layout config per tower: a [layout] budget is the total over both towers, shared in
    proportion to each tower's uncompressed size (its features' cardinalities)."""
    budget = layout.budget
    if budget is None:
        return [layout for _ in sizes]
    total = sum(sizes)
    if budget.params is not None:
        return [layout.with_budget(Budget(params=max(1, budget.params * n // total)))
                for n in sizes]
    assert budget.bytes is not None
    return [layout.with_budget(Budget(bytes=max(1, budget.bytes * n // total))) for n in sizes]


HISTORY_FEATURE = "history"


def with_history(data: Any, config: RetrievalConfig, known_rows: np.ndarray) -> Any:
    """`data` plus the user's history feature over `known_rows` (`[retrieval] history`
    items; unchanged when it is 0)."""
    if not config.history:
        return data
    user_key, item_key = key_names(data)
    return HistoryView(data, HistorySpec(HISTORY_FEATURE, user_key, item_key, config.history,
                                         config.positives), known_rows)


def build_two_tower(data: Any, layout: LayoutConfig, config: RetrievalConfig,
                    device: torch.device | str | None = None) -> TwoTowerParts:
    """One layout per side over that side's sparse features (same layout kind and settings), so
    users and items never share embedding rows."""
    torch.manual_seed(config.seed)
    user_sparse, user_dense = side_features(data, "user")
    item_sparse, item_dense = side_features(data, "item")
    user_cfg, item_cfg = split_budget(layout, [
        sum(data.cardinality(n) for n in names) for names in (user_sparse, item_sparse)])
    user_layout = build_layout(specs_from_prepared(data, user_sparse), user_cfg)
    item_layout = build_layout(specs_from_prepared(data, item_sparse), item_cfg)
    user = Tower(user_layout.module(device), user_layout.feature_names, user_layout.dim,
                 user_dense, config.hidden, config.dim, config.dropout)
    item = Tower(item_layout.module(device), item_layout.feature_names, item_layout.dim,
                 item_dense, config.hidden, config.dim, config.dropout)
    return TwoTowerParts(TwoTower(user, item, config.temperature, config.matryoshka),
                         user_layout, item_layout, user_sparse, user_dense, item_sparse,
                         item_dense)


def entity_rows(data: Any, key: str, rows: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(ids, row) for every id of `key` except the OOV row 0: each id's latest row by time
    (file order when there is no time), among `rows` when given. Ids absent from `rows` are left
    out."""
    ids = key_ids(data, key)
    rows = np.arange(data.num_rows) if rows is None else np.asarray(rows, dtype=np.int64)
    time_ = data.time
    order_key = np.asarray(time_)[rows] if time_ is not None else rows
    order = np.lexsort((rows, order_key))
    rows = rows[order]
    row_ids = ids[rows]
    last = np.full(data.cardinality(key), -1, dtype=np.int64)
    last[row_ids] = rows
    present = np.flatnonzero(last >= 0)
    present = present[present != 0]
    return present, last[present]


@torch.no_grad()
def tower_vectors(tower: Tower, data: Any, rows: np.ndarray, batch_size: int = 1024
                  ) -> torch.Tensor:
    """Vectors of one tower for the given rows (eval mode)."""
    from plexrec.features.batching import BatchLoader

    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return torch.zeros(0, tower.dim)
    order = np.argsort(rows, kind="stable")
    was_training = tower.training
    tower.eval()
    out = torch.cat([tower(b.sparse_features, b.dense_features)
                     for b in BatchLoader(data, rows[order], batch_size)])
    tower.train(was_training)
    result = torch.empty_like(out)
    result[torch.from_numpy(order)] = out
    return result


def positive_rows(data: Any, rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.int64)
    return rows[np.asarray(data.labels)[rows] > 0.5]


def training_pairs(data: Any, rows: np.ndarray, positives: str = "threshold") -> np.ndarray:
    """The rows trained on as (user, item) positive pairs: the labelled positives, or every
    interaction (`positives = "all"`)."""
    rows = np.asarray(rows, dtype=np.int64)
    return rows if positives == "all" else positive_rows(data, rows)


def item_log_q(data: Any, rows: np.ndarray, item_key: str) -> torch.Tensor:
    """Sampling log-probability of each item id, from the positive training rows."""
    ids = key_ids(data, item_key)[rows]
    return log_q_from_counts(np.bincount(ids, minlength=data.cardinality(item_key)))


@dataclass(frozen=True)
class CorpusRows:
    """Which row gives each entity its vector when ranking the whole corpus: each user's latest
    row among the rows before the held-out ones, each item's latest row in the whole data (item
    features are content, and an item seen only in held-out rows is still a candidate). One
    definition for the sharded validation, the offline test and the export."""

    users: np.ndarray
    user_rows: np.ndarray
    items: np.ndarray
    item_rows: np.ndarray


def corpus_rows(data: Any, user_rows_from: np.ndarray) -> CorpusRows:
    user_key, item_key = key_names(data)
    users, user_rows = entity_rows(data, user_key, user_rows_from)
    items, item_rows = entity_rows(data, item_key)
    return CorpusRows(users, user_rows, items, item_rows)


def vector_scorer(users: np.ndarray, user_vecs: torch.Tensor, item_vecs: torch.Tensor,
                  where: str = "") -> Callable[[np.ndarray], torch.Tensor]:
    """Scores of the given user ids (rows of `user_vecs` in `users` order) against every item
    vector (rows of `item_vecs`)."""
    users = np.asarray(users, dtype=np.int64)
    row_of_user = np.full(int(users.max()) + 1 if len(users) else 1, -1, dtype=np.int64)
    row_of_user[users] = np.arange(len(users))

    def score(batch_users: np.ndarray) -> torch.Tensor:
        known = batch_users < len(row_of_user)
        rows = np.where(known, row_of_user[np.where(known, batch_users, 0)], -1)
        if (rows < 0).any():
            raise DataError(f"user id {int(batch_users[rows < 0][0])} has no training row",
                            path=where)
        return user_vecs[torch.from_numpy(rows)] @ item_vecs.T

    return score


def user_vectors(model: TwoTower, data: Any, known_rows: np.ndarray, user_rows: np.ndarray,
                 bound_rows: np.ndarray | None = None) -> torch.Tensor:
    """The user vectors of `user_rows` as a server would have them after `known_rows`: with a
    history feature, each user's history holds their known interactions before the bound row
    (see features.history.known_at; none: all of them)."""
    return tower_vectors(model.user, known_at(data, known_rows, user_rows, bound_rows),
                         user_rows)


def first_targets(data: Any, held_rows: np.ndarray, user_rows: np.ndarray) -> np.ndarray:
    """For each user row, the row of that user's earliest held-out target (by time, then row),
    -1 when the user has none: a history for the evaluation ends before it."""
    users = key_ids(data, key_names(data)[0])
    held = np.asarray(held_rows, dtype=np.int64)
    time_ = np.asarray(data.time) if data.time is not None else np.arange(data.num_rows)
    held = held[np.lexsort((held, time_[held], users[held]))]
    first_user, first_at = np.unique(users[held], return_index=True)
    bound = np.full(data.cardinality(key_names(data)[0]), -1, dtype=np.int64)
    bound[first_user] = held[first_at]
    return bound[users[np.asarray(user_rows, dtype=np.int64)]]


def corpus_vectors(model: TwoTower, data: Any, split: LeaveLastOut, phase: str
                   ) -> tuple[CorpusRows, torch.Tensor, torch.Tensor]:
    """The corpus rows of a phase ("val" or "test") and their user and item vectors."""
    _, _, before = phase_of(split, phase)
    c = corpus_rows(data, before)
    bounds = first_targets(data, held_rows(split, phase), c.user_rows)
    return (c, user_vectors(model, data, before, c.user_rows, bounds),
            tower_vectors(model.item, data, c.item_rows))


def evaluate_two_tower(model: TwoTower, data: Any, split: LeaveLastOut,
                       ks: Sequence[int] = DEFAULT_KS, phase: str = "test") -> dict[str, float]:
    """Full-catalogue Recall@K / NDCG@K on the split's test (or "val") positives."""
    targets, seen, _ = phase_of(split, phase)
    c, user_vecs, item_vecs = corpus_vectors(model, data, split, phase)
    score = vector_scorer(c.users, user_vecs, item_vecs, str(data.path))
    return evaluate_topk(score, targets, seen, c.items, ks)


def evaluate_prefixes(model: TwoTower, data: Any, split: LeaveLastOut, widths: Sequence[int],
                      ks: Sequence[int] = DEFAULT_KS, phase: str = "test",
                      renormalise: bool = True) -> dict[int, dict[str, float]]:
    """`evaluate_two_tower` with the vectors cut to each prefix width (one tower pass for all
    widths): re-normalised prefixes, as served (`prefix_vectors`), or with `renormalise=False`
    the plain inner product of raw prefixes."""
    targets, seen, _ = phase_of(split, phase)
    c, user_vecs, item_vecs = corpus_vectors(model, data, split, phase)
    cut = prefix_vectors if renormalise else _raw_prefix
    out = {}
    for width in widths:
        score = vector_scorer(c.users, cut(user_vecs, width), cut(item_vecs, width),
                              str(data.path))
        out[int(width)] = evaluate_topk(score, targets, seen, c.items, ks)
    return out


def _raw_prefix(vectors: torch.Tensor, width: int) -> torch.Tensor:
    return vectors[:, :width]


def phase_of(split: LeaveLastOut, phase: str
             ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], np.ndarray]:
    """(targets, seen items to mask, rows a user vector may come from) of "val" or "test"."""
    if phase == "val":
        return split.val_pos, seen_before_val(split), split.train_rows
    if phase == "test":
        return (split.test_pos, seen_before_test(split),
                np.sort(np.concatenate([split.train_rows, split.val_rows])))
    raise ValueError(f"phase must be 'val' or 'test', got {phase!r}")


def held_rows(split: LeaveLastOut, phase: str) -> np.ndarray:
    """The held-out target rows of "val" or "test"."""
    return split.val_rows if phase == "val" else split.test_rows


def make_split(data: Any, holdout: int, val_holdout: int = 0) -> LeaveLastOut:
    user_key, item_key = key_names(data)
    return leave_last_out(key_ids(data, user_key), key_ids(data, item_key),
                          np.asarray(data.labels), None if data.time is None
                          else np.asarray(data.time), holdout, val_holdout)


def metric_key(name: str) -> str:
    """"recall@10" -> "recall_at_10": MLflow and JSON friendly."""
    return name.replace("@", "_at_")


def width_key(name: str, width: int) -> str:
    """("recall@50", 16) -> "recall_at_50_w16": a metric of the vectors cut to a prefix."""
    return f"{metric_key(name)}_w{width}"
