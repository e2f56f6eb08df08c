"""Train a layout for a few steps under torchrec DistributedModelParallel on CPU gloo processes.

`run_dmp(jobs)` spawns the ranks once and runs every (layout kind, sharding type) job in them,
because starting torch + torchrec processes costs more than the training itself."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torchrec import KeyedJaggedTensor

from plexrec.models.layouts import SparseFeatureSpec, build_layout
from tests.models.layout_helpers import layout_config

CARDS = (5, 40, 300, 1000)
DIM = 8
BATCH = 32
STEPS = 25


def toy_specs() -> list[SparseFeatureSpec]:
    specs = []
    for i, card in enumerate(CARDS):
        counts = (10_000 / (np.arange(card) + 1) ** 1.2).astype(np.int64) + 1
        specs.append(SparseFeatureSpec(f"f{i}", card, counts, "mean" if i == 1 else "sum"))
    return specs


def toy_batch(seed: int) -> tuple[KeyedJaggedTensor, torch.Tensor]:
    """Feature f1 is multi-hot (0-3 ids per row); the label is learnable from f0 alone."""
    gen = torch.Generator().manual_seed(seed)
    lengths, values = [], []
    for i, card in enumerate(CARDS):
        lens = (torch.randint(0, 4, (BATCH,), generator=gen) if i == 1
                else torch.ones(BATCH, dtype=torch.int64))
        lengths.append(lens)
        values.append(torch.randint(0, card, (int(lens.sum()),), generator=gen))
    kjt = KeyedJaggedTensor(keys=[f"f{i}" for i in range(len(CARDS))],
                            values=torch.cat(values), lengths=torch.cat(lengths))
    labels = (values[0] < 2).float()
    return kjt, labels


class ToyRanker(nn.Module):
    def __init__(self, layout_module: nn.Module, features: int) -> None:
        super().__init__()
        self.layout = layout_module
        self.head = nn.Sequential(nn.Linear(features * DIM, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, kjt: KeyedJaggedTensor) -> tuple[torch.Tensor, list[int]]:
        out = self.layout(kjt)
        widths = [int(v.shape[1]) for v in out.values()]
        return self.head(torch.cat(list(out.values()), dim=1)).squeeze(1), widths


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job(kind: str, sharding: str, rank: int) -> dict[str, Any]:
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.planner.types import ParameterConstraints
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    torch.manual_seed(0)
    own = {"unified": {"probes": 2, "rows": 512}, "mixed_dim": {"blocks": 3},
           "qr": {"collisions": 8}}.get(kind, {})
    layout = build_layout(toy_specs(), layout_config(kind, dim=DIM, **own))
    model = ToyRanker(layout.module("meta"), len(CARDS))
    apply_optimizer_in_backward(torch.optim.SGD, model.layout.ebc.parameters(), {"lr": 0.5})
    constraints = {t.name: ParameterConstraints(sharding_types=[sharding], min_partition=4)
                   for t in layout.table_configs()}
    sharders = [EmbeddingBagCollectionSharder()]
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=dist.get_world_size(), compute_device="cpu"),
        constraints=constraints)
    plan = planner.collective_plan(model, sharders, dist.group.WORLD)
    dmp = DistributedModelParallel(model, device=torch.device("cpu"), plan=plan,
                                   sharders=sharders)
    table_plans = plan.plan["layout.ebc"].values()
    used = sorted({p.sharding_type for p in table_plans})
    shards = max(len(p.sharding_spec.shards) if p.sharding_spec else 0 for p in table_plans)
    dense = [p for _, p in in_backward_optimizer_filter(dmp.named_parameters())]
    dense_opt = torch.optim.SGD(dense, lr=0.5)
    kjt, labels = toy_batch(100 + rank)
    losses, widths = [], []
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(STEPS):
        logits, widths = dmp(kjt)
        loss = loss_fn(logits, labels)
        dense_opt.zero_grad()
        loss.backward()
        dense_opt.step()
        losses.append(float(loss.detach()))
    return {"kind": kind, "sharding": sharding, "used": used, "max_shards": shards, "losses": losses,
            "widths": widths, "dim": layout.dim}


def _worker(rank: int, world_size: int, port: int, jobs: list[tuple[str, str]],
            out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      GLOO_DEVICE_TRANSPORT="TCP", LOCAL_WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    results = [_job(kind, sharding, rank) for kind, sharding in jobs]
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    dist.barrier()
    # Tearing down gloo/DDP threads at interpreter exit now and then aborts the process
    # ("terminate called without an active exception"); all work is done, so leave at once.
    os._exit(0)


def run_dmp(jobs: list[tuple[str, str]], world_size: int = 2) -> list[list[dict[str, Any]]]:
    """Results per rank, one dict per job: sharding types the plan used, losses, output widths."""
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_worker, args=(world_size, _free_port(), jobs, out_dir), nprocs=world_size,
                 join=True)
        return [json.loads(Path(out_dir, f"rank{r}.json").read_text())
                for r in range(world_size)]
