"""Placing embedding tables: the planner (with per-table sharding constraints) and the
DistributedModelParallel wrapper. Constraints are checked against what the device offers before
any process starts, because the planner's own failure deep inside a worker is hard to read."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torchrec import EmbeddingBagCollection
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.types import ShardingPlan
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

from plexrec.features.errors import ConfigError
from plexrec.models.first_order import FirstOrder
from plexrec.training.config import RunConfig

for _name in ("torchrec.distributed.planner.types",
              "torchrec.distributed.planner.storage_reservations", "torchrec.distributed.utils"):
    logging.getLogger(_name).setLevel(logging.ERROR)


def offered_sharding_types(device: str) -> list[str]:
    """What TorchRec's EBC sharder offers on this compute device (cpu: data_parallel, table_wise,
    column_wise, table_column_wise; cuda adds row_wise, table_row_wise, grid_shard)."""
    return list(EmbeddingBagCollectionSharder().sharding_types(device))


def check_sharding_types(cfg: RunConfig) -> None:
    """Every sharding type named in [sharding] must be offered on the configured device."""
    offered = offered_sharding_types(cfg.train.device)
    where = f"{cfg.source} [sharding]"
    entries = [("default", cfg.sharding.default),
               *((f"tables.{k}", v) for k, v in cfg.sharding.tables.items())]
    for key, types in entries:
        if key != "default" and not types:
            raise ConfigError(f"{where} {key}: empty list of sharding types")
        for t in types:
            if t not in offered:
                need = (" (needs train.device = \"cuda\")"
                        if t in offered_sharding_types("cuda") else "")
                raise ConfigError(
                    f"{where} {key}: sharding type {t!r} is not available on device "
                    f"{cfg.train.device!r}{need}; offered: {', '.join(offered)}")


def check_constraints(cfg: RunConfig, table_names: list[str]) -> dict[str, list[str]]:
    """Per-table allowed sharding types: [sharding.tables] for that table, else [sharding]
    default, else every model-parallel type; an unknown table or a type the device does not
    offer is a ConfigError."""
    check_sharding_types(cfg)
    unknown = sorted(set(cfg.sharding.tables) - set(table_names))
    if unknown:
        raise ConfigError(f"{cfg.source} [sharding.tables]: no embedding table named "
                          f"{', '.join(unknown)} in this layout (tables: {', '.join(table_names)})")
    default = list(cfg.sharding.default) or model_parallel_types(cfg.train.device)
    return {name: list(cfg.sharding.tables.get(name, default)) for name in table_names}


def check_table_widths(cfg: RunConfig, model: nn.Module) -> None:
    """TorchRec's sharded kernels (FBGEMM) need every table width divisible by 4; a worker would
    only assert it deep inside DistributedModelParallel, so the table is named here first."""
    for ebc in _embedding_collections(model):
        for table in ebc.embedding_bag_configs():
            if table.embedding_dim % 4:
                raise ConfigError(
                    f"{cfg.source} [layout]: table {table.name} has width "
                    f"{table.embedding_dim}, but sharded tables need widths divisible by 4 "
                    "(check layout.dim and the layout's own widths: layout.unified.probes must "
                    "leave dim / probes divisible by 4, layout.mixed_dim.min_block_dim must be "
                    "a multiple of 4)")


def model_parallel_types(device: str) -> list[str]:
    """The default: every type but data_parallel. A data-parallel table is a plain replicated
    weight, updated by the dense optimizer rather than the fused row-wise Adagrad, so it is
    only used when a config asks for it."""
    return [t for t in offered_sharding_types(device) if t != "data_parallel"]


def _embedding_collections(model: nn.Module) -> list[EmbeddingBagCollection]:
    return [m for m in model.modules() if isinstance(m, EmbeddingBagCollection)]


def shard_model(model: nn.Module, cfg: RunConfig, constraints: dict[str, list[str]],
                device: torch.device) -> tuple[DistributedModelParallel, ShardingPlan]:
    """Fuses the row-wise Adagrad embedding update into the backward pass, plans the placement
    over all ranks (one collective plan, so every rank agrees), and wraps the model in DMP."""
    params = [p for ebc in _embedding_collections(model) for p in ebc.parameters()]
    if not params:
        raise ConfigError("the model has no EmbeddingBagCollection to shard")
    first_order = {id(p) for m in model.modules() if isinstance(m, FirstOrder)
                   for p in m.ebc.parameters()}
    eps = cfg.optim.embedding_eps
    for lr, group in ((cfg.optim.embedding_lr, [p for p in params if id(p) not in first_order]),
                      (cfg.optim.first_order_lr, [p for p in params if id(p) in first_order])):
        if group:
            apply_optimizer_in_backward(RowWiseAdagrad, group, {"lr": lr, "eps": eps})
    world = dist.get_world_size()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    topology = Topology(world_size=world, local_world_size=local, compute_device=device.type)
    planner = EmbeddingShardingPlanner(
        topology=topology,
        constraints={name: ParameterConstraints(sharding_types=types)
                     for name, types in constraints.items()})
    sharders: list[Any] = [EmbeddingBagCollectionSharder()]
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(model, device=device, plan=plan, sharders=sharders)
    return dmp, plan


def plan_to_json(plan: ShardingPlan) -> dict[str, Any]:
    """Module path -> table -> sharding type, kernel, ranks and shard placements."""
    out: dict[str, Any] = {}
    for module_path, module_plan in plan.plan.items():
        tables: dict[str, Any] = {}
        for table, ps in module_plan.items():
            shards = []
            spec = getattr(ps, "sharding_spec", None)
            for shard in getattr(spec, "shards", None) or []:
                shards.append({"offsets": list(shard.shard_offsets),
                               "sizes": list(shard.shard_sizes),
                               "placement": str(shard.placement)})
            tables[table] = {"sharding_type": ps.sharding_type,
                             "compute_kernel": ps.compute_kernel,
                             "ranks": list(ps.ranks or []), "shards": shards}
        out[module_path] = tables
    return out


def plan_summary(plan: ShardingPlan) -> str:
    return json.dumps(plan_to_json(plan), indent=2)
