"""DLRM: a bottom MLP brings the dense features to the embedding width, then every pair of
vectors (dense + one per sparse feature) meets in a dot product, and a top MLP reads the result."""

from __future__ import annotations

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


def mlp(in_features: int, sizes: list[int], *, final_activation: bool = True) -> nn.Sequential:
    """Linear+ReLU layers of the given widths; the last ReLU is dropped when it feeds a logit."""
    layers: list[nn.Module] = []
    width = in_features
    for i, size in enumerate(sizes):
        layers.append(nn.Linear(width, size))
        if final_activation or i < len(sizes) - 1:
            layers.append(nn.ReLU())
        width = size
    return nn.Sequential(*layers)


class DLRM(nn.Module):
    """forward(dense [B, n_dense], kjt) -> logits [B]; `layout` is any layout module mapping a KJT
    to one [B, dim] vector per feature."""
    _pairs: torch.Tensor

    def __init__(self, layout: nn.Module, feature_names: list[str], dim: int, num_dense: int,
                 bottom_mlp: list[int], top_mlp: list[int]) -> None:
        super().__init__()
        self.layout = layout
        self.feature_names = list(feature_names)
        self.bottom = mlp(num_dense, [*bottom_mlp, dim])
        vectors = len(self.feature_names) + 1
        rows, cols = torch.triu_indices(vectors, vectors, offset=1)
        # Flat positions of the upper triangle: index_select's backward is a cheap index_add,
        # unlike the two-tensor advanced indexing it replaces.
        self.register_buffer("_pairs", rows * vectors + cols, persistent=False)
        self.top = mlp(dim + rows.numel(), [*top_mlp, 1], final_activation=False)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        embedded = self.layout(kjt)
        bottom = self.bottom(dense)
        stacked = torch.stack([bottom] + [embedded[n] for n in self.feature_names], dim=1)
        dots = torch.bmm(stacked, stacked.transpose(1, 2)).flatten(1).index_select(1, self._pairs)
        return self.top(torch.cat([bottom, dots], dim=1)).squeeze(1)
