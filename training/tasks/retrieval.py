"""Two-tower retrieval as a trainer task: the model of training/two_tower.py under DMP, trained on
positive interactions with in-batch negatives; validation ranks each positive among its batch,
the final test is full-catalogue Recall@K / NDCG@K on the leave-last-out split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from plexrec.features.batching import BatchLoader, Splits
from plexrec.features.errors import ConfigError
from plexrec.models.layouts import LayoutConfig
from plexrec.models.two_tower import TwoTower, sampled_softmax_loss
from plexrec.training.retrieval_metrics import LeaveLastOut
from plexrec.training.task import BuiltModel
from plexrec.training.two_tower import (
    RetrievalConfig,
    TwoTowerParts,
    build_two_tower,
    evaluate_two_tower,
    item_log_q,
    key_names,
    make_split,
    metric_key,
    positive_rows,
    side_features,
)

INBATCH_KS = (1, 10)

RETRIEVAL_DEFAULTS: dict[str, Any] = {"temperature": 0.05, "log_q": True, "holdout": 5}


def retrieval_config(cfg: Any) -> RetrievalConfig:
    """The retrieval settings of a RunConfig: the towers' MLP is `[model] deep_mlp` (the last
    entry is the vector width); temperature, log_q, holdout and ks come from an optional
    `[retrieval]` table; batch size, learning rate and steps from [data], [optim] and [train]."""
    table = dict(getattr(cfg, "retrieval", None) or {})
    allowed = ("temperature", "log_q", "holdout", "ks")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(f"{cfg.source} [retrieval]: unknown key(s) {', '.join(unknown)} "
                          f"(known: {', '.join(allowed)})")
    mlp_widths = list(cfg.model.deep_mlp)
    if not mlp_widths:
        raise ConfigError(f"{cfg.source} [model] deep_mlp: the two-tower model needs at least "
                          "the output width")
    values = {**RETRIEVAL_DEFAULTS, **table, "dim": mlp_widths[-1], "hidden": mlp_widths[:-1],
              "dropout": cfg.model.dropout,
              "lr": cfg.optim.dense_lr, "weight_decay": cfg.optim.weight_decay,
              "batch_size": cfg.data.batch_size, "epochs": cfg.train.epochs,
              "max_steps": cfg.train.max_steps, "seed": cfg.train.seed}
    return RetrievalConfig.from_dict(values, f"{cfg.source} [retrieval]")


class InBatchEvaluator:
    """Validation during training: each positive row's item ranked among the other items of its
    evaluation batch (same-item columns masked). Cheap and batch-local, so it works on sharded
    models; the full-catalogue Recall@K / NDCG@K come from `RetrievalTask.final_metrics`."""

    def __init__(self, dim: int, item_key: str, ks: Sequence[int] = INBATCH_KS) -> None:
        self.dim, self.item_key, self.ks = dim, item_key, tuple(ks)
        self.hits = torch.zeros(len(self.ks), dtype=torch.float64)
        self.count = 0

    def update(self, batch: Any, output: torch.Tensor) -> None:
        user, item = output[:, :self.dim].float(), output[:, self.dim:].float()
        ids = batch.sparse_features[self.item_key].values().to(output.device)
        scores = user @ item.T
        same = ids.unsqueeze(0) == ids.unsqueeze(1)
        same.fill_diagonal_(False)
        scores = scores.masked_fill(same, float("-inf"))
        rank = (scores > scores.diagonal().unsqueeze(1)).sum(dim=1)
        for j, k in enumerate(self.ks):
            self.hits[j] += float((rank < k).sum())
        self.count += len(ids)

    def compute(self) -> dict[str, float]:
        import torch.distributed as dist

        totals = torch.cat([self.hits, torch.tensor([float(self.count)], dtype=torch.float64)])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals)
        n = max(float(totals[-1]), 1.0)
        out = {f"inbatch_recall_at_{k}": float(totals[j]) / n for j, k in enumerate(self.ks)}
        out["examples"] = float(totals[-1])
        return out


class RetrievalTask:
    """Two-tower retrieval on positive interactions (label 1) with in-batch negatives.

    Hooks beyond training/task.Task: `split(cfg, data)` (leave-last-out: each user's last
    `holdout` positives test, the `holdout` before them validation) and
    `final_metrics(model, data, cfg)` (full-catalogue Recall@K / NDCG@K of an unsharded model)."""

    name = "retrieval"
    primary_metric = "inbatch_recall_at_10"
    metric_names: tuple[str, ...] = tuple(f"inbatch_recall_at_{k}" for k in INBATCH_KS)
    model_kinds: tuple[str, ...] = ("two_tower",)

    def __init__(self) -> None:
        self.config: RetrievalConfig | None = None
        self.user_key = self.item_key = ""
        self.log_q: torch.Tensor | None = None
        self._split: LeaveLastOut | None = None

    def configure(self, cfg: Any, data: Any) -> RetrievalTask:
        self.config = retrieval_config(cfg)
        self.user_key, self.item_key = key_names(data)
        return self

    @property
    def catalogue(self) -> tuple[str, ...]:
        """Features that keep every id of the cache: the user and item keys (see
        features/training_view.py)."""
        return (self.user_key, self.item_key)

    def _cfg(self) -> RetrievalConfig:
        if self.config is None:
            raise ConfigError("RetrievalTask used before configure(cfg, data)")
        return self.config

    def leave_last_out(self, data: Any) -> LeaveLastOut:
        if self._split is None:
            holdout = self._cfg().holdout
            self._split = make_split(data, holdout, val_holdout=holdout)
        return self._split

    def split(self, cfg: Any, data: Any) -> Any:
        s = self.leave_last_out(data)
        return Splits(train=s.train_rows, val=s.val_rows, test=s.test_rows)

    def validate(self, cfg: Any, data: Any) -> None:
        key_names(data)
        side_features(data, "user")
        side_features(data, "item")
        if cfg.data.batch_size < 2:
            raise ConfigError(f"{cfg.source} [data] batch_size: in-batch negatives need >= 2")

    def build_parts(self, cfg: Any, data: Any, device: str | torch.device) -> TwoTowerParts:
        layout = LayoutConfig.from_dict(cfg.layout, f"{cfg.source} [layout]")
        return build_two_tower(data, layout, self._cfg(), device)

    def build(self, cfg: Any, data: Any, device: str | torch.device) -> Any:
        parts = self.build_parts(cfg, data, device)
        report = ([replace(r, name=f"user.{r.name}") for r in parts.user_layout.report()]
                  + [replace(r, name=f"item.{r.name}") for r in parts.item_layout.report()])
        tables = [t.name for lay in (parts.user_layout, parts.item_layout)
                  for t in lay.table_configs()]
        return BuiltModel(module=parts.model, report=report,
                          embedding_params=parts.embedding_params,
                          embedding_bytes=parts.embedding_bytes,
                          table_names=list(dict.fromkeys(tables)),
                          describe="user tower " + parts.user_layout.describe()
                          + "\nitem tower " + parts.item_layout.describe())

    def loader(self, data: Any, rows: np.ndarray, *, batch_size: int, shuffle: bool, seed: int,
               rank: int, world_size: int, drop_last: bool) -> Any:
        """Batches of the positive rows only: a negative interaction is no retrieval target."""
        pos = positive_rows(data, rows)
        if shuffle and self._cfg().log_q and self.log_q is None:
            self.log_q = item_log_q(data, pos, self.item_key)
        return BatchLoader(data, pos, batch_size, shuffle=shuffle, seed=seed, rank=rank,
                           world_size=world_size, drop_last=drop_last)

    def forward(self, model: Any, batch: Any) -> torch.Tensor:
        user, item = model(batch.dense_features, batch.sparse_features)
        return torch.cat([user, item], dim=1)

    def loss(self, batch: Any, output: torch.Tensor) -> torch.Tensor:
        cfg = self._cfg()
        user, item = output[:, :cfg.dim], output[:, cfg.dim:]
        ids = batch.sparse_features[self.item_key].values().to(output.device)
        log_q = self.log_q.to(output.device) if self.log_q is not None else None
        return sampled_softmax_loss(user, item, ids, log_q, cfg.temperature)

    def batch_size(self, batch: Any) -> int:
        return int(batch.labels.shape[0])

    def to_device(self, batch: Any, device: torch.device) -> Any:
        return batch if device.type == "cpu" else batch.to(device, non_blocking=True)

    def evaluator(self) -> InBatchEvaluator:
        return InBatchEvaluator(self._cfg().dim, self.item_key)

    def final_metrics(self, model: TwoTower, data: Any, cfg: Any = None) -> dict[str, float]:
        """Full-catalogue test metrics ("recall_at_10", "ndcg_at_100", ...) of an unsharded
        model, on the leave-last-out test positives."""
        metrics = evaluate_two_tower(model, data, self.leave_last_out(data), self._cfg().ks)
        return {metric_key(k): float(v) for k, v in metrics.items()}

