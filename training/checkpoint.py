"""Sharded, atomic checkpoints. Each rank writes its own shards of the DMP state (tables, fused
optimizer state, dense weights and optimizer) through torch.distributed.checkpoint, plus a small
per-rank file with the data position, RNG states and loop state. Everything goes to a temporary
directory that rank 0 renames to `step-<N>` once every rank is done, so a crash at any moment
leaves either the previous checkpoint or the new one, never half of one.

Multi-node runs need `run_dir` on a filesystem every node sees."""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

PREFIX = "step-"
TMP_PREFIX = ".tmp-step-"
BEST = "best"  # checkpoints/best/step-N: the weights of the best validation metric so far


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir()
            if p.is_dir() and p.name.startswith(PREFIX) and (p / "meta.json").is_file()]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def model_checkpoint(root: Path) -> Path | None:
    """The weights a run is judged and exported by: its best validation checkpoint, else (runs
    written before best checkpoints existed) its latest."""
    return latest_checkpoint(Path(root) / BEST) or latest_checkpoint(root)


def save_checkpoint(root: Path, step: int, state: dict[str, Any], extra: dict[str, Any],
                    keep: int = 2) -> Path:
    """Collective: every rank calls it with its own `state` (DCP-able: model and optimizer
    state_dicts) and `extra` (picklable, per rank)."""
    root = Path(root)
    tmp = root / f"{TMP_PREFIX}{step}"
    final = root / f"{PREFIX}{step}"
    if _rank() == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    _barrier()
    dcp.save(state, checkpoint_id=str(tmp))
    torch.save(extra, tmp / f"extra-rank{_rank()}.pt")
    _barrier()
    if _rank() == 0:
        world = dist.get_world_size() if dist.is_initialized() else 1
        (tmp / "meta.json").write_text(json.dumps(
            {"step": step, "world_size": world, "saved_at": time.time()}))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in root.glob(f"{TMP_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
    _barrier()
    return final


def load_checkpoint(path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """Collective: loads the shards in place into `state` (model/optimizer state_dicts built from
    the live objects) and returns this rank's extra state."""
    meta = json.loads((path / "meta.json").read_text())
    world = dist.get_world_size() if dist.is_initialized() else 1
    if meta["world_size"] != world:
        from plexrec.features.errors import ConfigError

        raise ConfigError(f"checkpoint {path} was written by {meta['world_size']} processes; "
                          f"resume it with the same number (now {world})")
    dcp.load(state, checkpoint_id=str(path))
    return torch.load(path / f"extra-rank{_rank()}.pt", weights_only=False)


def load_unsharded(path: Path, module: torch.nn.Module, key: str = "model") -> None:
    """Reads the full (unsharded) weights of a sharded checkpoint into a plain module, in one
    process: what export and MLflow model logging need. The trainer shards the model inside a
    TrainStep, whose keys carry its prefix; checkpoints written before it have none."""
    from plexrec.training.train_step import PREFIX

    stored = set(dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata)
    own = module.state_dict()
    prefix = "" if {f"{key}.{k}" for k in own} <= stored else PREFIX
    wrapped = {key: {prefix + k: v for k, v in own.items()}}
    dcp.load(wrapped, checkpoint_id=str(path), no_dist=True)
    module.load_state_dict({k[len(prefix):]: v for k, v in wrapped[key].items()})
