"""Running `plexrec train` as a real subprocess (stdout = the JSON line, stderr = the log)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def plexrec_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "plexrec.cli.main", *args]


def train_cmd(*args: str) -> list[str]:
    return plexrec_cmd("train", "--quiet", *args)


def train_env(mlflow_uri: str | None = None) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    if mlflow_uri:
        env["MLFLOW_TRACKING_URI"] = mlflow_uri
    return env


def run_train(*args: str, mlflow_uri: str | None = None, log: Path | None = None) -> dict:
    proc = subprocess.run(train_cmd(*args), cwd=REPO, env=train_env(mlflow_uri),
                          capture_output=True, text=True, timeout=600, check=False)
    if log is not None:
        log.write_text(proc.stderr)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])
