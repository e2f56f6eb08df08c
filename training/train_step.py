"""One optimisation step's model: the task's model with its loss, `forward(batch) -> (loss,
(loss, output))`, the shape TorchRec's train pipelines call. DMP shards this module, so checkpoint
keys carry the `model.` prefix; `unwrap` gives the task's model back for evaluation and export."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

PREFIX = "model."


class TaskLoss(nn.Module):
    """The task's loss as a module without parameters: one opaque node when torch.fx traces the
    step (the pipeline traces only to find which batch fields feed the sharded tables, and a
    task's loss may branch on tensor sizes)."""

    def __init__(self, task: Any) -> None:
        super().__init__()
        self.task = task

    def forward(self, batch: Any, output: Any) -> torch.Tensor:
        loss: torch.Tensor = self.task.loss(batch, output)
        return loss


class TrainStep(nn.Module):
    def __init__(self, model: nn.Module, task: Any) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.loss = TaskLoss(task)

    def forward(self, batch: Any) -> tuple[torch.Tensor, tuple[torch.Tensor, Any]]:
        output = self.task.forward(self.model, batch)
        loss = self.loss(batch, output)
        return loss, (loss.detach(), output)


def unwrap(model: nn.Module) -> nn.Module:
    """The task's model inside a (DMP-sharded) TrainStep: what `Task.forward` expects."""
    inner = getattr(model, "module", model)
    return inner.model if isinstance(inner, TrainStep) else model
