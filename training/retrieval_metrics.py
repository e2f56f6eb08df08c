"""Top-K retrieval metrics over the full item catalogue, and the leave-last-out split they use.

Definitions (binary relevance, one ranked list per user, averaged over evaluated users):
- Recall@K = |top-K ∩ held-out| / |held-out|.
- NDCG@K = DCG@K / IDCG@K with DCG@K = sum over hits at 1-based rank r of 1 / log2(r + 1) and
  IDCG@K the DCG of a perfect list (min(K, |held-out|) hits at ranks 1..).
Every item a user interacted with before the held-out positives (training rows of any rating,
and the validation positives for test) is removed from the ranking before taking the top K, so a
model is never rewarded (or punished) for re-recommending what the user already saw. A
low-rated item is never a target, so masking it changes nothing but the model's wasted slots:
the protocol implicit's `filter_already_liked_items` applies, the same for every model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

DEFAULT_KS = (10, 50, 100)


def recall_at_k(ranked: Sequence[int], relevant: set[int] | Sequence[int], k: int) -> float:
    """Share of the relevant items found in the first k of `ranked`."""
    relevant = set(relevant)
    if not relevant:
        raise ValueError("recall is undefined for a user without relevant items")
    return len(relevant.intersection(ranked[:k])) / len(relevant)


@dataclass(frozen=True)
class LeaveLastOut:
    """Each evaluated user's last positives by time are held out; everything else trains.

    Row arrays index the prepared rows (sorted); `train_pos[u]`, `val_pos[u]` and `test_pos[u]`
    are the item ids (cache ids) of user u's positives on each side (`test_pos` only for users
    with a held-out item); `train_seen[u]` the items of all of u's training rows, any label."""

    train_rows: np.ndarray
    val_rows: np.ndarray
    test_rows: np.ndarray
    train_pos: dict[int, np.ndarray]
    val_pos: dict[int, np.ndarray]
    test_pos: dict[int, np.ndarray]
    holdout: int
    train_seen: dict[int, np.ndarray] = field(default_factory=dict)


def leave_last_out(user_ids: np.ndarray, item_ids: np.ndarray, labels: np.ndarray,
                   time: np.ndarray | None, holdout: int = 5, val_holdout: int = 0
                   ) -> LeaveLastOut:
    """Per user with c positives: the last h = min(holdout, c // 2) by time are test, the
    v = min(val_holdout, (c - h) // 2) before them validation, the rest train.

    Taking at most half keeps at least as many training positives as held-out ones, so every user
    with two or more positives is evaluated. Ties in time keep file order (stable sort). Negative
    rows always stay in training: they carry no retrieval signal. Other users' later interactions
    stay in training too (the usual leave-last-out protocol, not a global time cut)."""
    if holdout < 1 or val_holdout < 0:
        raise ValueError(f"holdout must be >= 1 and val_holdout >= 0, got {holdout}, "
                         f"{val_holdout}")
    n = len(user_ids)
    order_key = time if time is not None else np.arange(n)
    pos = np.flatnonzero(labels > 0.5)
    pos = pos[np.lexsort((pos, order_key[pos], user_ids[pos]))]
    users, starts, counts = np.unique(user_ids[pos], return_index=True, return_counts=True)
    side = np.zeros(n, dtype=np.int8)
    train_pos: dict[int, np.ndarray] = {}
    val_pos: dict[int, np.ndarray] = {}
    test_pos: dict[int, np.ndarray] = {}
    for u, s, c in zip(users.tolist(), starts.tolist(), counts.tolist(), strict=True):
        rows = pos[s:s + c]
        h = min(holdout, c // 2)
        v = min(val_holdout, (c - h) // 2)
        side[rows[c - h:]] = 2
        side[rows[c - h - v:c - h]] = 1
        train_pos[u] = item_ids[rows[:c - h - v]]
        if v:
            val_pos[u] = item_ids[rows[c - h - v:c - h]]
        if h:
            test_pos[u] = item_ids[rows[c - h:]]
    train_rows = np.flatnonzero(side == 0)
    return LeaveLastOut(train_rows=train_rows, val_rows=np.flatnonzero(side == 1),
                        test_rows=np.flatnonzero(side == 2), train_pos=train_pos,
                        val_pos=val_pos, test_pos=test_pos, holdout=holdout,
                        train_seen=_items_by_user(user_ids[train_rows], item_ids[train_rows]))


def _items_by_user(users: np.ndarray, items: np.ndarray) -> dict[int, np.ndarray]:
    order = np.argsort(users, kind="stable")
    uniq, starts = np.unique(users[order], return_index=True)
    groups = np.split(items[order], starts[1:])
    return {int(u): np.unique(g) for u, g in zip(uniq.tolist(), groups, strict=True)}


def seen_before_val(split: LeaveLastOut) -> dict[int, np.ndarray]:
    """What a user had interacted with before the validation items: every training row (any
    label) and the training positives, removed from the validation ranking."""
    users = set(split.train_pos) | set(split.train_seen)
    empty = np.zeros(0, dtype=np.int64)
    return {u: np.union1d(split.train_pos.get(u, empty), split.train_seen.get(u, empty))
            for u in users}


def seen_before_test(split: LeaveLastOut) -> dict[int, np.ndarray]:
    """What a user had interacted with before the test items: every training row (any label)
    and the validation positives, all removed from the test ranking."""
    empty = np.zeros(0, dtype=np.int64)
    return {u: np.union1d(seen, split.val_pos.get(u, empty))
            for u, seen in seen_before_val(split).items()}


def evaluate_topk(score_users: Callable[[np.ndarray], torch.Tensor],
                  targets: dict[int, np.ndarray], seen: dict[int, np.ndarray],
                  candidates: np.ndarray, ks: Sequence[int] = DEFAULT_KS,
                  batch_size: int = 256) -> dict[str, float]:
    """Recall@K and NDCG@K averaged over the users of `targets` (user -> held-out item ids);
    each user's `seen` items are removed from the ranking first.

    `score_users(users)` returns scores [len(users), len(candidates)] for the candidate item ids
    (cache ids, usually 1..V: all items but the out-of-vocabulary row). A held-out item that is not
    a candidate still counts in the denominator, so it can only lower the figures."""
    ks = sorted(set(ks))
    kmax = min(max(ks), len(candidates))
    col_of = np.full(int(candidates.max()) + 1, -1, dtype=np.int64)
    col_of[candidates] = np.arange(len(candidates))
    users = np.array(sorted(targets), dtype=np.int64)
    discounts = 1.0 / np.log2(np.arange(2, kmax + 2))
    sums = {f"recall@{k}": 0.0 for k in ks} | {f"ndcg@{k}": 0.0 for k in ks}
    for start in range(0, len(users), batch_size):
        chunk = users[start:start + batch_size]
        scores = score_users(chunk).detach().float().clone()
        for row, u in enumerate(chunk.tolist()):
            cols = col_of[_in_range(seen.get(u, np.zeros(0, np.int64)), col_of)]
            scores[row, torch.from_numpy(cols[cols >= 0])] = -torch.inf
        top = torch.topk(scores, kmax, dim=1).indices.numpy()
        top_items = candidates[top]
        for row, u in enumerate(chunk.tolist()):
            relevant = targets[u]
            hits = np.isin(top_items[row], relevant)
            n_rel = len(np.unique(relevant))
            for k in ks:
                sums[f"recall@{k}"] += hits[:k].sum() / n_rel
                idcg = discounts[:min(k, n_rel)].sum()
                sums[f"ndcg@{k}"] += (discounts[:k] * hits[:k]).sum() / idcg
    out = {name: float(total / len(users)) for name, total in sums.items()}
    out["users"] = len(users)
    return out


def _in_range(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    return ids[(ids >= 0) & (ids < len(table))]
