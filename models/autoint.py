"""AutoInt (Song et al., 2019): multi-head self-attention over the feature embeddings learns
which features interact, layer by layer, with residual connections; the attended fields,
flattened, give the logit (through an optional deep MLP). The dense features enter as one more
field, projected to the embedding width."""

from __future__ import annotations

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from plexrec.features.errors import ConfigError
from plexrec.models.dlrm import mlp
from plexrec.models.regularization import embedding_l2


class _InteractingLayer(nn.Module):
    """One AutoInt layer: ReLU(multi-head attention(x) + W_res x) over [B, fields, dim]."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.residual = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attention(x, x, x, need_weights=False)
        return torch.relu(attended + self.residual(x))


class AutoInt(nn.Module):
    """forward(dense [B, n_dense], kjt) -> logits [B]."""

    def __init__(self, layout: nn.Module, feature_names: list[str], dim: int, num_dense: int,
                 layers: int, heads: int, deep_mlp: list[int], dropout: float = 0.0,
                 embedding_l2: float = 0.0) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise ConfigError(f"[model] attention_heads: {heads} does not divide the embedding "
                              f"width {dim}")
        if layers < 1:
            raise ConfigError(f"[model] attention_layers must be >= 1, got {layers}")
        self.layout = layout
        self.feature_names = list(feature_names)
        self.embedding_l2 = embedding_l2
        self.dense_field = nn.Linear(num_dense, dim) if num_dense else None
        self.interacting = nn.Sequential(*[_InteractingLayer(dim, heads, dropout)
                                           for _ in range(layers)])
        width = dim * (len(self.feature_names) + (1 if num_dense else 0))
        self.deep = mlp(width, deep_mlp, dropout=dropout) if deep_mlp else nn.Identity()
        self.head = nn.Linear(deep_mlp[-1] if deep_mlp else width, 1)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        embedded = embedding_l2(self.layout(kjt), self.embedding_l2, self.training)
        fields = [embedded[n] for n in self.feature_names]
        if self.dense_field is not None:
            fields.append(self.dense_field(dense))
        x = self.interacting(torch.stack(fields, dim=1))
        return self.head(self.deep(x.flatten(1))).squeeze(1)
