"""DLRM: a bottom MLP brings the dense features to the embedding width, then every pair of
vectors (dense + one per sparse feature) meets in a dot product, and a top MLP reads the result."""

from __future__ import annotations

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from plexrec.models.regularization import embedding_l2


def mlp(in_features: int, sizes: list[int], *, final_activation: bool = True,
        dropout: float = 0.0) -> nn.Sequential:
    """Linear+ReLU layers of the given widths; the last ReLU is dropped when it feeds a logit.
    `dropout` follows every hidden layer's ReLU (not the output layer)."""
    layers: list[nn.Module] = []
    width = in_features
    for i, size in enumerate(sizes):
        layers.append(nn.Linear(width, size))
        hidden = i < len(sizes) - 1
        if final_activation or hidden:
            layers.append(nn.ReLU())
        if hidden and dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    return nn.Sequential(*layers)


class DLRM(nn.Module):
    """forward(dense [B, n_dense], kjt) -> logits [B]; `layout` is any layout module mapping a KJT
    to one [B, dim] vector per feature."""
    _pairs: torch.Tensor

    def __init__(self, layout: nn.Module, feature_names: list[str], dim: int, num_dense: int,
                 bottom_mlp: list[int], top_mlp: list[int], dropout: float = 0.0,
                 embedding_l2: float = 0.0) -> None:
        super().__init__()
        self.embedding_l2 = embedding_l2
        self.layout = layout
        self.feature_names = list(feature_names)
        self.bottom = mlp(num_dense, [*bottom_mlp, dim], dropout=dropout)
        vectors = len(self.feature_names) + 1
        rows, cols = torch.triu_indices(vectors, vectors, offset=1)
        # Flat positions of the upper triangle: index_select's backward is a cheap index_add,
        # unlike the two-tensor advanced indexing it replaces.
        self.register_buffer("_pairs", rows * vectors + cols, persistent=False)
        self.top = mlp(dim + rows.numel(), [*top_mlp, 1], final_activation=False,
                       dropout=dropout)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        embedded = embedding_l2(self.layout(kjt), self.embedding_l2, self.training)
        bottom = self.bottom(dense)
        stacked = torch.stack([bottom] + [embedded[n] for n in self.feature_names], dim=1)
        dots = torch.bmm(stacked, stacked.transpose(1, 2)).flatten(1).index_select(1, self._pairs)
        return self.top(torch.cat([bottom, dots], dim=1)).squeeze(1)
