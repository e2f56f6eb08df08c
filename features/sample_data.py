"""Where the real public samples live: the folder named by `PLEXREC_DATA`, else `../shared/data`
beside the repository. Their terms forbid copying them into the repository, so configs name them
as `${PLEXREC_DATA}/criteo-kaggle-10k/train.txt` and `${PLEXREC_DATA}/ml-100k`; the Criteo sample
is the first 10,000 rows of the Criteo Kaggle Display Advertising Challenge train.txt, the
MovieLens one GroupLens' ml-100k.zip unpacked."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "PLEXREC_DATA"
REPO = Path(__file__).resolve().parents[1]
CRITEO_10K = "criteo-kaggle-10k/train.txt"
ML_100K = "ml-100k"


def sample_data_dir() -> Path:
    return Path(os.environ.get(ENV) or REPO.parent / "shared" / "data")


def expand(path: str) -> str:
    """`${PLEXREC_DATA}` (or `$PLEXREC_DATA`) in a configured path, replaced by the folder."""
    root = str(sample_data_dir())
    return path.replace("${" + ENV + "}", root).replace("$" + ENV, root)


def missing_hint(path: str) -> str:
    """What to say when a configured sample path does not exist."""
    if ENV not in path:
        return ""
    return (f" (the real samples are not in the repository: set {ENV} to the folder holding "
            f"{CRITEO_10K} and {ML_100K}/, or pass --data; `plexrec data synth` writes "
            "look-alikes)")
