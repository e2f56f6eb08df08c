"""Where the benchmarks find the real samples: the folder named by `PLEXREC_DATA`, else
`../shared/data` beside the repository (the samples' terms forbid copying them into it)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("PLEXREC_DATA", REPO.parent / "shared" / "data"))
CRITEO_10K = DATA_DIR / "criteo-kaggle-10k" / "train.txt"
ML_100K = DATA_DIR / "ml-100k"
