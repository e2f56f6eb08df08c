"""Running `plexrec train` as a real subprocess (stdout = the JSON line, stderr = the log), and
the small synthetic Criteo cache in-process runs train on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import CONFIGS, REPO


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


def prepared_synthetic_criteo(root: Path, seed: int, rows: int = 3000) -> Path:
    """`rows` generated Criteo rows written to `root` and prepared with configs/criteo.toml."""
    from plexrec.features.prepare import prepare
    from plexrec.features.schema import load_schema
    from plexrec.features.synth import write_criteo

    write_criteo(root / "criteo.tsv", rows=rows, seed=seed, progress=False)
    return Path(prepare(load_schema(CONFIGS / "criteo.toml"), root / "criteo.tsv",
                        root / "prepared", progress=False).out_dir)
