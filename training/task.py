"""The contract between the trainer and a learning task: how to build the model from the
prepared data, how to batch, the loss, and the metrics. The trainer (sharding, optimizers,
checkpoints, tracking) never looks inside a task; tasks live one per file in training/tasks/ and
are listed in its registry."""

from __future__ import annotations

from collections.abc import Iterable, Sized
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from plexrec.training.config import RunConfig


@dataclass
class BuiltModel:
    """The unsharded model (its EBCs may sit on the meta device for DMP) and its layouts' reports
    (rows of `TableReport`-like objects with name, rows, dim, params, bytes)."""

    module: nn.Module
    report: list[Any]
    embedding_params: int
    embedding_bytes: int
    table_names: list[str] = field(default_factory=list)
    describe: str = ""


class Loader(Iterable[Any], Sized, Protocol):
    def set_epoch(self, epoch: int) -> None: ...
    def skip(self, n_batches: int) -> None: ...


class Evaluator(Protocol):
    def update(self, batch: Any, output: torch.Tensor) -> None: ...
    def compute(self) -> dict[str, float]:
        """Metrics over all ranks (a collective: every rank calls it)."""
        ...


class Task(Protocol):
    """One learning problem. `primary_metric` (higher is better) drives early stopping;
    `metric_names` are what its evaluator reports, logged as `val_<name>` and `test_<name>`;
    `model_kinds` are the `[model] kind` values it trains.

    Optional hooks the trainer uses when present: `configure(cfg, data) -> self` (called first),
    `split(cfg, data) -> Splits` (else `features.batching.split_rows` with [data] split), and
    `final_metrics(model, data, cfg) -> dict` (rank 0, on the unsharded final model; merged into
    the result as `test_<name>`)."""

    name: str
    primary_metric: str
    metric_names: tuple[str, ...]
    model_kinds: tuple[str, ...]

    def validate(self, cfg: RunConfig, data: Any) -> None:
        """Config checks that need the prepared data (feature names...): raise ConfigError."""
        ...

    def build(self, cfg: RunConfig, data: Any, device: str | torch.device) -> BuiltModel:
        """A fresh model; with device "meta" the embedding tables are left for DMP to place."""
        ...

    def loader(self, data: Any, rows: np.ndarray, *, batch_size: int, shuffle: bool, seed: int,
               rank: int, world_size: int, drop_last: bool) -> Loader: ...

    def forward(self, model: nn.Module, batch: Any) -> torch.Tensor: ...

    def loss(self, batch: Any, output: torch.Tensor) -> torch.Tensor: ...

    def batch_size(self, batch: Any) -> int: ...

    def to_device(self, batch: Any, device: torch.device) -> Any: ...

    def evaluator(self) -> Evaluator: ...
