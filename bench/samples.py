"""Where the benchmarks find the real samples (features/sample_data.py: `PLEXREC_DATA`, else
`../shared/data` beside the repository)."""

from __future__ import annotations

from plexrec.features import sample_data

DATA_DIR = sample_data.sample_data_dir()
CRITEO_10K = DATA_DIR / sample_data.CRITEO_10K
ML_100K = DATA_DIR / sample_data.ML_100K
