"""Known third-party warnings that a plexrec user can do nothing about, silenced once per process
(the CLI and each torchrun worker call `silence`). Each entry says why it is harmless here, so
a new warning still shows."""

from __future__ import annotations

import logging
import warnings

# (category, message regex, why it is harmless for plexrec)
KNOWN: tuple[tuple[type[Warning], str, str], ...] = (
    (FutureWarning, r"HeuristicalStorageReservation is known to cause issues",
     "the planner's default reservation; plexrec tables are far below device memory"),
    (FutureWarning, r"`broadcast_buffers` is deprecated",
     "raised inside TorchRec's DistributedModelParallel, not by a plexrec argument"),
    (UserWarning, r"torch.distributed is disabled, unavailable or uninitialized",
     "export and evaluation load sharded checkpoints in one process on purpose"),
    (UserWarning, r"fbgemm::dense_embedding_codegen_lookup_function: an autograd kernel",
     "data_parallel tables on CPU (torch 2.13, fbgemm-gpu-cpu 1.8): checked that their "
     "gradients arrive in full (one row per looked-up id, every column)"),
)
# Loggers that announce a deprecation on every run, at WARNING.
QUIET_LOGGERS = ("torch.fx._symbolic_trace",)


def silence() -> None:
    for category, message, _why in KNOWN:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
