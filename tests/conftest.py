"""Shared fixtures: a private redis-server on a free port, a temporary MLflow store, and the paths
of the real data samples in ../shared/data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from plexrec.serving.redis_process import RedisProcess

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CRITEO_10K = SHARED_DATA / "criteo-kaggle-10k" / "train.txt"
ML_100K = SHARED_DATA / "ml-100k"
CONFIGS = REPO / "configs"

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
