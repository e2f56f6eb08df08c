"""DCN-v2: low-rank cross layers model explicit feature crosses over the concatenated input
(dense features + every feature embedding); a deep MLP on top adds implicit interactions."""

from __future__ import annotations

import torch
from torch import nn
from torchrec.modules.crossnet import LowRankCrossNet
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from plexrec.models.dlrm import mlp
from plexrec.models.regularization import embedding_l2


class DCNv2(nn.Module):
    """forward(dense [B, n_dense], kjt) -> logits [B] (stacked: cross network, then deep MLP)."""

    def __init__(self, layout: nn.Module, feature_names: list[str], dim: int, num_dense: int,
                 cross_layers: int, cross_rank: int, deep_mlp: list[int],
                 dropout: float = 0.0, embedding_l2: float = 0.0) -> None:
        super().__init__()
        self.embedding_l2 = embedding_l2
        self.layout = layout
        self.feature_names = list(feature_names)
        width = num_dense + dim * len(self.feature_names)
        self.cross = LowRankCrossNet(in_features=width, num_layers=cross_layers,
                                     low_rank=min(cross_rank, width))
        self.deep = mlp(width, deep_mlp, dropout=dropout)
        if deep_mlp and dropout > 0:
            self.deep.append(nn.Dropout(dropout))
        self.head = nn.Linear(deep_mlp[-1] if deep_mlp else width, 1)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        embedded = embedding_l2(self.layout(kjt), self.embedding_l2, self.training)
        x = torch.cat([dense] + [embedded[n] for n in self.feature_names], dim=1)
        return self.head(self.deep(self.cross(x))).squeeze(1)
