"""TorchRec's train pipeline in the trainer: every layout's tables (and the first-order term's)
are pipelined, and a pipelined run ends where the plain loop ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import CONFIGS
from tests.training.helpers import prepared_synthetic_criteo


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared_synthetic_criteo(tmp_path_factory.mktemp("pipeline"), seed=3)


def _run(prepared: Path, run_dir: Path, *extra: str) -> tuple[dict[str, Any], dict]:
    from plexrec.features.cache import PreparedData
    from plexrec.training.checkpoint import load_unsharded, model_checkpoint
    from plexrec.training.config import parse_config
    from plexrec.training.launch import LaunchOptions, run_train
    from plexrec.training.tasks import task_for
    from plexrec.training.trainer import RunSpec, training_view

    result = run_train(LaunchOptions(
        config=CONFIGS / "synthetic_dlrm.toml", data=str(prepared), quiet=True,
        overrides=[f"train.run_dir={run_dir}", "mlflow.enabled=false", "data.batch_size=128",
                   "train.max_steps=30", "train.eval_every=7", "model.first_order=false",
                   "train.first_order_epochs=0", *extra]))
    spec = RunSpec.load(run_dir / "spec.json")
    cfg = parse_config(spec.config, spec.source)
    cache = PreparedData.open(prepared)
    task = task_for(cfg, cache)
    data, _ = training_view(cfg, task, cache)
    model = task.build(cfg, data, "cpu").module
    checkpoint = model_checkpoint(run_dir / "checkpoints")
    assert checkpoint is not None
    load_unsharded(checkpoint, model)
    return result, model.state_dict()


def test_pipelined_run_ends_where_the_plain_loop_ends(prepared: Path, tmp_path: Path) -> None:
    """30 steps over an epoch boundary with a validation every 7 steps (the pipeline is paused
    and its fetched batches kept): the same weights and test AUC as the plain loop."""
    piped, piped_state = _run(prepared, tmp_path / "piped", "model.first_order=true",
                              "train.pipeline=true")
    plain, plain_state = _run(prepared, tmp_path / "plain", "model.first_order=true")
    assert piped["pipelined_modules"] == ["model.first_order.ebc", "model.model.layout.ebc"]
    assert plain["pipelined_modules"] == []
    assert piped["steps"] == plain["steps"] == 30
    assert piped["test_auc"] == pytest.approx(plain["test_auc"], abs=1e-4)
    for key, value in plain_state.items():
        torch.testing.assert_close(piped_state[key], value, rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("layout", ["mixed_dim", "unified", "qr"])
def test_every_layout_is_pipelined(prepared: Path, tmp_path: Path, layout: str) -> None:
    result, _ = _run(prepared, tmp_path / layout, f"layout.kind=\"{layout}\"",
                     "train.max_steps=4", "train.eval_every=0", "train.pipeline=true")
    assert result["pipelined_modules"] == ["model.layout.ebc"]
    assert 0.0 < result["test_auc"] < 1.0


def test_two_tower_pipelined_across_epoch_ends(tmp_path: Path) -> None:
    """Both towers' tables are pipelined; the validation at each epoch's end (after the pipeline
    ran out of batches) and the test see the same model as the plain loop's."""
    from plexrec.features.synth_movielens import write_movielens
    from tests.training.retrieval_helpers import prepared_movielens, train_movielens_two_tower

    write_movielens(tmp_path / "ml-100k", seed=0, progress=False)
    data = prepared_movielens(tmp_path / "ml-100k", tmp_path)
    common = ("data.batch_size=4096", "train.max_steps=30", "train.eval_every=0",
              "retrieval.final_fit=false", "retrieval.matryoshka=false")
    piped, _ = train_movielens_two_tower(data, tmp_path / "piped", *common, "train.pipeline=true")
    plain, _ = train_movielens_two_tower(data, tmp_path / "plain", *common)
    assert piped["pipelined_modules"] == ["model.item.embeddings.ebc",
                                          "model.user.embeddings.ebc"]
    assert piped["steps"] == plain["steps"] == 30
    assert piped["test_recall_at_50"] == pytest.approx(plain["test_recall_at_50"], abs=2e-3)


@pytest.mark.parametrize(("setting", "world", "device", "expected"), [
    ('"auto"', 1, "cpu", False), ('"auto"', 2, "cpu", True), ('"auto"', 1, "cuda:0", True),
    ("true", 1, "cpu", True), ("false", 2, "cpu", False)])
def test_auto_pipelines_where_there_is_something_to_overlap(setting: str, world: int,
                                                             device: str, expected: bool) -> None:
    from plexrec.training.config import load_config

    cfg = load_config(CONFIGS / "synthetic_dlrm.toml", [f"train.pipeline={setting}"])
    assert cfg.train.pipelined(world, device) is expected


def test_a_bad_pipeline_setting_names_key_and_value() -> None:
    from plexrec.features.errors import ConfigError
    from plexrec.training.config import load_config

    with pytest.raises(ConfigError, match=r"\[train\] pipeline = 'sometimes': expected true, false or \"auto\""):
        load_config(CONFIGS / "synthetic_dlrm.toml", ['train.pipeline="sometimes"'])
