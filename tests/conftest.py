"""Shared fixtures: a private redis-server on a free port, a temporary MLflow store, and the
sample inputs.

`criteo_10k` and `ml_100k` are a Criteo Kaggle TSV of 10,000 rows and a MovieLens-100K folder.
Every test that takes one runs on a look-alike written by the project's own generator (so a fresh
clone has it) and, in addition, on the real sample when the data folder is present: the folder
named by `PLEXREC_DATA`, else the shared data folder beside the repository (CI has it; see
features/sample_data.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis

from plexrec.features import sample_data
from plexrec.features.synth import write_criteo
from plexrec.features.synth_movielens import write_movielens
from plexrec.serving.redis_process import RedisProcess

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
DATA_DIR = sample_data.sample_data_dir()
REAL_CRITEO_10K = DATA_DIR / sample_data.CRITEO_10K
REAL_ML_100K = DATA_DIR / sample_data.ML_100K
CRITEO_SAMPLE_ROWS = 10_000
CRITEO_SAMPLE_LABEL_RATE = 0.218


def _sources(real: Path) -> list[str]:
    return ["synthetic", "real"] if real.exists() else ["synthetic"]


def is_real(path: Path) -> bool:
    """Whether a sample fixture's path is the real sample (not the look-alike)."""
    return Path(path) in (REAL_CRITEO_10K, REAL_ML_100K)


def criteo_label_rate(path: Path) -> float:
    """The fraction of clicks in a Criteo TSV, read off its first column."""
    with open(path, "rb") as f:
        labels = [line[:1] == b"1" for line in f]
    return sum(labels) / len(labels)


def per_input(path: Path, *, real: T, synthetic: T) -> T:
    """A value that depends on the sample, e.g. an AUC floor measured on each input."""
    return real if is_real(path) else synthetic


@pytest.fixture(scope="session", params=_sources(REAL_CRITEO_10K))
def criteo_10k(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Criteo sample: 10,000 Kaggle TSV rows (label, I1-I13, C1-C26)."""
    if request.param == "real":
        return REAL_CRITEO_10K
    path = tmp_path_factory.mktemp("criteo-look-alike") / "train.txt"
    write_criteo(path, CRITEO_SAMPLE_ROWS, seed=0, label_rate=CRITEO_SAMPLE_LABEL_RATE,
                 progress=False)
    return path


@pytest.fixture(scope="session", params=_sources(REAL_ML_100K))
def ml_100k(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MovieLens-100K folder (u.data, u.user, u.item, u.genre, u.occupation)."""
    if request.param == "real":
        return REAL_ML_100K
    path = tmp_path_factory.mktemp("ml-100k-look-alike") / "ml-100k"
    write_movielens(path, seed=0, progress=False)
    return path

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def redis_process() -> Iterator[RedisProcess]:
    with RedisProcess() as proc:
        yield proc


@pytest.fixture()
def redis_url(redis_process: RedisProcess) -> Iterator[str]:
    """A URL of the private server, flushed before each test."""
    client = redis.Redis.from_url(redis_process.url)
    client.flushall()
    client.close()
    yield redis_process.url


@pytest.fixture()
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real MLflow tracking store in a temporary directory, exported as MLFLOW_TRACKING_URI."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
