"""Metrics against sklearn on known arrays, and the cross-rank gather with uneven shards."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from sklearn.metrics import log_loss, roc_auc_score

from plexrec.training.metrics import BinaryEvaluator, binary_metrics
from tests.training.rank_worker import free_port, gather_worker


def _arrays(n: int = 2000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.25).astype(np.float32)
    logits = (rng.normal(size=n) + 1.2 * labels - 1.0).astype(np.float32)
    return logits, labels


def test_binary_metrics_agree_with_sklearn() -> None:
    logits, labels = _arrays()
    probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
    got = binary_metrics(torch.from_numpy(logits), torch.from_numpy(labels))
    assert got["auc"] == pytest.approx(roc_auc_score(labels, probs), abs=1e-6)
    assert got["logloss"] == pytest.approx(log_loss(labels, probs), abs=1e-6)
    rate = labels.mean()
    assert got["calibration"] == pytest.approx(probs.mean() / rate, rel=1e-6)
    entropy = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
    assert got["ne"] == pytest.approx(log_loss(labels, probs) / entropy, rel=1e-6)
    assert got["examples"] == len(labels)


def test_known_small_case() -> None:
    got = binary_metrics(torch.tensor([2.0, -1.0, 0.5, -3.0]), torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert got["auc"] == pytest.approx(0.5)


def test_evaluator_accumulates_batches_in_one_process() -> None:
    logits, labels = _arrays(300)
    ev = BinaryEvaluator()
    for i in range(0, 300, 64):
        ev.update(torch.from_numpy(logits[i:i + 64]), torch.from_numpy(labels[i:i + 64]))
    probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
    assert ev.compute()["auc"] == pytest.approx(roc_auc_score(labels, probs), abs=1e-6)


@pytest.mark.slow
def test_metrics_over_two_ranks_equal_metrics_of_the_union() -> None:
    logits, labels = _arrays()
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(gather_worker, args=(free_port(), logits, labels, out), nprocs=2, join=True)
        results = dict(out)
    whole = binary_metrics(torch.from_numpy(logits), torch.from_numpy(labels))
    for rank in (0, 1):
        metrics, gathered = results[rank]
        assert metrics["auc"] == pytest.approx(whole["auc"], abs=1e-9)
        assert metrics["logloss"] == pytest.approx(whole["logloss"], abs=1e-9)
        assert metrics["examples"] == 2000
        assert gathered == [0, 1, 2, 0, 1, 2, 3]
