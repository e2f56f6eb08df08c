"""The training steps of one epoch, through TorchRec's `TrainPipelineSparseDist` where the model
allows it: batch i+1's input distribution (the KJT all-to-all and the layouts' id transforms)
starts before batch i's forward, and batch i+2 is fetched and copied meanwhile. With CUDA the copy
and the distribution run on their own streams; on the CPU the overlap is what gloo's asynchronous
collectives give. The plain loop remains for `[train] pipeline = false` and for models the
pipeline cannot trace (the reason is logged once)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

StepResult = tuple[float, torch.Tensor]


class Steps:
    """`next()` runs one optimisation step and returns (lr factor, loss), or None when the
    epoch's batches are used up. `pause()` before anything else calls the model (evaluation,
    the final test): the pipeline is detached and its fetched but untrained batches are kept,
    so the next step trains exactly the batch the plain loop would."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                 set_lr: Callable[[], float], plain_step: Callable[[Any], StepResult],
                 pipelined: bool) -> None:
        self.model = model
        self.optimizer = optimizer
        self.device = device
        self.set_lr = set_lr
        self.plain_step = plain_step
        self.pipelined = pipelined
        self.pipelined_modules: list[str] = []
        self._pipe: Any = None
        self._source: Iterator[Any] = iter(())

    def start(self, batches: Iterator[Any]) -> None:
        self.pause()
        self._source = batches

    def next(self) -> StepResult | None:
        if not self.pipelined:
            batch = next(self._source, None)
            return None if batch is None else self.plain_step(batch)
        if self._pipe is None:
            self._pipe = self._new_pipeline()
        factor = self.set_lr()
        try:
            loss, _ = self._pipe.progress(self._source)
        except StopIteration:
            self._pipe.detach()
            self._pipe = None
            return None
        except torch.fx.proxy.TraceError as e:
            self._fall_back(f"the model does not trace ({e})")
            return self.next()
        if not self.pipelined_modules:
            self.pipelined_modules = sorted(getattr(m.forward, "name", type(m).__name__)
                                            for m in self._pipe._pipelined_modules)
            log.info("TorchRec train pipeline: input distribution of %s runs a batch ahead",
                     ", ".join(self.pipelined_modules) or "no module")
        return factor, loss

    def _fall_back(self, reason: str) -> None:
        self.pause()
        self.pipelined = False
        log.warning("training without TorchRec's train pipeline: %s", reason)

    def _new_pipeline(self) -> Any:
        from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

        return TrainPipelineSparseDist(self.model, self.optimizer, self.device,
                                       execute_all_batches=True, pipeline_postproc=True)

    def pause(self) -> None:
        if self._pipe is None:
            return
        pending = list(self._pipe.batches)
        self._pipe.detach()
        self._pipe = None
        self._source = itertools.chain(pending, self._source)
