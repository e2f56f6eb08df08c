"""L2 on the embeddings a batch looks up, as a gradient: the forward pass is untouched, and the
backward pass adds the gradient of `l2 * sum(e ** 2) / batch` to every looked-up vector, so the
fused embedding optimizer applies it to exactly the rows that were read. (FBGEMM's own
weight_decay is ignored by the CPU row-wise Adagrad kernel of fbgemm-gpu-cpu 1.8, measured,
so the penalty is applied here, the same on every device.)"""

from __future__ import annotations

from typing import Any

import torch


class L2Grad(torch.autograd.Function):
    """Identity forward; backward adds `scale * x` to the gradient (`scale` a float, or a
    tensor broadcasting against `x`, e.g. one scale per row as [B, 1])."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad + ctx.scale * x, None


def _with_l2(vector: torch.Tensor, l2: float) -> torch.Tensor:
    return L2Grad.apply(vector, 2.0 * l2 / max(vector.shape[0], 1))


# One opaque call in a traced graph (TorchRec's train pipeline traces the models with torch.fx).
torch.fx.wrap("_with_l2")


def embedding_l2(vectors: dict[str, torch.Tensor], l2: float, training: bool
                 ) -> dict[str, torch.Tensor]:
    """`vectors` ([B, d] per feature) with the L2 penalty's gradient attached when training."""
    if not training or l2 <= 0:
        return vectors
    return {name: _with_l2(v, l2) for name, v in vectors.items()}
