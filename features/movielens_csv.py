"""An ml-100k folder as the plain CSV tables most public rating data ships in (ratings, movies,
users), with the newest ratings in a separate test file: the input of configs/movielens_csv.toml,
which joins and derives everything from the schema alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from plexrec.features.errors import ConfigError
from plexrec.features.readers.movielens import movielens_files, read_items, read_users


@dataclass(frozen=True)
class MovielensCsv:
    ratings: Path
    test: Path
    train_rows: int
    test_rows: int


def write_movielens_csv(ml_dir: str | Path, out_dir: str | Path, test_fraction: float = 0.2
                        ) -> MovielensCsv:
    """ratings.csv (the oldest ratings) and ratings_test.csv (the newest `test_fraction`),
    movies.csv and users.csv in `out_dir`."""
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test fraction must be in (0, 1), got {test_fraction}")
    ml_dir, out = Path(ml_dir), Path(out_dir)
    movielens_files(ml_dir)
    out.mkdir(parents=True, exist_ok=True)
    ratings = pd.read_csv(ml_dir / "u.data", sep="\t", header=None,
                          names=["user_id", "item_id", "rating", "timestamp"])
    ratings = ratings.iloc[np.argsort(ratings["timestamp"].to_numpy(), kind="stable")]
    cut = int(round(len(ratings) * (1 - test_fraction)))
    ratings.iloc[:cut].to_csv(out / "ratings.csv", index=False)
    ratings.iloc[cut:].to_csv(out / "ratings_test.csv", index=False)
    movies = read_items(ml_dir).reset_index().rename(columns={"item_id": "movie_id"})
    movies[["movie_id", "title", "release_date", "genres"]].to_csv(out / "movies.csv",
                                                                   index=False)
    users = read_users(ml_dir).reset_index()
    users["age"] = users["age"].astype(int)
    users[["user_id", "age", "gender", "occupation", "zip"]].to_csv(out / "users.csv",
                                                                  index=False)
    return MovielensCsv(out / "ratings.csv", out / "ratings_test.csv", cut, len(ratings) - cut)
