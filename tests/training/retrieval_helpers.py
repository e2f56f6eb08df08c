"""Shared by the retrieval tests: a MovieLens-100K folder (the look-alike, and the real sample
where present) prepared once per module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plexrec.features.cache import PreparedData
from plexrec.features.prepare import prepare
from plexrec.features.schema import load_schema
from plexrec.training.export import TrainedRun, load_trained
from plexrec.training.launch import LaunchOptions, run_train
from tests.conftest import CONFIGS


def prepared_movielens(source: Path, root: Path) -> PreparedData:
    out = root / "ml100k"
    prepare(load_schema(CONFIGS / "movielens.toml"), source, out, progress=False)
    return PreparedData.open(out)


def train_movielens_two_tower(prepared: PreparedData, runs: Path, *overrides: str
                              ) -> tuple[dict[str, Any], TrainedRun]:
    """configs/movielens_two_tower.toml through the trainer, in this process (no MLflow): the
    run's result line and its checkpoint loaded back as unsharded model parts."""
    result = run_train(LaunchOptions(
        config=CONFIGS / "movielens_two_tower.toml", data=str(prepared.path), quiet=True,
        overrides=["mlflow.enabled=false", f"train.runs_root={runs}", *overrides]))
    return result, load_trained(result["run_dir"])
