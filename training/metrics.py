"""Binary-classification metrics over the whole evaluation set: every rank's logits and labels are
gathered first, so AUC is exact (a mean of per-rank AUCs is not the AUC of the union)."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_auroc


def gather_1d(t: torch.Tensor) -> torch.Tensor:
    """All ranks' 1-D tensors concatenated in rank order (ranks may hold different lengths)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    world = dist.get_world_size()
    if dist.get_backend() == "nccl":
        t = t.to(torch.device("cuda", torch.cuda.current_device()))
    size = torch.tensor([t.numel()], dtype=torch.long, device=t.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=t.dtype, device=t.device)
    padded[: t.numel()] = t
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)]).cpu()


def binary_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """AUC, log loss, calibration (mean prediction / mean label) and normalized entropy (log loss
    divided by the entropy of the base rate) of one set of logits against 0/1 labels."""
    logits = logits.detach().double().flatten()
    labels = labels.detach().double().flatten()
    if logits.numel() == 0:
        raise ValueError("no examples to evaluate")
    probs = torch.sigmoid(logits)
    logloss = float(F.binary_cross_entropy_with_logits(logits, labels))
    rate = float(labels.mean())
    if 0.0 < rate < 1.0:
        base = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
        auc = float(binary_auroc(probs, labels.long()))
        ne = logloss / base
    else:
        auc, ne = float("nan"), float("nan")
    calibration = float(probs.mean()) / rate if rate > 0 else float("nan")
    return {"auc": auc, "logloss": logloss, "calibration": calibration, "ne": ne,
            "examples": float(labels.numel())}


class BinaryEvaluator:
    """Collects logits and labels batch by batch; `compute` gathers them over all ranks."""

    def __init__(self) -> None:
        self._logits: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self._logits.append(logits.detach().float().flatten().cpu())
        self._labels.append(labels.detach().float().flatten().cpu())

    def compute(self) -> dict[str, float]:
        logits = torch.cat(self._logits) if self._logits else torch.zeros(0)
        labels = torch.cat(self._labels) if self._labels else torch.zeros(0)
        return binary_metrics(gather_1d(logits), gather_1d(labels))
