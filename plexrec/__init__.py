"""plexrec: recommender embedding tables, from raw logs to online vectors.

The design card's folders (`features/`, `models/`, `training/`, `serving/`, `proto/`, `cli/`) sit at
the repository root and install as `plexrec.features`, `plexrec.models`, ... (see pyproject.toml's
package-dir), so no generic top-level module lands in a user's environment or a pickled model."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("plexrec")
except metadata.PackageNotFoundError:  # a checkout used without `pip install`
    __version__ = "0+unknown"
