"""Run config parsing: typed sections, typed `--set` overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from plexrec.features.errors import ConfigError
from plexrec.training.config import load_config, parse_config
from plexrec.training.trainer import lr_factor
from tests.conftest import CONFIGS


@pytest.mark.parametrize("name", ["criteo_dlrm.toml", "criteo_dcn.toml", "criteo_autoint.toml",
                                  "synthetic_dlrm.toml"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert cfg.model.kind in ("dlrm", "dcn", "autoint")
    assert cfg.data.schema in ("configs/criteo.toml", "configs/criteo_buckets.toml")


def test_overrides_are_typed_by_the_dataclass() -> None:
    cfg = load_config(CONFIGS / "criteo_dlrm.toml", [
        "train.epochs=7", "optim.dense_lr=1", "model.top_mlp=[8, 4]", "train.run_dir=/x/y",
        "sharding.tables.t_C1=[\"column_wise\"]", "layout.budget=\"8MB\"", "data.by_time=true"])
    assert cfg.train.epochs == 7
    assert cfg.optim.dense_lr == 1.0 and isinstance(cfg.optim.dense_lr, float)
    assert cfg.model.top_mlp == [8, 4]
    assert cfg.train.run_dir == "/x/y"
    assert cfg.sharding.tables == {"t_C1": ["column_wise"]}
    assert cfg.layout["budget"] == "8MB"
    assert cfg.data.by_time is True


@pytest.mark.parametrize(("override", "needle"), [
    ("train.epoch=3", "'epoch'"),
    ("nosuch.key=1", "'nosuch'"),
    ("train.epochs=many", "[train] epochs = 'many'"),
    ("model.top_mlp=3", "[model] top_mlp = 3"),
    ("train.epochs", "key=value"),
])
def test_bad_override_names_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        load_config(CONFIGS / "criteo_dlrm.toml", [override])


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("[train]\nepochs = 1\nbatchsize = 3\n")
    with pytest.raises(ConfigError, match="batchsize"):
        load_config(path)


@pytest.mark.parametrize(("raw", "needle"), [
    ({"optim": {"decay": "step"}}, "decay"),
    ({"data": {"split": [0.5, 0.2]}}, "split"),
    ({"train": {"device": "tpu"}}, "device"),
    ({"optim": {"dense_optimizer": "lion"}}, "dense_optimizer"),
])
def test_bad_values_are_rejected(raw: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_config(raw)


def test_learning_rate_warms_up_then_decays() -> None:
    cfg = parse_config({"optim": {"warmup_steps": 10, "decay": "linear", "min_lr_ratio": 0.1}})
    factors = [lr_factor(s, cfg, 110) for s in range(110)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(0.1 + 0.9 / 100, abs=1e-9)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    cosine = parse_config({"optim": {"decay": "cosine"}})
    assert lr_factor(50, cosine, 100) == pytest.approx(0.5)


@pytest.mark.parametrize("override, needle", [
    ("train.log_every=0", "log_every"),
    ("optim.warmup_steps=-1", "warmup_steps"),
    ("optim.min_lr_ratio=2.0", "min_lr_ratio"),
])
def test_out_of_range_values_are_rejected_before_training(override: str, needle: str) -> None:
    from plexrec.training.config import check_values

    with pytest.raises(ConfigError, match=needle):
        check_values(load_config(CONFIGS / "criteo_dlrm.toml", [override]))


def test_data_paths_with_quotes_survive_the_override(tmp_path: Path) -> None:
    from plexrec.training.launch import LaunchOptions, load_run_config

    odd = str(tmp_path / 'a"b\\c.txt')
    opts = LaunchOptions(config=CONFIGS / "criteo_dlrm.toml", data=odd)
    assert load_run_config(opts).data.path == odd


RUN_CONFIGS = sorted(p.name for p in CONFIGS.glob("*.toml") if "[model]" in p.read_text())


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_every_shipped_run_config_loads(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert cfg.data.schema and cfg.data.path and not cfg.train.run_dir


@pytest.mark.parametrize("name", [n for n in RUN_CONFIGS
                                  if "PLEXREC_DATA" in (CONFIGS / n).read_text()])
def test_sample_paths_follow_plexrec_data(name: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from plexrec.training.launch import LaunchOptions, run_train

    monkeypatch.setenv("PLEXREC_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="set PLEXREC_DATA") as exc:
        run_train(LaunchOptions(config=CONFIGS / name,
                                overrides=[f"train.runs_root={tmp_path / 'runs'}"]))
    assert str(tmp_path / "nowhere") in str(exc.value)
