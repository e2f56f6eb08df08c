import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from plexrec.training.retrieval_metrics import (
    evaluate_topk,
    leave_last_out,
    recall_at_k,
    seen_before_test,
    seen_before_val,
)


def ndcg_at_k(ranked: Sequence[int], relevant: set[int] | Sequence[int], k: int) -> float:
    """The reference, one user at a time: binary-relevance NDCG, normalised by the best list."""
    relevant = set(relevant)
    if not relevant:
        raise ValueError("NDCG is undefined for a user without relevant items")
    dcg = sum(1.0 / np.log2(r + 2) for r, item in enumerate(ranked[:k]) if item in relevant)
    idcg = sum(1.0 / np.log2(r + 2) for r in range(min(k, len(relevant))))
    return float(dcg / idcg)


def test_recall_counts_share_of_relevant_found():
    ranked = [7, 3, 9, 1, 5]
    assert recall_at_k(ranked, {3, 5, 8}, 2) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, {3, 5, 8}, 5) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, {4}, 5) == 0.0


def test_ndcg_matches_hand_computation():
    # hits at ranks 2 and 5 of three relevant items: DCG = 1/log2(3) + 1/log2(6),
    # IDCG@5 = 1 + 1/log2(3) + 1/log2(4).
    ranked = [7, 3, 9, 1, 5]
    dcg = 1 / math.log2(3) + 1 / math.log2(6)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, {3, 5, 8}, 5) == pytest.approx(dcg / idcg)
    # K = 2: only the rank-2 hit counts and the ideal list has 2 hits.
    assert ndcg_at_k(ranked, {3, 5, 8}, 2) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert ndcg_at_k([3, 5, 8], {3, 5, 8}, 3) == pytest.approx(1.0)


def test_metrics_reject_users_without_relevant_items():
    with pytest.raises(ValueError):
        recall_at_k([1, 2], set(), 1)
    with pytest.raises(ValueError):
        ndcg_at_k([1, 2], [], 1)


def test_evaluate_topk_excludes_seen_items_and_averages_users():
    candidates = np.array([1, 2, 3, 4, 5])
    # user 0 prefers 1 > 2 > 3 > 4 > 5 but has seen item 1; user 1 prefers 5 > 4 > ...
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])

    def score(users: np.ndarray) -> torch.Tensor:
        return scores[torch.from_numpy(users)]

    targets = {0: np.array([3]), 1: np.array([1, 4])}
    seen = {0: np.array([1]), 1: np.array([5])}
    out = evaluate_topk(score, targets, seen, candidates, ks=(1, 2))
    # user 0 ranks [2, 3, 4, 5]: item 3 at rank 2. user 1 ranks [4, 3, 2, 1]: item 4 at rank 1.
    assert out["recall@1"] == pytest.approx((0 + 1 / 2) / 2)
    assert out["recall@2"] == pytest.approx((1 + 1 / 2) / 2)
    assert out["ndcg@1"] == pytest.approx((0 + 1) / 2)
    assert out["ndcg@2"] == pytest.approx(
        ((1 / math.log2(3)) / 1 + 1 / (1 + 1 / math.log2(3))) / 2)
    assert out["users"] == 2
    hand = np.mean([recall_at_k([2, 3], {3}, 2), recall_at_k([4, 3], {1, 4}, 2)])
    assert out["recall@2"] == pytest.approx(hand)


def test_leave_last_out_holds_out_latest_positives_per_user():
    # user 1: positives at t = 1, 2, 3, 4 (items 10..13) and a negative at t = 5;
    # user 2: a single positive (not evaluated, stays in training).
    users = np.array([1, 1, 1, 1, 1, 2])
    items = np.array([12, 10, 13, 11, 14, 10])
    labels = np.array([1, 1, 1, 1, 0, 1], dtype=np.float32)
    time = np.array([3, 1, 4, 2, 5, 1])
    split = leave_last_out(users, items, labels, time, holdout=5)
    assert sorted(split.test_pos[1].tolist()) == [12, 13]  # min(5, 4 // 2) = 2 latest
    assert sorted(split.train_pos[1].tolist()) == [10, 11]
    assert 2 not in split.test_pos
    assert split.test_rows.tolist() == [0, 2]
    assert split.train_rows.tolist() == [1, 3, 4, 5]

    with_val = leave_last_out(users, items, labels, time, holdout=1, val_holdout=1)
    assert with_val.test_pos[1].tolist() == [13]
    assert with_val.val_pos[1].tolist() == [12]
    # Every earlier interaction is masked, the low-rated item 14 included (it can never be a
    # target, so masking it only frees a slot); validation is ranked before its own items.
    assert sorted(seen_before_test(with_val)[1].tolist()) == [10, 11, 12, 14]
    assert sorted(seen_before_val(with_val)[1].tolist()) == [10, 11, 14]
    assert sorted(with_val.train_seen[1].tolist()) == [10, 11, 14]
    assert with_val.val_rows.tolist() == [0]
