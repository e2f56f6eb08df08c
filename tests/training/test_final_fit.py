"""The CTR final fit (`[train] final_fit`): after the held-out run, the same model trained again
on training + validation rows for the best checkpoint's epochs, scored once on the test rows,
as an MLflow child run of the held-out run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from plexrec.features.errors import ConfigError
from plexrec.training.config import load_config
from plexrec.training.final_fit import ctr_final_fit_overrides
from tests.conftest import CONFIGS
from tests.training.helpers import prepared_synthetic_criteo


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared_synthetic_criteo(tmp_path_factory.mktemp("synth"), seed=1)


def _run(prepared: Path, run_dir: Path, *extra: str) -> dict[str, Any]:
    from plexrec.training.launch import LaunchOptions, run_train

    return run_train(LaunchOptions(
        config=CONFIGS / "synthetic_dlrm.toml", data=str(prepared), quiet=True,
        overrides=[f"train.run_dir={run_dir}", "data.batch_size=128", "model.first_order=true",
                   *extra]))


def test_final_fit_trains_on_validation_rows_for_the_best_epochs(prepared: Path, tmp_path: Path,
                                                                 mlflow_uri: str) -> None:
    result = _run(prepared, tmp_path / "run", "train.max_steps=12", "train.eval_every=4",
                  "train.first_order_epochs=2", "train.final_fit=true",
                  "mlflow.registered_model=test-final-fit")
    rows, fit = result["rows"], result["final_fit"]
    assert fit["rows"] == rows["train"] + rows["val"]
    scale = (rows["train"] + rows["val"]) / rows["train"]
    assert fit["steps"] == round(result["best_step"] * scale)
    assert fit["first_order_epochs"] == result["first_order_best_epoch"]
    assert 0.0 < fit["test_auc"] < 1.0 and fit["test_logloss"] > 0
    assert fit["test_auc"] != result["test_auc"]
    fit_dir = Path(fit["run_dir"])
    assert fit_dir == tmp_path / "run" / "final_fit" and (fit_dir / "result.json").is_file()
    assert (fit_dir / "checkpoints" / f"step-{fit['steps']}").is_dir()

    client = MlflowClient(tracking_uri=mlflow_uri)
    child = client.get_run(fit["run_id"])
    assert child.data.tags["mlflow.parentRunId"] == result["run_id"]
    assert child.info.run_name == "final_fit" and child.info.status == "FINISHED"
    assert child.data.metrics["test_auc"] == pytest.approx(fit["test_auc"], rel=1e-6)
    assert child.data.params["data.train_rows"] == "with_validation"
    versions = sorted(client.search_model_versions("name='test-final-fit'"),
                      key=lambda v: int(v.version))
    assert [v.run_id for v in versions] == [result["run_id"], fit["run_id"]]


def test_term_alone_final_fit_runs_its_passes_and_no_step(prepared: Path,
                                                          tmp_path: Path) -> None:
    """A held-out run whose best model was the fitted term alone (step 0) refits the term for
    its best number of passes and trains nothing else; nothing stops it early."""
    overrides = ctr_final_fit_overrides(
        {"rows": {"train": 800, "val": 200}, "best_step": 0, "decay_span": 40,
         "first_order_best_epoch": 3}, tmp_path / "held-out")
    assert "train.epochs=0" in overrides and "train.first_order_epochs=3" in overrides
    assert "optim.decay_steps=50" in overrides
    result = _run(prepared, tmp_path / "run", "mlflow.enabled=false",
                  *(o for o in overrides if not o.startswith("train.run_dir=")))
    assert result["steps"] == 0 and result["best_step"] == 0
    assert result["first_order_epochs_run"] == 3 == result["first_order_best_epoch"]
    assert result["first_order_val_auc"] is None
    assert "final_fit" not in result


def test_final_fit_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="epochs: must be >= 1"):
        load_config(CONFIGS / "synthetic_dlrm.toml",
                    ["train.epochs=0", "train.first_order_epochs=0"])
    with pytest.raises(ConfigError, match="epochs: must be >= 1"):
        load_config(CONFIGS / "synthetic_dlrm.toml", ["train.epochs=0", "model.first_order=false",
                                                      "train.first_order_epochs=2"])
    load_config(CONFIGS / "synthetic_dlrm.toml", ["train.epochs=0", "model.first_order=true",
                                                  "train.first_order_epochs=2"])
    with pytest.raises(ConfigError, match="final_fit: is for CTR runs"):
        load_config(CONFIGS / "synthetic_two_tower.toml", ["train.final_fit=true"])
    with pytest.raises(ConfigError, match=r"\[data\] train_rows: is for CTR runs"):
        load_config(CONFIGS / "synthetic_two_tower.toml", ['data.train_rows="with_validation"'])
    with pytest.raises(ConfigError, match="train_rows"):
        load_config(CONFIGS / "synthetic_dlrm.toml", ['data.train_rows="everything"'])
