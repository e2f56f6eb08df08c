"""Prepared caches of the sample inputs (look-alike and, where present, real), built once per
test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from plexrec.features.cache import PreparedData
from plexrec.features.prepare import prepare
from plexrec.features.schema import load_schema
from tests.conftest import CONFIGS


@pytest.fixture(scope="session")
def criteo_cache(tmp_path_factory: pytest.TempPathFactory, criteo_10k: Path) -> PreparedData:
    out = tmp_path_factory.mktemp("criteo") / "cache"
    prepare(load_schema(CONFIGS / "criteo.toml"), criteo_10k, out, progress=False)
    return PreparedData.open(out)


@pytest.fixture(scope="session")
def movielens_cache(tmp_path_factory: pytest.TempPathFactory, ml_100k: Path) -> PreparedData:
    out = tmp_path_factory.mktemp("movielens") / "cache"
    prepare(load_schema(CONFIGS / "movielens.toml"), ml_100k, out, progress=False)
    return PreparedData.open(out)


@pytest.fixture()
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"
