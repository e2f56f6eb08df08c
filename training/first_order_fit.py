"""The first-order term fitted alone before the deep part trains (`[train] first_order_epochs`).

Why: trained jointly, every deep CTR model here peaks at the end of its first epoch and overfits
in the second (measured on 1M synthetic rows and on Criteo-10k), so its per-id weights get one
pass of SGD, while a logistic regression fitted to convergence on the same ids scores higher.
Fitting the term alone first, for as many epochs as its validation AUC rises, starts the model
from a logistic regression's fit. The deep output starts at zero (`WithFirstOrder`), so the
whole model's first validation equals that fit, and the best-checkpoint rule can only keep it or
improve on it. The term's row-wise Adagrad state carries over, so its rate has already decayed
when the deep part joins."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plexrec.models.first_order import WithFirstOrder
from plexrec.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from plexrec.training.train_step import unwrap

log = logging.getLogger(__name__)

Evaluate = Callable[[Any], dict[str, float]]


@dataclass
class FirstOrderFit:
    """What the fit did: the epochs run, the best one (1-based) and its validation metrics."""

    epochs_run: int = 0
    best_epoch: int = 0
    val: list[dict[str, float]] = field(default_factory=list)

    def summary(self, metric: str) -> dict[str, Any]:
        best = (self.val[self.best_epoch - 1][metric]
                if 0 < self.best_epoch <= len(self.val) else None)
        return {"first_order_epochs_run": self.epochs_run,
                "first_order_best_epoch": self.best_epoch,
                f"first_order_val_{metric}": best}


def with_first_order(model: nn.Module) -> WithFirstOrder | None:
    """The `WithFirstOrder` inside a (DMP-sharded) TrainStep, or None for a model without the
    term."""
    inner = unwrap(model)
    return inner if isinstance(inner, WithFirstOrder) else None


def fit_first_order(model: nn.Module, task: Any, loaders: tuple[Any, Any], device: Any,
                    evaluate: Evaluate, *, dense_lr: float, epochs: int, patience: int,
                    checkpoint_dir: Path, on_epoch: Callable[[int, float], None],
                    select: bool = True) -> FirstOrderFit:
    """Trains only the first-order term of `model` (a DMP-wrapped TrainStep over a
    `WithFirstOrder`) for up to `epochs` passes, stops after `patience` passes without a better
    validation metric, and leaves the best pass's weights in `model`. The term's tables update in
    backward at the fused optimizer's current rates, its linear part with its own Adam at
    `dense_lr`; nothing else moves. `select=False` (a final fit, whose validation rows train
    too) runs exactly `epochs` passes and keeps the last. Collective: every rank calls it."""
    train_loader, val_loader = loaders
    combined = with_first_order(model)
    if combined is None:
        raise ValueError("fit_first_order needs a model with a first-order term")
    linear = combined.first_order.dense
    optimizer = torch.optim.Adam(linear.parameters(), lr=dense_lr) if linear is not None else None
    metric = task.primary_metric
    fit, best, bad = FirstOrderFit(), float("-inf"), 0
    combined.fit_first_order_only(True)
    try:
        for epoch in range(epochs):
            train_loader.set_epoch(epoch)
            train_loader.skip(0)
            for batch in train_loader:
                loss, _ = model(task.to_device(batch, device))
                loss.backward()
                if optimizer is not None:
                    optimizer.step()
                model.zero_grad(set_to_none=True)
            if not select:
                fit.epochs_run = fit.best_epoch = epoch + 1
                continue
            metrics = evaluate(val_loader)
            fit.epochs_run, fit.val = epoch + 1, [*fit.val, metrics]
            on_epoch(epoch + 1, metrics[metric])
            if metrics[metric] > best:
                best, bad, fit.best_epoch = metrics[metric], 0, epoch + 1
                save_checkpoint(checkpoint_dir, epoch + 1, {"model": model.state_dict()}, {},
                                keep=1)
            else:
                bad += 1
                if bad >= patience:
                    break
    finally:
        combined.fit_first_order_only(False)
    chosen = latest_checkpoint(checkpoint_dir)
    if chosen is not None and fit.best_epoch != fit.epochs_run:
        state = {"model": model.state_dict()}
        load_checkpoint(chosen, state)
        model.load_state_dict(state["model"])
    if select:
        log.info("first-order term alone: best validation %s %.5f at epoch %d of %d", metric,
                 best, fit.best_epoch, fit.epochs_run)
    return fit


def remove_fit_checkpoints(checkpoint_dir: Path, rank: int) -> None:
    if rank == 0 and checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)
