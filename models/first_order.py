"""The first-order (wide) term of Wide & Deep and DeepFM: one learned scalar per id of every
sparse feature plus a linear map of the dense features, added to a ranking model's logit. It
holds at least what a logistic regression on the same ids holds, so the deep part only has to
learn the interactions.

The scalars are TorchRec tables (`w_<feature>`), placed by the planner like the layout's tables,
whatever the layout. TorchRec's sharded kernels need widths divisible by 4, so each id's weight is
the sum of a row of 4. They start at zero, and the trainer gives them their own
fused learning rate and L2 (`[optim] first_order_lr`, `first_order_l2`): per-id weights on few
rows overfit at the rate the embedding vectors need (measured on Criteo-10k)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

from plexrec.models.layouts.base import (
    BagLengths,
    KeySelect,
    SparseFeatureSpec,
    TableReport,
    dense_device,
    table_report,
)
from plexrec.models.regularization import embedding_l2

TABLE_PREFIX = "w_"
WIDTH = 4


def first_order_tables(specs: Sequence[SparseFeatureSpec]) -> list[EmbeddingBagConfig]:
    return [EmbeddingBagConfig(name=f"{TABLE_PREFIX}{s.name}", num_embeddings=s.cardinality,
                               embedding_dim=WIDTH, feature_names=[s.name], pooling=PoolingType.SUM,
                               weight_init_min=0.0, weight_init_max=0.0)
            for s in specs]


def first_order_report(specs: Sequence[SparseFeatureSpec]) -> list[TableReport]:
    return [table_report(t.name, t.num_embeddings, WIDTH, "first-order weights")
            for t in first_order_tables(specs)]


class FirstOrder(nn.Module):
    """forward(dense [B, n_dense], kjt) -> [B]: the sum of the ids' scalars (divided by the bag
    length for mean-pooled features) plus w·dense + b."""

    mean: torch.Tensor

    def __init__(self, specs: Sequence[SparseFeatureSpec], num_dense: int, l2: float = 0.0,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.feature_names = [s.name for s in specs]
        self.register_buffer("mean", torch.tensor([s.pooling == "mean" for s in specs],
                                                  device=dense_device(device)), persistent=False)
        self.any_mean = any(s.pooling == "mean" for s in specs)
        self.l2 = l2
        self.select = KeySelect(self.feature_names, "first-order term")
        self.bag_lengths = BagLengths(self.select)
        self.ebc = EmbeddingBagCollection(tables=first_order_tables(specs),
                                          device=torch.device(device or "cpu"))
        self.dense = nn.Linear(num_dense, 1) if num_dense else None
        if self.dense is not None:
            nn.init.zeros_(self.dense.weight)
            nn.init.zeros_(self.dense.bias)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        tables = self.ebc(self.select(kjt)).to_dict()
        pooled = embedding_l2({f: tables[f] for f in self.feature_names}, self.l2, self.training)
        weights = torch.stack([pooled[f].sum(dim=1) for f in self.feature_names], dim=1)
        if self.any_mean:
            lengths = self.bag_lengths(kjt).t()
            divisor = torch.where(self.mean, lengths.clamp(min=1), torch.ones_like(lengths))
            weights = weights / divisor.to(weights.dtype)
        logit = weights.sum(dim=1)
        if self.dense is not None:
            logit = logit + self.dense(dense).squeeze(1)
        return logit


class WithFirstOrder(nn.Module):
    """A ranking model's logit plus the first-order term, for any model and layout."""

    def __init__(self, model: nn.Module, first_order: FirstOrder) -> None:
        super().__init__()
        self.model = model
        self.first_order = first_order

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        return self.model(dense, kjt) + self.first_order(dense, kjt)
