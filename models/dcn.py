"""DCN-v2 (Wang et al., 2021): low-rank cross layers model explicit feature crosses over the
concatenated input (dense features + every feature embedding) and a deep MLP adds implicit
interactions. Two structures from the paper: "stacked" (the MLP reads the cross network's output)
and "parallel" (both read the input; the head reads both outputs side by side)."""

from __future__ import annotations

import torch
from torch import nn
from torchrec.modules.crossnet import LowRankCrossNet
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from plexrec.features.errors import ConfigError
from plexrec.models.dlrm import mlp
from plexrec.models.regularization import embedding_l2


class DCNv2(nn.Module):
    """forward(dense [B, n_dense], kjt) -> logits [B]."""

    def __init__(self, layout: nn.Module, feature_names: list[str], dim: int, num_dense: int,
                 cross_layers: int, cross_rank: int, deep_mlp: list[int],
                 dropout: float = 0.0, embedding_l2: float = 0.0,
                 structure: str = "stacked") -> None:
        super().__init__()
        if structure not in ("stacked", "parallel"):
            raise ConfigError(f"[model] dcn_structure: {structure!r} is not stacked or parallel")
        self.parallel = structure == "parallel"
        self.embedding_l2 = embedding_l2
        self.layout = layout
        self.feature_names = list(feature_names)
        width = num_dense + dim * len(self.feature_names)
        self.cross = LowRankCrossNet(in_features=width, num_layers=cross_layers,
                                     low_rank=min(cross_rank, width))
        self.deep = mlp(width, deep_mlp, dropout=dropout)
        if deep_mlp and dropout > 0:
            self.deep.append(nn.Dropout(dropout))
        deep_out = deep_mlp[-1] if deep_mlp else width
        self.head = nn.Linear(deep_out + width if self.parallel else deep_out, 1)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        embedded = embedding_l2(self.layout(kjt), self.embedding_l2, self.training)
        x = torch.cat([dense] + [embedded[n] for n in self.feature_names], dim=1)
        if self.parallel:
            return self.head(torch.cat([self.cross(x), self.deep(x)], dim=1)).squeeze(1)
        return self.head(self.deep(self.cross(x))).squeeze(1)
