"""A run evaluated on a given test file: `--set data.test_path=...`, the fraction split dividing
only the training input, and training-only statistics."""

from __future__ import annotations

from pathlib import Path

from plexrec.features.synth import write_criteo
from plexrec.training.launch import LaunchOptions, run_train
from tests.conftest import CONFIGS


def test_run_on_a_given_test_file(tmp_path: Path) -> None:
    train, test = tmp_path / "train.tsv", tmp_path / "test.tsv"
    write_criteo(train, rows=2000, seed=1, progress=False)
    write_criteo(test, rows=500, seed=2, progress=False)
    result = run_train(LaunchOptions(
        config=CONFIGS / "criteo_dlrm.toml", data=str(train), quiet=True,
        overrides=[f"train.run_dir={tmp_path / 'run'}", "mlflow.enabled=false",
                   f"data.test_path={test}", f"data.cache_dir={tmp_path / 'cache'}",
                   "data.batch_size=128", "train.max_steps=10", "data.split=[0.8, 0.2, 0.0]"]))
    assert result["rows"] == {"train": 1600, "val": 400, "test": 500}
    assert 0.0 < result["test_auc"] < 1.0
    # A different seed writes other rare ids: some test values were never seen in training.
    assert sum(result["unseen_values"]["test"].values()) > 0
