"""Every run in a directory of its own: two runs of one config started together both finish, and
`plexrec export --run` of each exports that run's checkpoint."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from plexrec.features.errors import ConfigError
from plexrec.models.snapshot import Snapshot
from plexrec.training.config import parse_config
from plexrec.training.run_dirs import LATEST, create_run_dir, run_dir_for
from tests.conftest import CONFIGS, REPO
from tests.training.helpers import plexrec_cmd, train_cmd, train_env


def _cfg(tmp_path: Path, **train: str) -> object:
    return parse_config({"train": {"runs_root": str(tmp_path / "runs"), **train},
                         "mlflow": {"experiment": "exp one"}}, "t.toml")


def test_each_run_gets_a_fresh_directory(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    dirs = {create_run_dir(cfg) for _ in range(20)}
    assert len(dirs) == 20
    assert {d.parent for d in dirs} == {(tmp_path / "runs" / "exp-one").resolve()}
    assert all(not any(d.iterdir()) for d in dirs)


def test_explicit_run_dir_and_resume(tmp_path: Path) -> None:
    explicit = tmp_path / "mine"
    assert run_dir_for(_cfg(tmp_path, run_dir=str(explicit)), None) == explicit.resolve()
    cfg = _cfg(tmp_path)
    with pytest.raises(ConfigError, match="no unfinished run"):
        run_dir_for(cfg, LATEST)
    old, new = create_run_dir(cfg), create_run_dir(cfg)
    for d in (old, new):
        (d / "spec.json").write_text("{}")
    (new / "result.json").write_text("{}")
    assert run_dir_for(cfg, LATEST) == old
    assert run_dir_for(cfg, old.name) == old
    with pytest.raises(ConfigError, match="nope"):
        run_dir_for(cfg, "nope")


@pytest.mark.slow
def test_concurrent_runs_of_one_config_and_export_by_run(ml_100k: Path, tmp_path: Path,
                                                         mlflow_uri: str) -> None:
    common = ["--config", str(CONFIGS / "movielens_two_tower.toml"), "--data", str(ml_100k),
              # max_steps is exact: 100 steps of 1,024 interactions take two passes of ML-100K
              # (a batch of 8,192 costs the in-batch softmax 64 times as much per step).
              "--set", "train.max_steps=100", "--set", "train.epochs=1",
              "--set", "data.batch_size=1024",
              "--set", "model.deep_mlp=[16]", "--set", f"train.runs_root={tmp_path / 'runs'}"]
    procs = [subprocess.Popen(train_cmd(*common, "--set", f"train.seed={seed}"), cwd=REPO,
                              env=train_env(mlflow_uri), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-4000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    run_dirs = [Path(r["run_dir"]) for r in results]
    assert run_dirs[0] != run_dirs[1] and run_dirs[0].parent == run_dirs[1].parent
    assert len({r["run_id"] for r in results}) == 2
    assert [r["steps"] for r in results] == [100, 100]
    assert all(r["test_recall_at_10"] > 0 for r in results)

    vectors = []
    for result, run_dir in zip(results, run_dirs, strict=True):
        proc = subprocess.run(plexrec_cmd("export", "--run", result["run_id"], "--out",
                                          str(tmp_path / "snapshots")),
                              cwd=REPO, env=train_env(mlflow_uri), capture_output=True,
                              text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-4000:]
        snap = Snapshot.open(json.loads(proc.stdout.strip().splitlines()[-1])["snapshot"])
        assert snap.run_id == result["run_id"]
        assert snap.manifest["training"]["run_dir"] == str(run_dir)
        # The run's final fit (every row, the best checkpoint's steps) is what export ships.
        assert snap.manifest["training"]["model"] == "final_fit"
        assert snap.manifest["training"]["checkpoint_step"] == result["best_step"]
        assert snap.manifest["training"]["checkpoint"] == (
            f"final_fit/checkpoints/best/step-{result['best_step']}")
        vectors.append(np.asarray(snap.vectors("item")))
    assert not np.allclose(vectors[0], vectors[1])
