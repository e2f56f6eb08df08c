"""An exponential moving average of the weights (Polyak averaging), `[train] ema_decay`.

Why: with a high embedding rate the weights at any one step are noisy, and which epoch a run
keeps varies with the seed; the average of the recent steps scores higher on validation and
varies less (measured on MovieLens, README "CTR models against the baselines"). Training steps
the live weights; validation, the best checkpoint and so test, the logged model and export read
the average.

Each rank averages the tensors it holds: its local shards of the sharded tables (views of the
weights the fused optimizer updates in place) and its replica of the dense weights, so the
average needs no collective. Its buffers ride in each rank's checkpoint extra, so a resumed run
continues the same average."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor


def local_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's floating-point state as this rank holds it, keyed by state_dict name (a
    sharded table's shards as `<name>#<i>`); each value shares storage with the model."""
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        if isinstance(value, ShardedTensor):
            for i, shard in enumerate(value.local_shards()):
                out[f"{key}#{i}"] = shard.tensor
        elif isinstance(value, torch.Tensor) and value.is_floating_point():
            out[key] = value
    return out


class WeightAverage:
    """`average = decay * average + (1 - decay) * live` after every optimisation step."""

    def __init__(self, model: nn.Module, decay: float,
                 state: dict[str, torch.Tensor] | None = None) -> None:
        self.decay = decay
        self.live = local_tensors(model)
        self.average = {k: v.detach().clone() for k, v in self.live.items()}
        if state is not None:
            self.load(state)

    @torch.no_grad()
    def update(self) -> None:
        for key, value in self.live.items():
            self.average[key].lerp_(value.detach(), 1.0 - self.decay)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the average inside the block and its live weights again after it."""
        with torch.no_grad():
            saved = {k: v.detach().clone() for k, v in self.live.items()}
            for key, value in self.live.items():
                value.copy_(self.average[key])
        try:
            yield
        finally:
            with torch.no_grad():
                for key, value in self.live.items():
                    value.copy_(saved[key])

    def state(self) -> dict[str, torch.Tensor]:
        return dict(self.average)

    def load(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.average):
            differing = sorted(set(self.average) ^ set(state))[:3]
            raise ValueError(f"weight average in the checkpoint does not match the model "
                             f"(differing tensors: {', '.join(differing)})")
        with torch.no_grad():
            for key, value in state.items():
                if value.shape != self.average[key].shape:
                    raise ValueError(f"weight average {key}: shape {tuple(value.shape)} in the "
                                     f"checkpoint, {tuple(self.average[key].shape)} in the model")
                self.average[key].copy_(value)
