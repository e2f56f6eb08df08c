"""MLflow tracking for rank 0. The store is MLFLOW_TRACKING_URI when set, else a SQLite store in the
project directory (`.plexrec/mlflow.db`), which works offline and needs no server."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from plexrec.features.errors import ConfigError
from plexrec.features.locks import exclusive

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[1]


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        _check_store(uri)
        return uri
    store = PROJECT_DIR / ".plexrec"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def _check_store(uri: str) -> None:
    """MLflow refuses to open a file store (./mlruns) unless MLFLOW_ALLOW_FILE_STORE is set, with
    an exception deep inside a run; say so before anything starts. A file URI holds no secret."""
    from urllib.parse import urlparse

    allowed = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("1", "true")
    if urlparse(uri).scheme in ("", "file") and not allowed:
        raise ConfigError(f"MLFLOW_TRACKING_URI={uri}: MLflow no longer opens file stores; use "
                          "a database (sqlite:///path/to/mlflow.db) or a tracking server, or "
                          "set MLFLOW_ALLOW_FILE_STORE=true")


def artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts. A SQLite store would otherwise default to
    ./mlruns under whatever directory the process runs in, scattering artifacts; keep them
    beside the database instead."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return out


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
# What a logged model needs to load on a CPU machine. torchrec must then be installed with
# --no-deps (its metadata asks for the CUDA fbgemm), which pip requirements cannot express.
_REQUIREMENTS = ("torch", "fbgemm-gpu-cpu", "torchrec", "numpy")


def pinned_requirements() -> list[str]:
    """The installed versions of the packages a logged model needs, pinned."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in _REQUIREMENTS:
        try:
            out.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return out


def source_tags() -> dict[str, str]:
    """mlflow.source.* tags: the entry point and, inside a git checkout, the commit."""
    import subprocess

    from mlflow.utils.mlflow_tags import (
        MLFLOW_GIT_COMMIT,
        MLFLOW_SOURCE_NAME,
        MLFLOW_SOURCE_TYPE,
    )

    tags = {MLFLOW_SOURCE_NAME: "plexrec train", MLFLOW_SOURCE_TYPE: "LOCAL"}
    try:
        commit = subprocess.run(["git", "-C", str(PROJECT_DIR), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return tags
    if commit.returncode == 0 and commit.stdout.strip():
        tags[MLFLOW_GIT_COMMIT] = commit.stdout.strip()
    return tags


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Runs started together against one new SQLite store would race on its schema migration
    and on creating the experiment (both fail); a lock file beside the database serialises
    that first contact. Server stores need none."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    with exclusive(db.with_name(db.name + ".lock")):
        yield


def _experiment_artifacts(experiment: str) -> str | None:
    root = artifact_root(tracking_uri())
    return None if root is None else f"{root}/{experiment}"


class Tracker:
    """No-op unless `enabled` (rank 0 with [mlflow] enabled); methods never raise into training
    for transient store errors at the per-step level, but setup errors do surface."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.run_id: str | None = None
        self._client: Any = None

    def start(self, experiment: str, run_name: str, run_id: str | None,
              parent_run_id: str | None = None,
              tags: Mapping[str, str] | None = None) -> str | None:
        """Opens a new run (or reopens `run_id`); with `parent_run_id` the new run is that run's
        child (MLflow's `mlflow.parentRunId` tag, which its UI nests), as a tuning trial is."""
        if not self.enabled:
            return None
        import mlflow
        from mlflow.tracking import MlflowClient

        logging.getLogger("alembic").setLevel(logging.WARNING)
        mlflow.set_tracking_uri(tracking_uri())
        with _store_lock(tracking_uri()):
            self._client = MlflowClient()
            if run_id is None:
                exp = self._client.get_experiment_by_name(experiment)
                exp_id = exp.experiment_id if exp else self._client.create_experiment(
                    experiment, artifact_location=_experiment_artifacts(experiment),
                    tags={EXPERIMENT_KIND_TAG: "custom_model_development"})
                from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

                run_tags = {**source_tags(), **(tags or {})}
                if parent_run_id:
                    run_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
                run = self._client.create_run(exp_id, run_name=run_name or None, tags=run_tags)
                run_id = run.info.run_id
            else:
                self._client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        return run_id

    def log_params(self, params: dict[str, Any]) -> None:
        if not self.run_id:
            return
        from mlflow.entities import Param

        existing = self._client.get_run(self.run_id).data.params
        items = [Param(k, v[:6000]) for k, v in flatten(params).items() if k not in existing]
        for i in range(0, len(items), 100):
            self._client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if not self.run_id:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._client.log_batch(self.run_id, metrics=batch)

    def set_tags(self, tags: Mapping[str, str], run_id: str | None = None) -> None:
        """Tags on this run, or on `run_id` (a child whose outcome only its parent knows)."""
        target = run_id or self.run_id
        if self.run_id and target:
            for key, value in tags.items():
                self._client.set_tag(target, key, value)

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.run_id:
            self._client.log_text(self.run_id, text, artifact_file)

    def log_file(self, path: Path, artifact_path: str | None = None) -> None:
        if self.run_id:
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_report(self, rows: list[Any]) -> None:
        """The embedding table report as CSV and JSON."""
        if not self.run_id:
            return
        dicts = [asdict(r) if is_dataclass(r) and not isinstance(r, type) else dict(r) for r in rows]
        buf = io.StringIO()
        if dicts:
            writer = csv.DictWriter(buf, fieldnames=list(dicts[0]))
            writer.writeheader()
            writer.writerows(dicts)
        self.log_text(buf.getvalue(), "embedding_tables.csv")
        self.log_text(json.dumps(dicts, indent=2), "embedding_tables.json")

    def log_curve(self, history: list[dict[str, float]], out: Path,
                  val_key: str = "val_auc") -> None:
        """Learning curve PNG: training loss and the validation metric against the step."""
        if not self.run_id or not history:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        train = [(h["step"], h["loss"]) for h in history if "loss" in h]
        val = [(h["step"], h[val_key]) for h in history if val_key in h]
        if train:
            ax.plot(*zip(*train, strict=True), label="train loss", color="tab:blue")
        ax.set_xlabel("step")
        ax.set_ylabel("log loss")
        if val:
            ax2 = ax.twinx()
            ax2.plot(*zip(*val, strict=True), "o-", label=val_key, color="tab:orange")
            ax2.set_ylabel(val_key)
        fig.legend(loc="upper right")
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=90)
        plt.close(fig)
        self.log_file(out)

    def log_model(self, module: Any, registered_name: str = "", alias: str = "",
                  signature: Any = None) -> None:
        """The unsharded model, loadable with mlflow.pytorch.load_model, with the pinned CPU
        stack as its requirements; registered only when a name is given (opt-in), and then
        tagged with `alias` (e.g. "champion": models:/<name>@champion)."""
        if not self.run_id:
            return
        import mlflow

        with mlflow.start_run(run_id=self.run_id):
            info = mlflow.pytorch.log_model(
                module, name="model", registered_model_name=registered_name or None,
                serialization_format="pickle", signature=signature,
                pip_requirements=pinned_requirements())
        if registered_name and alias:
            version = info.registered_model_version
            self._client.set_registered_model_alias(registered_name, alias, str(version))

    def finish(self, status: str = "FINISHED") -> None:
        if self.run_id:
            self._client.set_terminated(self.run_id, status=status)
