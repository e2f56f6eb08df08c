"""Shared by the retrieval tests: a MovieLens-100K folder (the look-alike, and the real sample
where present) prepared once per module."""

from __future__ import annotations

from pathlib import Path

from plexrec.features.cache import PreparedData
from plexrec.features.prepare import prepare
from plexrec.features.schema import load_schema
from tests.conftest import CONFIGS


def prepared_movielens(source: Path, root: Path) -> PreparedData:
    out = root / "ml100k"
    prepare(load_schema(CONFIGS / "movielens.toml"), source, out, progress=False)
    return PreparedData.open(out)
