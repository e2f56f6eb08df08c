"""Where a training run keeps its files. Every `plexrec train` gets a directory of its own,
`<train.runs_root>/<mlflow.experiment>/<run id>`, so runs of one config (even concurrent ones)
never share a spec, a result or a checkpoint; `train.run_dir` names one explicitly (to resume
it, for instance). Prepared caches are shared per input and schema, under
`<train.runs_root>/prepared/`, and guarded by features.prepare's lock."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from pathlib import Path

from plexrec.features.errors import ConfigError
from plexrec.training.config import RunConfig

RESULT_FILE = "result.json"
LATEST = "latest"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "default"


def experiment_dir(cfg: RunConfig) -> Path:
    return Path(cfg.train.runs_root) / _slug(cfg.mlflow.experiment)


def new_run_id() -> str:
    """Sortable by start time, unique across concurrent starts (48 random bits)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def create_run_dir(cfg: RunConfig) -> Path:
    """A fresh, empty directory for one run; mkdir without exist_ok is the uniqueness check."""
    root = experiment_dir(cfg)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        path = root / new_run_id()
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path.resolve()


def resume_dir(cfg: RunConfig, which: str) -> Path:
    """The run to continue: `latest` (the newest unfinished run of the experiment), a run id of
    the experiment, or a run directory."""
    root = experiment_dir(cfg)
    if which == LATEST:
        unfinished = sorted(p for p in root.glob("*-*-*") if p.is_dir()
                            and (p / "spec.json").is_file() and not (p / RESULT_FILE).is_file())
        if not unfinished:
            raise ConfigError(f"--resume: no unfinished run under {root}")
        return unfinished[-1].resolve()
    for path in (root / which, Path(which)):
        if (path / "spec.json").is_file():
            return path.resolve()
    raise ConfigError(f"--resume {which}: neither a run id under {root} nor a run directory")


def run_dir_for(cfg: RunConfig, resume: str | None) -> Path:
    """`train.run_dir` when set, the run being resumed, else a new run directory."""
    if cfg.train.run_dir:
        path = Path(cfg.train.run_dir).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path
    if resume:
        return resume_dir(cfg, resume)
    return create_run_dir(cfg)


def default_cache_dir(cfg: RunConfig, inputs: list[str], schema_name: str) -> Path:
    """One cache per (inputs, schema), shared by the runs that read them; `inputs` names what
    the cache is built from (resolved paths, the split column)."""
    digest = hashlib.sha256("\n".join(inputs).encode()).hexdigest()[:12]
    return Path(cfg.train.runs_root) / "prepared" / f"{_slug(schema_name)}-{digest}"
