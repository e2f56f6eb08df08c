"""A gloo rank for the metrics test; kept apart so spawned processes import little."""

from __future__ import annotations

import socket

import numpy as np
import torch
import torch.distributed as dist

from plexrec.training.metrics import BinaryEvaluator, gather_1d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gather_worker(rank: int, port: int, logits: np.ndarray, labels: np.ndarray,
                  out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    cut = 700  # uneven shards: 700 and 1300 rows
    part = slice(0, cut) if rank == 0 else slice(cut, None)
    ev = BinaryEvaluator()
    ev.update(torch.from_numpy(logits[part]), torch.from_numpy(labels[part]))
    metrics = ev.compute()
    gathered = gather_1d(torch.arange(3 + rank, dtype=torch.float32))
    out[rank] = (metrics, gathered.tolist())
    dist.destroy_process_group()
