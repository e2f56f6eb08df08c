"""Entry point of one training process under torchrun (`python -m training.worker --spec FILE`),
or in-process for a single-process run. Picks gloo on CPU and NCCL on CUDA."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch.distributed as dist

from plexrec.features.errors import PlexrecError
from plexrec.features.logs import configure_logging
from plexrec.training import third_party_warnings
from plexrec.training.threads import apply_threads
from plexrec.training.trainer import EvalHook, RunSpec, Trainer


def _die_with_parent() -> None:
    """torchrun starts workers in their own sessions; if the agent is SIGKILLed they would train
    on as orphans, so ask the kernel to kill this process when its parent dies (Linux)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def backend_for(device: str) -> str:
    return "nccl" if device == "cuda" else "gloo"


def run_worker(spec: RunSpec, init_method: str | None = None,
               on_eval: EvalHook | None = None) -> dict[str, Any] | None:
    """Initialises the process group (from torchrun's env, or `init_method` for one process),
    trains, and tears the group down."""
    third_party_warnings.silence()
    train = spec.config.get("train", {})
    threads = apply_threads(int(train.get("threads", 0)),
                            int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    logging.getLogger(__name__).info("%d intra-op thread(s) per process", threads)
    backend = backend_for(train.get("device", "cpu"))
    if init_method:
        dist.init_process_group(backend, init_method=init_method, rank=0, world_size=1,
                                timeout=timedelta(minutes=30))
    else:
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
    try:
        return Trainer(spec, on_eval).run()
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plexrec.training.worker")
    parser.add_argument("--spec", required=True, type=Path)
    args = parser.parse_args(argv)
    _die_with_parent()
    rank = int(os.environ.get("RANK", "0"))
    configure_logging(prefix=f"[rank{rank}] ",
                      level=logging.INFO if rank == 0 else logging.WARNING)
    try:
        run_worker(RunSpec.load(args.spec))
    except PlexrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
