"""Is a test-AUC gap between two models on one test set real? A paired bootstrap over the test
rows (both models scored on the same resampled rows) gives the gap's 95% interval; on a few
thousand rows the interval is wide, and a figure inside it is not a difference.

`run_test_scores(run_dir)` re-scores a finished plexrec CTR run's test rows from the weights its
test metrics came from (the best validation checkpoint), so the bench can pair it with a
baseline's predictions on the same rows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUC with ties counted half (as sklearn's roc_auc_score)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def mean_auc(labels: np.ndarray, runs: Sequence[np.ndarray]) -> float:
    return float(np.mean([auc(labels, scores) for scores in runs]))


def paired_bootstrap(labels: np.ndarray, a: Sequence[np.ndarray], b: Sequence[np.ndarray],
                     rounds: int = 1000, seed: int = 0) -> dict[str, float]:
    """The gap the bench reports, mean AUC of `a`'s runs (seeds) minus mean AUC of `b`'s, on
    the test rows, with its 2.5% / 97.5% quantiles over resamples of the rows."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    diffs = []
    for _ in range(rounds):
        rows = rng.integers(0, n, n)
        y = labels[rows]
        if y.min() == y.max():
            continue
        diffs.append(mean_auc(y, [s[rows] for s in a]) - mean_auc(y, [s[rows] for s in b]))
    low, high = np.quantile(diffs, [0.025, 0.975])
    return {"diff": mean_auc(labels, a) - mean_auc(labels, b), "low": float(low),
            "high": float(high)}


def run_test_scores(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels, logits) of a finished CTR run on its own test rows, in row order."""
    import torch

    from plexrec.features.cache import PreparedData
    from plexrec.training.checkpoint import load_unsharded, model_checkpoint
    from plexrec.training.config import parse_config
    from plexrec.training.tasks import task_for
    from plexrec.training.trainer import RunSpec, training_view

    spec = RunSpec.load(run_dir / "spec.json")
    cfg = parse_config(spec.config, spec.source)
    cache = PreparedData.open(spec.prepared_dir)
    task = task_for(cfg, cache)
    data, splits = training_view(cfg, task, cache)
    model = task.build(cfg, data, "cpu").module
    checkpoint = model_checkpoint(run_dir / "checkpoints")
    if checkpoint is None:
        raise SystemExit(f"{run_dir}: no checkpoint to score")
    load_unsharded(checkpoint, model)
    model.eval()
    labels, logits = [], []
    loader = task.loader(data, splits.test, batch_size=4096, shuffle=False, seed=0, rank=0,
                         world_size=1, drop_last=False)
    with torch.no_grad():
        for batch in loader:
            logits.append(task.forward(model, batch).numpy())
            labels.append(batch.labels.numpy())
    return np.concatenate(labels).astype(np.int64), np.concatenate(logits)
