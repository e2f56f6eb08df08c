"""`plexrec train`: check the config against the schema, data and device, prepare raw data once,
then run the workers (in this process for one process, else through torchrun) and return the
result of rank 0. Every check that can fail runs here, before any worker starts."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plexrec.features import sample_data
from plexrec.features.errors import ConfigError, PlexrecError
from plexrec.training.config import RunConfig, load_config
from plexrec.training.final_fit import maybe_final_fit
from plexrec.training.run_dirs import default_cache_dir, run_dir_for
from plexrec.training.sharding import (
    check_constraints,
    check_sharding_types,
    check_table_widths,
)
from plexrec.training.tasks import check_model_kind, task_for
from plexrec.training.threads import threads_per_process
from plexrec.training.tracking import tracking_uri
from plexrec.training.trainer import EvalHook, RunSpec

log = logging.getLogger(__name__)


@dataclass
class LaunchOptions:
    config: Path
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 0
    data: str | None = None
    layout: str | None = None
    embedding_budget: str | None = None
    overrides: list[str] = field(default_factory=list)
    resume: str | None = None
    quiet: bool = False
    # In-process runs only (nproc 1): called after each validation, True stops as pruned.
    on_eval: EvalHook | None = None
    mlflow_parent: str = ""
    mlflow_tags: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _resolve(path: str, config_path: Path) -> Path:
    """A path in a config is tried as given (absolute or from the working directory), then
    relative to the config file's folder and its parent (the repository root for configs/)."""
    p = Path(sample_data.expand(path)).expanduser()
    if p.is_absolute() or p.exists():
        return p
    for base in (config_path.parent, config_path.parent.parent):
        if (base / p).exists():
            return base / p
    return p


def load_run_config(opts: LaunchOptions) -> RunConfig:
    overrides = list(opts.overrides)
    if opts.layout:
        overrides.append(f"layout.kind={opts.layout}")
    if opts.embedding_budget:
        overrides.append(f"layout.budget={json.dumps(opts.embedding_budget)}"
                         if not opts.embedding_budget.isdigit()
                         else f"layout.budget={opts.embedding_budget}")
    if opts.data:
        overrides.append(f"data.path={opts.data}")
    return load_config(opts.config, overrides)


def check_static(cfg: RunConfig, opts: LaunchOptions) -> None:
    """Checks that need neither data nor processes."""
    check_model_kind(cfg)
    if cfg.train.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{cfg.source} [train] device = \"cuda\" but no CUDA device is "
                              "available")
    check_sharding_types(cfg)
    if opts.nnodes > 1 and not cfg.train.run_dir:
        raise ConfigError("--nnodes > 1: every node must write one run directory; pass "
                          "--set train.run_dir=<a directory on storage all nodes share>")
    if opts.nproc < 1 or opts.nnodes < 1 or not 0 <= opts.node_rank < opts.nnodes:
        raise ConfigError(f"bad process layout: --nproc {opts.nproc} --nnodes {opts.nnodes} "
                          f"--node-rank {opts.node_rank}")
    if not cfg.data.path:
        raise ConfigError(f"{cfg.source} [data] path is empty: give --data PATH")
    if cfg.layout:
        from plexrec.models.layouts import LayoutConfig

        LayoutConfig.from_dict(cfg.layout, f"{cfg.source} [layout]")


def _check_schema_features(cfg: RunConfig, schema: Any) -> None:
    names = [f.name for f in schema.sparse]
    missing = [f for f in cfg.data.features if f not in names]
    if missing:
        raise ConfigError(f"{cfg.source} [data] features: {', '.join(missing)} not among the "
                          f"sparse features of schema {schema.source} ({', '.join(names)})")


def prepare_data(cfg: RunConfig, config_path: Path, quiet: bool) -> Path:
    """A prepared cache directory is used as is; raw input is prepared into `[data] cache_dir`
    (default `<run_dir>/prepared`), which `prepare` reuses while input and schema are unchanged."""
    from plexrec.features.prepare import Inputs, prepare
    from plexrec.features.schema import load_schema

    data_path = _resolve(cfg.data.path, config_path)
    if (data_path / "meta.json").is_file():
        given = [k for k in ("valid_path", "test_path", "split_column") if getattr(cfg.data, k)]
        if given:
            raise ConfigError(f"{cfg.source} [data] {given[0]}: [data] path {data_path} is a "
                              "prepared cache, whose splits were fixed when it was prepared; "
                              "give the raw input instead")
        if cfg.data.features:
            from plexrec.features.cache import PreparedData

            _check_schema_features(cfg, PreparedData.open(data_path).schema)
        return data_path
    if not data_path.exists():
        raise ConfigError(f"{cfg.source} [data] path: {data_path} does not exist"
                          + sample_data.missing_hint(cfg.data.path))
    if not cfg.data.schema:
        raise ConfigError(f"{cfg.source} [data] schema is empty: raw input {data_path} needs a "
                          "schema TOML")
    schema = load_schema(_resolve(cfg.data.schema, config_path))
    _check_schema_features(cfg, schema)
    extra = {}
    for key in ("valid_path", "test_path"):
        if getattr(cfg.data, key):
            extra[key] = _resolve(getattr(cfg.data, key), config_path)
            if not extra[key].exists():
                raise ConfigError(f"{cfg.source} [data] {key}: {extra[key]} does not exist")
    inputs = Inputs(data_path, extra.get("valid_path"), extra.get("test_path"),
                    cfg.data.split_column or None)
    cache = (Path(cfg.data.cache_dir) if cfg.data.cache_dir
             else default_cache_dir(cfg, inputs.identity(), schema.name))
    result = prepare(schema, inputs, cache, on_bad_row=cfg.data.on_bad_row,
                     progress=not quiet, workers=cfg.data.prepare_workers)
    log.info("prepared data: %s (%d rows%s)", result.out_dir, result.num_rows,
             ", reused" if result.reused else "")
    for file, rows in result.rows_by_file.items():
        log.info("  %s: %d rows", file, rows)
    for side, rows in result.join_unmatched.items():
        log.info("  join %s: %d rows without a match", side, rows)
    return Path(result.out_dir)


def check_with_data(cfg: RunConfig, prepared: Path) -> None:
    """Builds the model on the meta device (cheap) to check the layout and the sharding tables."""
    from plexrec.features.cache import PreparedData

    data = PreparedData.open(prepared)
    task = task_for(cfg, data)
    task.validate(cfg, data)
    built = task.build(cfg, data, "meta")
    check_constraints(cfg, built.table_names)
    check_table_widths(cfg, built.module)


def build_spec(opts: LaunchOptions) -> RunSpec:
    cfg = load_run_config(opts)
    check_static(cfg, opts)
    prepared = prepare_data(cfg, Path(opts.config), opts.quiet)
    check_with_data(cfg, prepared)
    run_dir = run_dir_for(cfg, opts.resume)
    text = Path(opts.config).read_text()
    if opts.overrides:
        text += "\n# overrides: " + " ".join(opts.overrides) + "\n"
    raw = cfg.to_dict()
    raw["train"]["run_dir"] = str(run_dir)
    return RunSpec(config=raw, source=cfg.source, prepared_dir=str(prepared.resolve()),
                   run_dir=str(run_dir), resume=opts.resume is not None, quiet=opts.quiet,
                   config_text=text, mlflow_parent=opts.mlflow_parent,
                   mlflow_tags=dict(opts.mlflow_tags))


def torchrun_command(opts: LaunchOptions, spec_path: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run",
            f"--nproc-per-node={opts.nproc}", f"--nnodes={opts.nnodes}",
            f"--node-rank={opts.node_rank}", f"--master-addr={opts.master_addr}",
            f"--master-port={port}", "--max-restarts=0",
            "-m", "plexrec.training.worker", "--spec", str(spec_path)]


def run_train(opts: LaunchOptions) -> dict[str, Any]:
    """Runs the whole training; returns rank 0's result (run_id, test metrics, sizes, speed)."""
    if opts.on_eval is not None and (opts.nproc, opts.nnodes) != (1, 1):
        raise ConfigError("an evaluation hook (pruning) runs in this process: it needs --nproc 1 "
                          f"and --nnodes 1, got --nproc {opts.nproc} --nnodes {opts.nnodes}")
    if load_run_config(opts).mlflow.enabled:
        tracking_uri()  # a store MLflow would refuse stops the run before any data is read
    spec = build_spec(opts)
    run_dir = Path(spec.run_dir)
    result_path = run_dir / "result.json"
    result_path.unlink(missing_ok=True)
    spec_path = run_dir / "spec.json"
    spec.save(spec_path)
    if opts.nproc == 1 and opts.nnodes == 1:
        from plexrec.training.worker import run_worker

        result = run_worker(spec, init_method=f"tcp://127.0.0.1:{free_port()}",
                            on_eval=opts.on_eval)
        assert result is not None
        return maybe_final_fit(opts, spec.config, result, run_train)
    port = opts.master_port or (free_port() if opts.nnodes == 1 else 29500)
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads_per_process(
        int(spec.config["train"].get("threads", 0)), opts.nproc))
    cmd = torchrun_command(opts, spec_path, port)
    log.info("launching: %s", " ".join(cmd))
    proc = subprocess.run(cmd, env=env, stdout=sys.stderr, check=False)
    if proc.returncode != 0:
        raise PlexrecError(f"training failed (torchrun exit code {proc.returncode}); the worker "
                           "log above names the cause")
    if opts.node_rank != 0:
        return {"node_rank": opts.node_rank, "run_dir": str(run_dir)}
    if not result_path.is_file():
        raise PlexrecError(f"training ended without a result ({result_path} missing)")
    return maybe_final_fit(opts, spec.config, json.loads(result_path.read_text()),
                           run_train)
