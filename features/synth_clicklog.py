"""A synthetic click log in the Avazu CTR layout (what configs/clicklog.toml reads): a header,
`hour` as a YYMMDDHH string over ten days, Zipf-distributed site and app ids, and a planted
click signal in the hour of day, the site, the app and the site x app pair, so that the derived
features of the schema have something to find. The file depends only on (rows, seed)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from plexrec.features.errors import ConfigError
from plexrec.features.synth import SynthStats

COLUMNS = ("id", "click", "hour", "banner_pos", "site_id", "site_category", "app_id",
           "app_category", "device_type")


def _zipf(rng: np.random.Generator, n: int, size: int, a: float = 1.2) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** a
    return rng.choice(n, size=size, p=weights / weights.sum())


def write_clicklog(path: str | Path, rows: int, seed: int = 0, progress: bool = False
                   ) -> SynthStats:
    if rows < 1:
        raise ConfigError(f"rows must be >= 1, got {rows}")
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    effects = np.random.default_rng(12345)
    day = rng.integers(0, 10, rows)
    hour = rng.integers(0, 24, rows)
    site, app = _zipf(rng, 2000, rows), _zipf(rng, 1000, rows)
    site_effect, app_effect = effects.normal(0, 0.6, 2000), effects.normal(0, 0.6, 1000)
    pair_effect = effects.normal(0, 0.8, 4096)
    banner = rng.integers(0, 3, rows)
    device = rng.choice(4, rows, p=[0.7, 0.2, 0.07, 0.03])
    logit = (-1.6 + 0.8 * np.sin(hour / 24 * 2 * np.pi) + site_effect[site] + app_effect[app]
             + pair_effect[(site * 31 + app) % 4096] + 0.3 * (banner == 1) - 0.4 * (device == 2))
    click = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame({
        "id": np.arange(rows) + seed * 10_000_000,
        "click": click,
        "hour": [f"1410{21 + d:02d}{h:02d}" for d, h in zip(day, hour, strict=True)],
        "banner_pos": banner,
        "site_id": [f"s{v:05x}" for v in site],
        "site_category": [f"c{v % 23}" for v in site],
        "app_id": [f"a{v:05x}" for v in app],
        "app_category": [f"k{v % 17}" for v in app],
        "device_type": device})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return SynthStats("clicklog", rows, int(click.sum()), time.perf_counter() - start,
                      (str(path),), path.stat().st_size)
