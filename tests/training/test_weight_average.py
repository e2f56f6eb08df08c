"""`[train] ema_decay`: the weight average is what validation, the best checkpoint and test read,
training still steps the live weights, and a resumed run continues the same average."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from plexrec.features.errors import ConfigError
from plexrec.training.config import load_config
from plexrec.training.weight_average import WeightAverage
from tests.conftest import CONFIGS
from tests.training.helpers import prepared_synthetic_criteo

STEPS = 12


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared_synthetic_criteo(tmp_path_factory.mktemp("synth"), seed=3)


def _run(prepared: Path, run_dir: Path, *extra: str, resume: bool = False) -> dict[str, Any]:
    from plexrec.training.launch import LaunchOptions, run_train

    return run_train(LaunchOptions(
        config=CONFIGS / "synthetic_dlrm.toml", data=str(prepared), quiet=True,
        resume=run_dir.name if resume else None,
        overrides=[f"train.run_dir={run_dir}", "data.batch_size=128", "model.first_order=false",
                   f"train.max_steps={STEPS}", f"train.eval_every={STEPS}",
                   "mlflow.enabled=false", *extra]))


def _weights(checkpoint: Path, tmp: Path) -> dict[str, torch.Tensor]:
    """A sharded checkpoint's full model tensors (tables gathered whole)."""
    out = tmp / f"{checkpoint.parent.name}-{checkpoint.name}.pt"
    dcp_to_torch_save(checkpoint, out)
    model = torch.load(out, weights_only=False)["model"]
    return {k: v for k, v in model.items() if torch.is_tensor(v) and v.is_floating_point()}


def test_best_checkpoint_holds_the_average_of_the_live_steps(prepared: Path,
                                                            tmp_path: Path) -> None:
    decay = 0.1  # the step-0 weights, which no checkpoint holds, weigh decay^12 = 1e-12
    run = tmp_path / "run"
    result = _run(prepared, run, f"train.ema_decay={decay}", "train.checkpoint_every=1",
                  f"train.keep_checkpoints={STEPS}")
    assert result["best_step"] == result["steps"] == STEPS
    live = {step: _weights(run / "checkpoints" / f"step-{step}", tmp_path)
            for step in range(1, STEPS + 1)}
    best = _weights(run / "checkpoints" / "best" / f"step-{STEPS}", tmp_path)
    assert set(best) == set(live[STEPS]) and any(v.dim() == 2 and v.shape[0] > 100
                                                 for v in best.values())
    moved = 0
    for key, value in best.items():
        expected = sum((1 - decay) * decay ** (STEPS - s) * live[s][key]
                       for s in range(1, STEPS + 1))
        torch.testing.assert_close(value, expected, atol=1e-6, rtol=1e-5, msg=key)
        moved += not torch.allclose(value, live[STEPS][key], atol=1e-7)
    assert moved, "the best checkpoint is the last live step, not the average"

    plain = _run(prepared, tmp_path / "plain", "train.checkpoint_every=1",
                 f"train.keep_checkpoints={STEPS}")
    last = _weights(tmp_path / "plain" / "checkpoints" / f"step-{STEPS}", tmp_path)
    for key, value in last.items():
        torch.testing.assert_close(value, live[STEPS][key], atol=0, rtol=0, msg=key)
    assert plain["test_auc"] != result["test_auc"]


def test_a_resumed_run_continues_the_same_average(prepared: Path, tmp_path: Path) -> None:
    decay = 0.9  # the average before step 8 still weighs 0.9^4 = 0.66 at step 12
    common = (f"train.ema_decay={decay}", "train.checkpoint_every=4", "train.keep_checkpoints=5")
    whole = _run(prepared, tmp_path / "whole", *common)
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "whole", cut)
    shutil.rmtree(cut / "checkpoints" / f"step-{STEPS}")
    shutil.rmtree(cut / "checkpoints" / "best")
    (cut / "result.json").unlink()
    resumed = _run(prepared, cut, *common, resume=True)
    assert resumed["steps"] == STEPS
    assert resumed["test_auc"] == pytest.approx(whole["test_auc"], abs=1e-7)
    ours = _weights(cut / "checkpoints" / "best" / f"step-{STEPS}", tmp_path)
    theirs = _weights(tmp_path / "whole" / "checkpoints" / "best" / f"step-{STEPS}", tmp_path)
    for key, value in ours.items():
        torch.testing.assert_close(value, theirs[key], atol=1e-7, rtol=0, msg=key)


def test_average_applied_inside_the_block_and_live_weights_after() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    average = WeightAverage(model, decay=0.5)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    average.update()
    live = {k: v.clone() for k, v in model.state_dict().items()}
    with average.applied():
        torch.testing.assert_close(model.weight, start["weight"] + 0.5)
        torch.testing.assert_close(model.bias, start["bias"])
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, live[key], atol=0, rtol=0)

    other = WeightAverage(nn.Linear(3, 2), decay=0.5, state=average.state())
    torch.testing.assert_close(other.average["weight"], start["weight"] + 0.5)
    with pytest.raises(ValueError, match="weight"):
        WeightAverage(nn.Linear(3, 4), decay=0.5, state=average.state())
    with pytest.raises(ValueError, match="differing tensors: extra"):
        WeightAverage(model, decay=0.5, state={**average.state(), "extra": torch.zeros(1)})


@pytest.mark.parametrize("value", ["1.0", "-0.1"])
def test_ema_decay_outside_0_1_rejected(value: str) -> None:
    with pytest.raises(ConfigError, match="ema_decay"):
        load_config(CONFIGS / "synthetic_dlrm.toml", [f"train.ema_decay={value}"])
