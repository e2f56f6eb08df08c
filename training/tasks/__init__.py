"""The registry of learning tasks, one file each in this package. A task declares the
`[model] kind` values it trains, so a new ranking model is a line in models/ranking.py and a new
task is one file here plus one line below."""

from __future__ import annotations

from typing import Any

from plexrec.features.errors import ConfigError
from plexrec.training.config import RunConfig
from plexrec.training.task import Task
from plexrec.training.tasks.ctr import CtrTask
from plexrec.training.tasks.retrieval import RetrievalTask

TASKS: dict[str, type[Task]] = {
    "ctr": CtrTask,
    "retrieval": RetrievalTask,
}


def model_kinds() -> dict[str, str]:
    """`[model] kind` -> the name of the task that trains it."""
    return {kind: name for name, task in TASKS.items() for kind in task.model_kinds}


def check_model_kind(cfg: RunConfig) -> str:
    """The task name for `[model] kind`, or a ConfigError naming the file, key and value."""
    kinds = model_kinds()
    if cfg.model.kind not in kinds:
        raise ConfigError(f"{cfg.source} [model] kind {cfg.model.kind!r} is unknown "
                          f"(known: {', '.join(sorted(kinds))})")
    return kinds[cfg.model.kind]


def task_for(cfg: RunConfig, data: Any) -> Task:
    """The task that trains `[model] kind`, configured for this run's data."""
    task = TASKS[check_model_kind(cfg)]()
    configure = getattr(task, "configure", None)
    if configure is not None:
        configure(cfg, data)
    return task
