"""Intra-op threads per training process: `[train] threads`, or the cores this process may run
on divided by the training processes on its node (torchrun's LOCAL_WORLD_SIZE), so that N
processes on N cores do not each start N OpenMP threads and fight over the cores."""

from __future__ import annotations

import os

import torch


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def threads_per_process(configured: int, local_processes: int) -> int:
    if configured > 0:
        return configured
    return max(1, available_cores() // max(1, local_processes))


def apply_threads(configured: int, local_processes: int) -> int:
    """Sets torch's intra-op threads (OpenMP's own count is fixed at process start: the launcher
    passes the same number as OMP_NUM_THREADS) and returns it."""
    threads = threads_per_process(configured, local_processes)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads
