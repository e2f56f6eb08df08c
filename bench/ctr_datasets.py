"""The datasets of bench/bench_ctr_peers.py, each cut once into train/valid/test inputs: plexrec
reads the three through `data.path`, `data.valid_path` and `data.test_path`, the baselines read
the same rows as `Frame`s, so every model sees one split.

- criteo10k: the shared Criteo sample (the generator's look-alike when absent), by order:
  rows 1-6,400 train, 6,401-8,000 valid, 8,001-10,000 test.
- movielens: MovieLens-100K (the generator's look-alike when absent) as CTR, rating >= 4 a
  click; the ratings shuffled once by seed 0 and cut 80/10/10, each part a ml-100k folder (its
  u.data a subset, the side files copied) for configs/movielens.toml's reader.
- synthetic1m: 1,000,000 rows of `features.synth.write_criteo(seed=0)`, by order 80/10/10
  (50,000 rows with --quick).
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from bench.samples import CRITEO_10K, ML_100K

CRITEO_DENSE, CRITEO_SPARSE = 13, 26
SPLIT_NAMES = ("train", "valid", "test")
T = TypeVar("T")


@dataclass(frozen=True)
class Frame:
    """One split as the baselines see it. `cats`: one string a row ('' missing), one-hot hashed
    for LR and categories for LightGBM; `multi`: lists of strings, hashed tokens for LR and
    indicator columns for LightGBM; `numbers`: NaN missing, raw for LightGBM and through the
    dataset's `buckets` for LR (linear models need the counts cut into ids)."""

    y: np.ndarray
    cats: dict[str, np.ndarray]
    numbers: dict[str, np.ndarray]
    multi: dict[str, list[list[str]]]


@dataclass(frozen=True)
class Dataset:
    name: str
    data: str
    paths: tuple[Path, Path, Path]
    frames: tuple[Frame, Frame, Frame]
    buckets: Callable[[np.ndarray], np.ndarray]
    split: dict[str, Any]


def _three(items: list[T]) -> tuple[T, T, T]:
    train, valid, test = items
    return train, valid, test


def log_square(x: np.ndarray) -> np.ndarray:
    """The Criteo winners' count buckets: floor(ln(x)^2) above 2, the integer below, '' missing."""
    out = np.full(len(x), "", dtype=object)
    big = ~np.isnan(x) & (x > 2)
    small = ~np.isnan(x) & ~big
    out[big] = ["L" + s for s in np.floor(np.log(x[big]) ** 2).astype(np.int64).astype(str)]
    out[small] = np.floor(x[small]).astype(np.int64).astype(str).tolist()
    return out


def exact(x: np.ndarray) -> np.ndarray:
    """A small integer (a release year) as its own id, '' missing."""
    out = np.full(len(x), "", dtype=object)
    ok = ~np.isnan(x)
    out[ok] = x[ok].astype(np.int64).astype(str).tolist()
    return out


def _criteo_frame(path: Path) -> Frame:
    table = pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False,
                        quoting=csv.QUOTE_NONE)
    numbers = {f"I{j}": pd.to_numeric(table[1 + j], errors="coerce").to_numpy(np.float64)
               for j in range(CRITEO_DENSE)}
    cats = {f"C{j}": table[1 + CRITEO_DENSE + j].to_numpy(object) for j in range(CRITEO_SPARSE)}
    return Frame(table[0].astype(int).to_numpy(), cats, numbers, {})


def _criteo_by_order(name: str, data: str, source: Path, work: Path, cuts: tuple[int, int, int]
                     ) -> Dataset:
    """The first cuts[0] rows train, the next cuts[1] validate, the next cuts[2] test."""
    ends = np.cumsum(cuts)
    paths = _three([work / f"{part}.txt" for part in SPLIT_NAMES])
    with source.open("rb") as src:
        outs = [p.open("wb") for p in paths]
        try:
            for i, line in enumerate(src):
                if i >= ends[-1]:
                    break
                outs[int(np.searchsorted(ends, i, side="right"))].write(line)
        finally:
            for f in outs:
                f.close()
    frames = _three([_criteo_frame(p) for p in paths])
    if sum(len(f.y) for f in frames) < ends[-1]:
        raise SystemExit(f"{source}: need {ends[-1]:,} rows, found {sum(len(f.y) for f in frames):,}")
    starts = [1, *(int(e) + 1 for e in ends[:-1])]
    split = {"kind": "by order", **{part: [s, int(e)] for part, s, e in
                                    zip(SPLIT_NAMES, starts, ends, strict=True)}}
    return Dataset(name, data, paths, frames, log_square, split)


def criteo10k(work: Path, quick: bool) -> Dataset:
    source, data = CRITEO_10K, "real"
    if not source.is_file():
        from plexrec.features.synth import write_criteo

        source, data = work / "criteo-look-alike.txt", "generator look-alike"
        write_criteo(source, 10_000, seed=0, progress=False)
    return _criteo_by_order("criteo10k", data, source, work, (6_400, 1_600, 2_000))


def synthetic1m(work: Path, quick: bool) -> Dataset:
    from plexrec.features.synth import write_criteo

    rows = 50_000 if quick else 1_000_000
    source = work / "synthetic.txt"
    write_criteo(source, rows, seed=0, progress=False)
    cuts = (rows * 8 // 10, rows // 10, rows // 10)
    return _criteo_by_order("synthetic1m", f"features.synth.write_criteo({rows:,} rows, seed 0)",
                            source, work, cuts)


def _movielens_frame(ratings: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame) -> Frame:
    user = users.loc[ratings["user_id"]]
    item = items.loc[ratings["item_id"]]
    cats = {"user_id": ratings["user_id"].to_numpy(object),
            "item_id": ratings["item_id"].to_numpy(object),
            "age_bucket": user["age_bucket"].to_numpy(object),
            "gender": user["gender"].to_numpy(object),
            "occupation": user["occupation"].to_numpy(object),
            "zip3": user["zip3"].fillna("").to_numpy(object)}
    year = pd.to_numeric(item["release_year"], errors="coerce").to_numpy(np.float64)
    genres = [g.split("|") if g else [] for g in item["genres"]]
    return Frame((ratings["rating"].to_numpy() >= 4).astype(np.int64), cats,
                 {"release_year": year}, {"genres": genres})


def movielens(work: Path, quick: bool) -> Dataset:
    from plexrec.features.readers.movielens import read_items, read_users

    source, data = ML_100K, "real"
    if not (source / "u.data").is_file():
        from plexrec.features.synth_movielens import write_movielens

        source, data = work / "ml-100k-look-alike", "generator look-alike"
        write_movielens(source, seed=0, progress=False)
    ratings = pd.read_csv(source / "u.data", sep="\t", header=None,
                          names=["user_id", "item_id", "rating", "timestamp"],
                          dtype={"user_id": str, "item_id": str})
    order = np.random.default_rng(0).permutation(len(ratings))
    a, b = int(len(ratings) * 0.8), int(len(ratings) * 0.9)
    users, items = read_users(source), read_items(source)
    paths: list[Path] = []
    frames: list[Frame] = []
    for part, rows in zip(SPLIT_NAMES, (order[:a], order[a:b], order[b:]), strict=True):
        folder = work / f"ml-{part}"
        folder.mkdir()
        for side in ("u.user", "u.item", "u.genre", "u.occupation"):
            shutil.copyfile(source / side, folder / side)
        subset = ratings.iloc[np.sort(rows)]
        subset.to_csv(folder / "u.data", sep="\t", header=False, index=False)
        paths.append(folder)
        frames.append(_movielens_frame(subset, users, items))
    split = {"kind": "random, numpy default_rng(0) permutation of the ratings",
             **{part: len(f.y) for part, f in zip(SPLIT_NAMES, frames, strict=True)}}
    return Dataset("movielens", data, _three(paths), _three(frames), exact, split)


DATASETS: dict[str, Callable[[Path, bool], Dataset]] = {
    "criteo10k": criteo10k, "movielens": movielens, "synthetic1m": synthetic1m}
