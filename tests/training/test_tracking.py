"""The tracking store named by MLFLOW_TRACKING_URI is checked before a run reads any data."""

from __future__ import annotations

from pathlib import Path

import pytest

from plexrec.features.errors import ConfigError
from plexrec.training.launch import LaunchOptions, run_train
from plexrec.training.tracking import tracking_uri
from tests.conftest import CONFIGS


@pytest.mark.parametrize("uri", ["file:///nowhere/mlruns", "/nowhere/mlruns"])
def test_a_file_store_stops_the_run_before_it_starts(uri: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI=.*sqlite:///") as exc:
        run_train(LaunchOptions(config=CONFIGS / "synthetic_dlrm.toml",
                                data=str(tmp_path / "never-read.tsv"),
                                overrides=[f"train.run_dir={tmp_path / 'run'}"]))
    assert uri in str(exc.value) and not (tmp_path / "run").exists()


def test_a_file_store_is_allowed_when_mlflow_is_told_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:///somewhere/mlruns")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert tracking_uri() == "file:///somewhere/mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////somewhere/mlflow.db")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    assert tracking_uri() == "sqlite:////somewhere/mlflow.db"
