"""`plexrec tune` as users run it: a bad search space stops before any trial with `error: ...`
naming the file and the key, and exit code 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import CONFIGS, REPO
from tests.training.helpers import plexrec_cmd, train_env


def test_a_mistyped_space_key_stops_before_any_trial(tmp_path: Path) -> None:
    space = tmp_path / "space.toml"
    space.write_text('[params."optim.dense_lrr"]\nkind = "float"\nlow = 1e-4\nhigh = 1e-2\n')
    proc = subprocess.run(
        plexrec_cmd("tune", "--config", str(CONFIGS / "criteo_dlrm.toml"), "--space", str(space),
                    "--trials", "2", "--set", f"train.runs_root={tmp_path / 'runs'}"),
        cwd=REPO, env=train_env(f"sqlite:///{tmp_path / 'mlflow.db'}"), capture_output=True,
        text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stdout == ""
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {space}: [params.\"optim.dense_lrr\"]")
    assert "unknown key 'dense_lrr'" in error
    assert not (tmp_path / "runs").exists()
