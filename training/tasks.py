"""What the trainer needs to know about a learning task, and nothing more: how to build the model
from the prepared data, how to batch, the loss, and the evaluation metrics. The trainer (sharding,
optimizers, checkpoints, tracking) never looks inside, so a new task (e.g. two-tower retrieval)
plugs in by registering a factory under its model kind."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from plexrec.features.errors import ConfigError
from plexrec.training.config import RunConfig
from plexrec.training.metrics import BinaryEvaluator


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
    """One learning problem. `primary_metric` (higher is better) drives early stopping.

    Optional hooks the trainer uses when present: `configure(cfg, data) -> self` (called first),
    `split(cfg, data) -> Splits` (else `features.batching.split_rows` with [data] split), and
    `final_metrics(model, data, cfg) -> dict` (rank 0, on the unsharded final model; merged into
    the result as `test_<name>`)."""

    name: str
    primary_metric: str

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


class _BinaryEval:
    def __init__(self) -> None:
        self._inner = BinaryEvaluator()

    def update(self, batch: Any, output: torch.Tensor) -> None:
        self._inner.update(output, batch.labels)

    def compute(self) -> dict[str, float]:
        return self._inner.compute()


class CtrTask:
    """Click-through-rate ranking: a DLRM / DCN-v2 over one embedding layout, log loss, AUC."""

    name = "ctr"
    primary_metric = "auc"

    def __init__(self) -> None:
        self._feature_list: list[str] | None = None

    def _features(self, cfg: RunConfig, data: Any) -> list[str]:
        return list(cfg.data.features) or list(data.sparse_names)

    def validate(self, cfg: RunConfig, data: Any) -> None:
        from plexrec.models.ranking import RANKING_MODELS

        if cfg.model.kind not in RANKING_MODELS:
            raise ConfigError(f"{cfg.source} [model] kind {cfg.model.kind!r} is not a ranking "
                              f"model ({', '.join(sorted(RANKING_MODELS))})")
        missing = [f for f in cfg.data.features if f not in data.sparse_names]
        if missing:
            raise ConfigError(f"{cfg.source} [data] features: {', '.join(missing)} not among the "
                              f"sparse features of the schema ({', '.join(data.sparse_names)})")

    def layout(self, cfg: RunConfig, data: Any) -> Any:
        from plexrec.models.layouts import LayoutConfig, build_layout, specs_from_prepared

        config = LayoutConfig.from_dict(cfg.layout, f"{cfg.source} [layout]")
        return build_layout(specs_from_prepared(data, self._features(cfg, data)), config)

    def build(self, cfg: RunConfig, data: Any, device: str | torch.device) -> BuiltModel:
        from plexrec.models.ranking import build_ranking_model

        layout = self.layout(cfg, data)
        module = build_ranking_model(cfg.model.kind, layout.module(device), layout.feature_names,
                                     layout.dim, len(data.dense_names), cfg.model)
        return BuiltModel(module=module, report=list(layout.report()),
                          embedding_params=int(layout.total_params),
                          embedding_bytes=int(layout.total_bytes),
                          table_names=[t.name for t in layout.table_configs()],
                          describe=layout.describe())

    def loader(self, data: Any, rows: np.ndarray, *, batch_size: int, shuffle: bool, seed: int,
               rank: int, world_size: int, drop_last: bool) -> Loader:
        from plexrec.features.batching import BatchLoader

        return BatchLoader(data, rows, batch_size, shuffle=shuffle, seed=seed, rank=rank,
                           world_size=world_size, drop_last=drop_last,
                           features=self._feature_list)

    def configure(self, cfg: RunConfig, data: Any) -> CtrTask:
        self._feature_list = self._features(cfg, data)
        return self

    def forward(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return model(batch.dense_features, batch.sparse_features)

    def loss(self, batch: Any, output: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(output, batch.labels)

    def batch_size(self, batch: Any) -> int:
        return int(batch.labels.shape[0])

    def to_device(self, batch: Any, device: torch.device) -> Any:
        return batch if device.type == "cpu" else batch.to(device, non_blocking=True)

    def evaluator(self) -> Evaluator:
        return _BinaryEval()


def _retrieval_task() -> Task:
    from plexrec.training.retrieval_task import RetrievalTask

    return RetrievalTask()


TASKS: dict[str, Callable[[], Task]] = {"dlrm": CtrTask, "dcn": CtrTask,
                                        "two_tower": _retrieval_task}


def task_for(cfg: RunConfig, data: Any) -> Task:
    """The task registered under `[model] kind`, configured for this run's data."""
    if cfg.model.kind not in TASKS:
        raise ConfigError(f"{cfg.source} [model] kind {cfg.model.kind!r} is unknown "
                          f"(known: {', '.join(sorted(TASKS))})")
    task = TASKS[cfg.model.kind]()
    configure = getattr(task, "configure", None)
    if configure is not None:
        configure(cfg, data)
    return task
