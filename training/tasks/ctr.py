"""Click-through-rate ranking: a ranking model (models/ranking.py: DLRM, DCN-v2) over one
embedding layout, trained on log loss and judged by AUC."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from plexrec.features.batching import BatchLoader
from plexrec.features.errors import ConfigError
from plexrec.models.first_order import (
    FirstOrder,
    WithFirstOrder,
    first_order_report,
    first_order_tables,
)
from plexrec.models.layouts import LayoutConfig, build_layout, specs_from_prepared
from plexrec.models.ranking import RANKING_MODELS, build_ranking_model
from plexrec.training.config import RunConfig
from plexrec.training.metrics import BinaryEvaluator
from plexrec.training.task import BuiltModel, Evaluator, Loader

METRIC_NAMES = ("auc", "logloss", "calibration", "ne")


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
    metric_names: tuple[str, ...] = METRIC_NAMES
    model_kinds: tuple[str, ...] = tuple(RANKING_MODELS)

    def __init__(self) -> None:
        self._feature_list: list[str] | None = None

    def _features(self, cfg: RunConfig, data: Any) -> list[str]:
        return list(cfg.data.features) or list(data.sparse_names)

    def validate(self, cfg: RunConfig, data: Any) -> None:
        missing = [f for f in cfg.data.features if f not in data.sparse_names]
        if missing:
            raise ConfigError(f"{cfg.source} [data] features: {', '.join(missing)} not among the "
                              f"sparse features of the schema ({', '.join(data.sparse_names)})")

    def layout(self, cfg: RunConfig, data: Any) -> Any:
        config = LayoutConfig.from_dict(cfg.layout, f"{cfg.source} [layout]")
        return build_layout(specs_from_prepared(data, self._features(cfg, data)), config)

    def build(self, cfg: RunConfig, data: Any, device: str | torch.device) -> BuiltModel:
        layout = self.layout(cfg, data)
        num_dense = len(data.dense_names)
        module = build_ranking_model(cfg.model.kind, layout.module(device), layout.feature_names,
                                     layout.dim, num_dense, cfg.model, cfg.optim.embedding_l2)
        report = list(layout.report())
        tables = [t.name for t in layout.table_configs()]
        if cfg.model.first_order:
            specs = specs_from_prepared(data, self._features(cfg, data))
            module = WithFirstOrder(module, FirstOrder(specs, num_dense,
                                                       cfg.optim.first_order_l2, device,
                                                       cfg.optim.first_order_id_l2))
            report += first_order_report(specs)
            tables += [t.name for t in first_order_tables(specs)]
        return BuiltModel(module=module, report=report,
                          embedding_params=sum(int(r.params) for r in report),
                          embedding_bytes=sum(int(r.bytes) for r in report),
                          table_names=tables,
                          describe=layout.describe())

    def loader(self, data: Any, rows: np.ndarray, *, batch_size: int, shuffle: bool, seed: int,
               rank: int, world_size: int, drop_last: bool) -> Loader:
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

    def signature(self, data: Any) -> Any:
        """The logged model's inputs: [B, dense] floats and the KeyedJaggedTensor's values and
        lengths (feature-major, `data.sparse_names` order); output: one logit per row."""
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, len(data.dense_names)), "dense"),
                         TensorSpec(np.dtype(np.int64), (-1,), "sparse_values"),
                         TensorSpec(np.dtype(np.int32), (-1,), "sparse_lengths")])
        return ModelSignature(inputs=inputs,
                              outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,), "logit")]))

    def evaluator(self) -> Evaluator:
        return _BinaryEval()
