"""Bad configs stop before any training process starts, with a message naming the culprit."""

from __future__ import annotations

from pathlib import Path

import pytest

from plexrec.cli.main import main
from plexrec.features.errors import ConfigError
from plexrec.training.launch import LaunchOptions, run_train
from tests.conftest import CONFIGS
from tests.features.helpers import criteo_line, write_lines


def _one_row(tmp_path: Path) -> Path:
    """An input of one row: every check below fails before a row is read."""
    return write_lines(tmp_path / "train.txt", [criteo_line()])


def _options(tmp_path: Path, *overrides: str) -> LaunchOptions:
    return LaunchOptions(config=CONFIGS / "criteo_dlrm.toml", data=str(_one_row(tmp_path)),
                         overrides=[f"train.run_dir={tmp_path / 'run'}",
                                    f"data.cache_dir={tmp_path / 'prepared'}", *overrides])


@pytest.mark.parametrize(("overrides", "needle"), [
    (["model.kind=\"xgboost\""], "kind 'xgboost'"),
    (["data.features=[\"C1\", \"C99\"]"], "C99"),
    (["sharding.default=[\"row_wise\"]"], "'row_wise' is not available on device 'cpu'"),
    (["sharding.tables.t_C3=[\"table_row_wise\"]"], "tables.t_C3"),
    (["train.epoch=3"], "'epoch'"),
    (["layout.kind=\"huge\""], "huge"),
    (["train.device=\"cuda\""], "cuda"),
])
def test_rejected_before_data_or_training(tmp_path: Path, overrides: list[str],
                                          needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        run_train(_options(tmp_path, *overrides))
    assert not (tmp_path / "prepared").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unknown_sharding_table_rejected_before_training(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no embedding table named t_nope"):
        run_train(_options(tmp_path, "sharding.tables.t_nope=[\"table_wise\"]"))
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not (tmp_path / "run" / "spec.json").exists()


@pytest.mark.parametrize("overrides, table", [
    (["layout.dim=6"], "t_C1 has width 6"),
    (["layout.kind=\"unified\"", "layout.unified.probes=8"], "has width 2"),
])
def test_table_width_not_divisible_by_4_rejected_before_training(
        tmp_path: Path, overrides: list[str], table: str) -> None:
    with pytest.raises(ConfigError, match=table):
        run_train(_options(tmp_path, *overrides))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_cli_prints_error_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["train", "--config", str(CONFIGS / "criteo_dlrm.toml"), "--data",
                 str(_one_row(tmp_path)), "--set", "optim.dense_optimizer=\"lion\"",
                 "--set", f"train.run_dir={tmp_path}"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "dense_optimizer" in err
