"""Ranking models by name, so a run config's `[model] kind` picks the network."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from plexrec.features.errors import ConfigError
from plexrec.models.autoint import AutoInt
from plexrec.models.dcn import DCNv2
from plexrec.models.dlrm import DLRM

RANKING_MODELS: dict[str, Callable[..., nn.Module]] = {
    "dlrm": lambda layout, names, dim, num_dense, cfg, l2: DLRM(
        layout, names, dim, num_dense, list(cfg.bottom_mlp), list(cfg.top_mlp),
        getattr(cfg, "dropout", 0.0), l2),
    "dcn": lambda layout, names, dim, num_dense, cfg, l2: DCNv2(
        layout, names, dim, num_dense, cfg.cross_layers, cfg.cross_rank, list(cfg.deep_mlp),
        getattr(cfg, "dropout", 0.0), l2, getattr(cfg, "dcn_structure", "stacked")),
    "autoint": lambda layout, names, dim, num_dense, cfg, l2: AutoInt(
        layout, names, dim, num_dense, cfg.attention_layers, cfg.attention_heads,
        list(cfg.deep_mlp), getattr(cfg, "dropout", 0.0), l2),
}


def build_ranking_model(kind: str, layout: nn.Module, feature_names: list[str], dim: int,
                        num_dense: int, cfg: Any, embedding_l2: float = 0.0) -> nn.Module:
    """`cfg` carries the MLP sizes and dropout (training.config.ModelConfig or anything with
    those fields); `embedding_l2` the penalty on looked-up embeddings (models/regularization)."""
    if kind not in RANKING_MODELS:
        raise ConfigError(f"[model] kind {kind!r} is not a ranking model "
                          f"({', '.join(sorted(RANKING_MODELS))})")
    return RANKING_MODELS[kind](layout, feature_names, dim, num_dense, cfg, embedding_l2)
