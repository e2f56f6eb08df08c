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

import math
from collections.abc import Sequence

import numpy as np
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
from plexrec.models.regularization import L2Grad, embedding_l2

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
                 device: torch.device | str | None = None, id_l2: float = 0.0) -> None:
        super().__init__()
        self.feature_names = [s.name for s in specs]
        self.id_l2 = id_l2
        if id_l2 > 0:
            for s in specs:
                if s.counts is None:
                    raise ValueError(f"first-order id_l2 needs the training counts of {s.name}")
                counts = torch.tensor(np.asarray(s.counts), dtype=torch.float64)
                self.register_buffer(f"per_pass_{s.name}",
                                     (counts.sum() / counts.clamp(min=1)).float()
                                     .to(dense_device(device)), persistent=False)
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
        if self.training and self.id_l2 > 0:
            pooled = {f: _per_id_l2(pooled[f], kjt[f].values(), kjt[f].lengths(),
                                    getattr(self, f"per_pass_{f}"), self.id_l2)
                      for f in self.feature_names}
        weights = torch.stack([pooled[f].sum(dim=1) for f in self.feature_names], dim=1)
        if self.any_mean:
            lengths = self.bag_lengths(kjt).t()
            divisor = torch.where(self.mean, lengths.clamp(min=1), torch.ones_like(lengths))
            weights = weights / divisor.to(weights.dtype)
        logit = weights.sum(dim=1)
        if self.dense is not None:
            logit = logit + self.dense(dense).squeeze(1)
        return logit


def _per_id_l2(pooled: torch.Tensor, values: torch.Tensor, lengths: torch.Tensor,
               per_pass: torch.Tensor, l2: float) -> torch.Tensor:
    """`pooled` [B, w] with the gradient of a logistic regression's L2, `l2 * w**2 / 2` per id
    per pass over the data, attached: an id seen n times in N rows appears in a batch of B
    rows n·B/N times on average, so each appearance adds `l2 · N / (n·B) · w`. Rare ids shrink
    as much per pass as common ones, unlike a penalty per appearance."""
    rows = torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device),
                                   lengths.long())
    scale = torch.zeros(lengths.numel(), dtype=pooled.dtype, device=pooled.device)
    scale.index_add_(0, rows, per_pass[values].to(pooled.dtype))
    return L2Grad.apply(pooled, (scale * (l2 / max(lengths.numel(), 1))).unsqueeze(1))


torch.fx.wrap("_per_id_l2")


class WithFirstOrder(nn.Module):
    """A ranking model's logit plus the first-order term, for any model and layout."""

    def __init__(self, model: nn.Module, first_order: FirstOrder) -> None:
        super().__init__()
        self.model = model
        self.first_order = first_order
        self.first_order_only = False

    def fit_first_order_only(self, on: bool) -> None:
        """While on, the logit is the first-order term alone. The deep part still runs, weighted
        by zero and in eval mode (no dropout, no embedding penalty), so that data-parallel
        training sees every parameter used: its gradients are zero and nothing in it moves."""
        self.first_order_only = on
        self.train(self.training)

    @torch.no_grad()
    def start_from_prior(self, positive_rate: float) -> None:
        """Before the term is fitted alone: its linear part at the training rows' log-odds
        (a bias learnt at the dense rate would take thousands of steps, and the per-id weights
        would absorb it meanwhile), and the ranking model's output layer at zero, so that the
        sum starts as the term's fit and the deep part learns what the fit leaves."""
        output = [m for m in self.model.modules()
                  if isinstance(m, nn.Linear) and m.out_features == 1]
        if not output:
            raise ValueError(f"{type(self.model).__name__} has no output layer of width 1")
        output[-1].weight.zero_()
        if output[-1].bias is not None:
            output[-1].bias.zero_()
        if self.first_order.dense is not None:
            rate = min(max(positive_rate, 1e-6), 1 - 1e-6)
            self.first_order.dense.weight.zero_()
            self.first_order.dense.bias.fill_(math.log(rate / (1 - rate)))

    def train(self, mode: bool = True) -> WithFirstOrder:
        super().train(mode)
        if self.first_order_only:
            self.model.train(False)
        return self

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        if self.first_order_only:
            return self.first_order(dense, kjt) + 0.0 * self.model(dense, kjt)
        return self.model(dense, kjt) + self.first_order(dense, kjt)
