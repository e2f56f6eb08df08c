"""Retrieval baselines trained on the same leave-last-out split as the two-tower model.

- Popularity: every user gets the items with the most training positives.
- Matrix factorisation: one embedding per user id and per item id (no side features, no MLP),
  trained in plain torch with the very same in-batch sampled softmax, log-Q correction and
  temperature as the two-tower model, so the gap between them is what features and towers add.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from plexrec.models.two_tower import log_q_from_counts, sampled_softmax_loss

Scorer = Callable[[np.ndarray], torch.Tensor]


def popularity_scorer(train_item_ids: np.ndarray, candidates: np.ndarray) -> Scorer:
    """Scores = training positive count of each candidate item, the same for every user."""
    counts = np.bincount(train_item_ids, minlength=int(candidates.max()) + 1)
    row = torch.from_numpy(counts[candidates].astype(np.float32))

    def score(users: np.ndarray) -> torch.Tensor:
        return row.unsqueeze(0).expand(len(users), -1)

    return score


@dataclass(frozen=True)
class MFConfig:
    """Defaults picked on MovieLens-100K validation positives (bench/bench_retrieval_quality.py)."""

    dim: int = 64
    epochs: int = 10
    batch_size: int = 512
    lr: float = 0.01
    temperature: float = 0.2
    log_q: bool = True
    weight_decay: float = 0.0
    seed: int = 0


class MatrixFactorization(nn.Module):
    def __init__(self, num_users: int, num_items: int, dim: int) -> None:
        super().__init__()
        self.users = nn.Embedding(num_users, dim)
        self.items = nn.Embedding(num_items, dim)
        nn.init.normal_(self.users.weight, std=0.1)
        nn.init.normal_(self.items.weight, std=0.1)

    def user_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.users(ids), dim=1)

    def item_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.items(ids), dim=1)


def train_mf(user_ids: np.ndarray, item_ids: np.ndarray, num_users: int, num_items: int,
             config: MFConfig = MFConfig()) -> tuple[MatrixFactorization, list[float]]:
    """Trains on (user, item) positive pairs; returns the model and the mean loss per epoch."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = MatrixFactorization(num_users, num_items, config.dim)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    log_q = (log_q_from_counts(np.bincount(item_ids, minlength=num_items))
             if config.log_q else None)
    users_t = torch.from_numpy(np.asarray(user_ids, dtype=np.int64))
    items_t = torch.from_numpy(np.asarray(item_ids, dtype=np.int64))
    history = []
    n = len(users_t)
    for _ in range(config.epochs):
        order = torch.from_numpy(rng.permutation(n))
        losses = []
        for start in range(0, n - config.batch_size + 1, config.batch_size):
            idx = order[start:start + config.batch_size]
            u, i = users_t[idx], items_t[idx]
            loss = sampled_softmax_loss(model.user_vectors(u), model.item_vectors(i), i, log_q,
                                        config.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        history.append(float(np.mean(losses)) if losses else float("nan"))
    return model, history


def mf_scorer(model: MatrixFactorization, candidates: np.ndarray) -> Scorer:
    with torch.no_grad():
        items = model.item_vectors(torch.from_numpy(candidates.astype(np.int64)))

    def score(users: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return model.user_vectors(torch.from_numpy(users.astype(np.int64))) @ items.T

    return score
