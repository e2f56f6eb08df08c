"""Shared by the retrieval tests: the real MovieLens-100K sample prepared once per session."""

from __future__ import annotations

from pathlib import Path

from plexrec.features.cache import PreparedData
from plexrec.features.prepare import prepare
from plexrec.features.schema import load_schema
from tests.conftest import CONFIGS, ML_100K


def prepared_movielens(root: Path) -> PreparedData:
    out = root / "ml100k"
    prepare(load_schema(CONFIGS / "movielens.toml"), ML_100K, out, progress=False)
    return PreparedData.open(out)
