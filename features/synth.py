"""Synthetic datasets with a known, learnable signal, so that AUC and recall mean something.

Every random number of row r comes from a counter-based generator (Philox) positioned at row r,
so the bytes written depend only on (seed, row) and never on the chunk size; rows are generated
and written a chunk at a time, so memory stays bounded for any row count.

- `write_criteo`: Criteo Kaggle TSV (label, I1..I13, C1..C26 as 8-hex-digit ids, empty fields)
  with Zipf-distributed ids and a planted logistic click model.
- `write_interactions`: a denormalised user-item interaction CSV (with user, item and context side
  features) driven by latent user and item vectors, plus the user and item catalogues."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from plexrec.features.errors import ConfigError, DataError
from plexrec.features.hashing import hash_ids_np

# ---------------------------------------------------------------- shared machinery


@dataclass(frozen=True)
class SynthStats:
    """What a generator wrote; `label_rate` is the fraction of positive rows."""

    kind: str
    rows: int
    positives: int
    seconds: float
    paths: tuple[str, ...]
    bytes: int
    users: int | None = None
    items: int | None = None

    @property
    def label_rate(self) -> float:
        return self.positives / self.rows if self.rows else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "paths": list(self.paths), "label_rate": self.label_rate}


def _uniforms(key: int, start: int, n: int, width: int) -> np.ndarray:
    """[n, width] uniforms in [0, 1); row i is the same numbers whatever `start` splits it off:
    Philox is counter based and advances in blocks of 4 draws, hence width % 4 == 0."""
    assert width % 4 == 0
    bits = np.random.Philox(key=key & ((1 << 128) - 1))
    bits.advance(start * width // 4)
    return np.random.Generator(bits).random((n, width))


def _normals(u: np.ndarray) -> np.ndarray:
    """Box-Muller on an even number of uniform columns: one normal per uniform, no rejection."""
    half = u.shape[1] // 2
    radius = np.sqrt(-2.0 * np.log1p(-u[:, :half]))
    angle = 2.0 * np.pi * u[:, half:2 * half]
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)], axis=1)


def _hash_unit(ids: np.ndarray, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-id pseudo-random (uint32 value, weight with mean 0 and variance 1), from one hash:
    the low 32 bits name the id, the high 30 bits give a triangular variate."""
    h = hash_ids_np(ids, seed=salt)
    low = (h & 0xFFFFFFFF).astype(np.uint32)
    a = ((h >> 33) & 0x7FFF).astype(np.float64)
    b = ((h >> 48) & 0x7FFF).astype(np.float64)
    tri = (a + b + 1.0) / 32768.0 - 1.0
    return low, tri * np.sqrt(6.0)


def _salt(seed: int, *parts: int) -> int:
    """A stream key per (seed, purpose), so generators for different purposes never share draws."""
    out = seed & ((1 << 63) - 1)
    for p in parts:
        mixed = (out * 1_000_003 + p) & ((1 << 63) - 1)
        out = int(hash_ids_np(np.array([mixed], dtype=np.int64), 0x51E7)[0])
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _calibrate_bias(logits: np.ndarray, target_rate: float) -> float:
    """The bias b with mean(sigmoid(b + logits)) == target_rate (bisection; monotone in b)."""
    lo, hi = -30.0, 30.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if _sigmoid(mid + logits).mean() < target_rate:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class ZipfSampler:
    """Truncated Zipf over ranks 1..n, P(k) ~ k^-s: an exact inverse-CDF table for the first
    2^16 ranks, the integral of t^-s (midpoint rule) for the rest, so a 10M-id feature costs
    a 512 KiB table and a vectorised closed form."""

    HEAD = 1 << 16

    def __init__(self, n: int, s: float) -> None:
        if n < 1:
            raise ConfigError(f"zipf cardinality must be >= 1, got {n}")
        if abs(s - 1.0) < 1e-9 or s <= 0:
            raise ConfigError(f"zipf exponent must be > 0 and != 1, got {s}")
        self.n, self.s = n, s
        self.head = min(n, self.HEAD)
        self.cdf = np.cumsum(np.arange(1, self.head + 1, dtype=np.float64) ** -s)
        self.head_mass = float(self.cdf[-1])
        self._a = (self.head + 0.5) ** (1.0 - s)
        tail = ((n + 0.5) ** (1.0 - s) - self._a) / (1.0 - s) if n > self.head else 0.0
        self.total = self.head_mass + tail

    def ranks(self, u: np.ndarray) -> np.ndarray:
        """Ranks (1 = most frequent) for uniforms u in [0, 1)."""
        v = u * self.total
        ranks = np.searchsorted(self.cdf, v, side="right").astype(np.int64) + 1
        tail = v >= self.head_mass
        if tail.any():
            w = v[tail] - self.head_mass
            x = (self._a + (1.0 - self.s) * w) ** (1.0 / (1.0 - self.s))
            ranks[tail] = np.clip(np.rint(x), self.head + 1, self.n).astype(np.int64)
        return np.minimum(ranks, self.n)


class _RankTable:
    """Per-rank id value and weight of one feature: a table for the head ranks, hashing for the
    tail, so no table is ever as large as the cardinality."""

    def __init__(self, head: int, salt: int) -> None:
        self.salt = salt
        self.value, self.weight = _hash_unit(np.arange(head + 1, dtype=np.int64), salt)

    def lookup(self, ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inside = ranks < len(self.value)
        if inside.all():
            return self.value[ranks], self.weight[ranks]
        value = np.empty(ranks.shape, dtype=np.uint32)
        weight = np.empty(ranks.shape, dtype=np.float64)
        value[inside], weight[inside] = self.value[ranks[inside]], self.weight[ranks[inside]]
        value[~inside], weight[~inside] = _hash_unit(ranks[~inside], self.salt)
        return value, weight


def _check_counts(rows: int, chunk_rows: int) -> None:
    if rows < 0:
        raise ConfigError(f"rows must be >= 0, got {rows}")
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be >= 1, got {chunk_rows}")


class _Progress:
    """Progress lines on stderr, at most one every couple of seconds."""

    def __init__(self, kind: str, rows: int, enabled: bool) -> None:
        self.kind, self.rows, self.enabled = kind, rows, enabled
        self.t0 = self.last = time.perf_counter()

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if self.enabled and (now - self.last >= 2.0 or done == self.rows):
            self.last = now
            pct = 100.0 * done / self.rows if self.rows else 100.0
            print(f"synth {self.kind}: {done:,}/{self.rows:,} rows ({pct:.0f}%) "
                  f"{now - self.t0:.1f}s", file=sys.stderr, flush=True)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0


def _write_chunks(path: Path, rows: int, chunk_rows: int, header: bytes,
                  chunk: Callable[[int, int], tuple[bytes, int]], progress: _Progress) -> int:
    """Writes header + chunk(start, n) for consecutive ranges to a temporary file renamed into
    place at the end (an interrupted run never leaves a plausible-looking file); returns the
    number of positive labels."""
    tmp = path.with_name(path.name + ".tmp")
    positives = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(header)
            for start in range(0, rows, chunk_rows):
                n = min(chunk_rows, rows - start)
                data, pos = chunk(start, n)
                f.write(data)
                positives += pos
                progress.update(start + n)
        tmp.replace(path)
    except OSError as exc:
        if tmp.is_file():
            tmp.unlink()
        raise DataError(f"cannot write synthetic data: {exc.strerror}", path=str(path)) from None
    return positives


# ---------------------------------------------------------------- Criteo

CRITEO_CARDINALITIES = (1460, 583, 10_000_000, 2_000_000, 305, 24, 12517, 633, 3, 93145, 5683,
                        8_000_000, 3194, 27, 14992, 5_000_000, 10, 5652, 2172, 4, 7_000_000, 18,
                        15, 286181, 105, 142572)
# Zipf exponent per categorical feature, within the 1.05-1.2 range seen in click logs.
_CAT_EXPONENT = (1.10, 1.08, 1.05, 1.06, 1.20, 1.15, 1.07, 1.12, 1.20, 1.08, 1.10, 1.05, 1.09,
                 1.15, 1.08, 1.06, 1.18, 1.09, 1.10, 1.20, 1.05, 1.16, 1.15, 1.07, 1.12, 1.08)
# Importance (weight scale) of each categorical feature in the planted click model.
_CAT_IMPORTANCE = (0.35, 0.45, 0.50, 0.40, 0.25, 0.30, 0.35, 0.25, 0.20, 0.45, 0.30, 0.40, 0.30,
                   0.25, 0.35, 0.45, 0.20, 0.30, 0.35, 0.15, 0.40, 0.20, 0.25, 0.40, 0.25, 0.35)
# Weights shrink for rare ids (rank r scales by (1 + r / _RARE_RANK) ** -0.5): frequent ids carry
# the signal, as in real logs, so a model that can only learn seen ids still does well.
_RARE_RANK = 2000.0
# Dense counts: log(1 + I) ~ Normal(log(1 + median), sigma fitted to the 90th percentile), as
# measured on the Kaggle sample; every count shares a per-row "activity" factor.
_INT_MEDIAN = (1, 3, 7, 4, 2480, 40, 3, 7, 41, 0.3, 1, 0.3, 5)
_INT_P90 = (8, 192, 52, 20, 32443, 334, 30, 35, 308, 1.5, 5, 2, 27)
_INT_EFFECT = (0.25, 0.10, -0.10, 0.0, -0.05, -0.20, 0.15, 0.0, 0.0, 0.10, 0.30, 0.0, -0.15)
_INT_CAP = 99_999_999
_ACTIVITY_LOADING = 0.6
# Missing values come in groups that go missing together (as in the Kaggle data), with its rates.
_MISSING_GROUPS: tuple[tuple[float, tuple[str, ...]], ...] = (
    (0.448, ("I1", "I10")), (0.204, ("I3",)), (0.198, ("I4", "I13")),
    (0.049, ("I5", "I7", "I9", "I11")), (0.251, ("I6",)), (0.001, ("I8",)), (0.774, ("I12",)),
    (0.036, ("C3", "C4", "C12", "C16", "C21", "C24")), (0.133, ("C6",)),
    (0.45, ("C19", "C20", "C25", "C26")), (0.818, ("C22",)),
)
CRITEO_LABEL_RATE = 0.23
_CROSS_TOP = 20
_N_CAT, _N_INT = 26, 13
_U_CAT = 0
_U_NORMAL = _N_CAT
_U_MISSING = _U_NORMAL + 14
_U_LABEL = _U_MISSING + len(_MISSING_GROUPS)
_U_WIDTH = 52
_CALIBRATION_ROWS = 1 << 15


@dataclass(frozen=True)
class CriteoBlock:
    """Rows [start, start + n) of a synthetic Criteo dataset, before formatting. `ranks` are
    popularity ranks (1 = most frequent, 0 = missing); `logits` the true click log-odds."""

    labels: np.ndarray
    ints: np.ndarray
    int_missing: np.ndarray
    ids: np.ndarray
    ranks: np.ndarray
    logits: np.ndarray

    @property
    def cat_missing(self) -> np.ndarray:
        return self.ranks == 0


class CriteoGenerator:
    """The planted model for one seed: samplers, per-id weights and the calibrated bias."""

    def __init__(self, seed: int = 0, label_rate: float = CRITEO_LABEL_RATE) -> None:
        self.seed = seed
        self.key = _salt(seed, 1)
        self.samplers = [ZipfSampler(n, s) for n, s in zip(CRITEO_CARDINALITIES, _CAT_EXPONENT,
                                                          strict=True)]
        self.tables = [_RankTable(z.head, _salt(seed, 100 + f)) for f, z in
                       enumerate(self.samplers)]
        self.importance = np.array(_CAT_IMPORTANCE)
        self.cross_salt = _salt(seed, 7)
        med, p90 = np.array(_INT_MEDIAN, float), np.array(_INT_P90, float)
        self.int_mu = np.log1p(med)
        self.int_sigma = (np.log1p(p90) - self.int_mu) / 1.2816
        names = [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
        self.group_of = np.zeros(len(names), dtype=np.int64) - 1
        for g, (_, cols) in enumerate(_MISSING_GROUPS):
            for c in cols:
                self.group_of[names.index(c)] = g
        self.missing_rate = np.array([r for r, _ in _MISSING_GROUPS])
        self.bias = 0.0
        self.bias = _calibrate_bias(self.block(0, _CALIBRATION_ROWS, labels=False).logits,
                                    label_rate)

    def _missing(self, u: np.ndarray, first: int, count: int) -> np.ndarray:
        groups = u[:, _U_MISSING:_U_MISSING + len(_MISSING_GROUPS)] < self.missing_rate
        gidx = self.group_of[first:first + count]
        out = np.zeros((len(u), count), dtype=bool)
        has = gidx >= 0
        out[:, has] = groups[:, gidx[has]]
        return out

    def block(self, start: int, n: int, labels: bool = True) -> CriteoBlock:
        u = _uniforms(self.key, start, n, _U_WIDTH)
        normals = _normals(u[:, _U_NORMAL:_U_NORMAL + 14])
        activity = normals[:, 13:14]
        z = _ACTIVITY_LOADING * activity + np.sqrt(1 - _ACTIVITY_LOADING ** 2) * normals[:, :13]
        int_missing = self._missing(u, 0, _N_INT)
        ints = np.floor(np.expm1(self.int_mu + self.int_sigma * z))
        ints = np.clip(ints, 0, _INT_CAP).astype(np.int64)
        ints[:, 1] = np.where(z[:, 1] < -1.29, -1, ints[:, 1])
        observed_z = np.where(int_missing, 0.0, z)
        logit = self.bias + 0.15 * activity[:, 0]
        for j, effect in enumerate(_INT_EFFECT):
            logit += effect * observed_z[:, j]

        cat_missing = self._missing(u, _N_INT, _N_CAT)
        ranks = np.zeros((n, _N_CAT), dtype=np.int64)
        ids = np.zeros((n, _N_CAT), dtype=np.uint32)
        for f in range(_N_CAT):
            r = self.samplers[f].ranks(u[:, _U_CAT + f])
            r[cat_missing[:, f]] = 0
            ranks[:, f] = r
            ids[:, f], w = self.tables[f].lookup(r)
            shrink = 1.0 / np.sqrt(1.0 + r / _RARE_RANK)
            logit += self.importance[f] * shrink * w
        logit += self._interactions(ranks, observed_z)
        if labels:
            y = (u[:, _U_LABEL] < _sigmoid(logit)).astype(np.int8)
        else:
            y = np.zeros(n, dtype=np.int8)
        return CriteoBlock(labels=y, ints=ints, int_missing=int_missing, ids=ids, ranks=ranks,
                           logits=logit)

    def _interactions(self, ranks: np.ndarray, z: np.ndarray) -> np.ndarray:
        """A C1 x C2 cross among their top ids (what DCN/DLRM interactions can find) and a
        C5-dependent slope on I1 (a dense-categorical interaction)."""
        r1, r2 = ranks[:, 0], ranks[:, 1]
        top = (r1 >= 1) & (r1 <= _CROSS_TOP) & (r2 >= 1) & (r2 <= _CROSS_TOP)
        cross = np.zeros(len(ranks))
        if top.any():
            _, w = _hash_unit(r1[top] * 1024 + r2[top], self.cross_salt)
            cross[top] = 0.5 * w
        r5 = ranks[:, 4]
        slope = np.where((r5 >= 1) & (r5 <= 10), np.where(r5 % 2 == 0, 0.4, -0.4), 0.0)
        return cross + slope * z[:, 0]


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_POW10 = 10 ** np.arange(7, -1, -1, dtype=np.int64)
_INT_WIDTH = 10  # sign + 8 digits + separator
_HEX_WIDTH = 9   # 8 digits + separator


def format_criteo(block: CriteoBlock) -> bytes:
    """Kaggle TSV lines. Every field gets a fixed-width slot in a byte matrix (unused bytes 0),
    then the zeros are dropped: variable-width text without a Python loop over rows."""
    n = len(block.labels)
    width = 2 + _N_INT * _INT_WIDTH + _N_CAT * _HEX_WIDTH
    out = np.zeros((n, width), dtype=np.uint8)
    out[:, 0] = ord("0") + block.labels
    out[:, 1] = ord("\t")

    value = np.abs(block.ints)
    present = ~block.int_missing
    ints = np.zeros((n, _N_INT, _INT_WIDTH), dtype=np.uint8)
    ints[:, :, 0] = np.where(present & (block.ints < 0), ord("-"), 0)
    for k, p in enumerate(_POW10):
        digit = (value // p) % 10
        shown = present & ((value >= p) | (p == 1))
        ints[:, :, 1 + k] = np.where(shown, ord("0") + digit, 0)
    ints[:, :, -1] = ord("\t")
    out[:, 2:2 + _N_INT * _INT_WIDTH] = ints.reshape(n, -1)

    hexes = np.zeros((n, _N_CAT, _HEX_WIDTH), dtype=np.uint8)
    present = ~block.cat_missing
    for k in range(8):
        nibble = (block.ids >> np.uint32(28 - 4 * k)) & np.uint32(0xF)
        hexes[:, :, k] = np.where(present, _HEX[nibble], 0)
    hexes[:, :, -1] = ord("\t")
    hexes[:, -1, -1] = ord("\n")
    out[:, 2 + _N_INT * _INT_WIDTH:] = hexes.reshape(n, -1)
    flat = out.reshape(-1)
    return flat[flat != 0].tobytes()


def write_criteo(path: str | Path, rows: int, seed: int = 0, chunk_rows: int = 200_000,
                 progress: bool = True, label_rate: float = CRITEO_LABEL_RATE) -> SynthStats:
    """Writes `rows` synthetic Criteo Kaggle rows (no header, 40 tab-separated fields) to `path`;
    the file depends only on (rows, seed, label_rate)."""
    _check_counts(rows, chunk_rows)
    if not 0.0 < label_rate < 1.0:
        raise ConfigError(f"label_rate must be in (0, 1), got {label_rate}")
    path = Path(path)
    gen = CriteoGenerator(seed, label_rate)
    prog = _Progress("criteo", rows, progress)

    def chunk(start: int, n: int) -> tuple[bytes, int]:
        block = gen.block(start, n)
        return format_criteo(block), int(block.labels.sum())

    positives = _write_chunks(path, rows, chunk_rows, b"", chunk, prog)
    stats = SynthStats(kind="criteo", rows=rows, positives=positives, seconds=prog.seconds,
                       paths=(str(path),), bytes=path.stat().st_size)
    if progress:
        print(f"synth criteo: wrote {rows:,} rows to {path} ({stats.bytes / 2**20:.1f} MiB), "
              f"label rate {stats.label_rate:.4f}, {stats.seconds:.1f}s", file=sys.stderr)
    return stats


# ---------------------------------------------------------------- user-item interactions

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp", "label", "device", "user_age",
                       "user_country", "user_segment", "item_category", "item_tags",
                       "item_price")
USER_COLUMNS = ("user_id", "user_age", "user_country", "user_segment")
ITEM_COLUMNS = ("item_id", "item_category", "item_tags", "item_price")
INTERACTIONS_FILE = "interactions.csv"
CATALOG_DIR = "catalog"  # a subdirectory, so a reader pointed at out_dir sees one CSV only

_COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "ES", "IT", "MX", "AU", "NL", "SE",
              "PL", "TR", "KR", "ID", "AR", "ZA", "NG", "EG", "PH", "VN", "TH", "CO", "CL", "PT",
              "BE", "CH", "AT", "NO", "DK", "FI", "IE", "NZ", "SG", "MY", "CZ", "GR")
_SEGMENTS = ("casual", "regular", "power", "bargain", "premium", "student", "family", "pro")
_DEVICES = ("mobile", "desktop", "tablet")
_DEVICE_P = np.cumsum([0.6, 0.3, 0.1])
_DIM = 16
_N_TAGS = 64
_CANDIDATES = 48
_AFFINITY_SHARE = 0.85
_AFFINITY_SHARPNESS = 12.0
_ITEM_EXPONENT = 0.95
_START_TIME = 1_767_225_600  # 2026-01-01T00:00:00Z
_GAP_SECONDS = 30
_I_CAND = 0
_I_GUMBEL = _CANDIDATES
_I_USER = 2 * _CANDIDATES
_I_MODE, _I_DEVICE, _I_LABEL, _I_TIME = _I_USER + 1, _I_USER + 2, _I_USER + 3, _I_USER + 4
_I_WIDTH = 2 * _CANDIDATES + 8
INTERACTIONS_LABEL_RATE = 0.35


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class InteractionGenerator:
    """Users and items with latent vectors built from their side features plus individual noise;
    a row picks a user (activity Zipf), then an item either by popularity alone or as the best
    of popularity-sampled candidates under user affinity; the label is Bernoulli of
    sigmoid(affinity + side effects). Everything is a function of the seed."""

    def __init__(self, seed: int, users: int, items: int,
                 label_rate: float = INTERACTIONS_LABEL_RATE) -> None:
        if users < 1 or items < 1:
            raise ConfigError(f"users and items must be >= 1, got users={users}, items={items}")
        self.users, self.items = users, items
        self.key = _salt(seed, 2)
        rng = np.random.Generator(np.random.Philox(key=_salt(seed, 3)))
        n_cat = int(np.clip(items // 40, 4, 200))
        seg_vec = rng.standard_normal((len(_SEGMENTS), _DIM))
        country_vec = rng.standard_normal((len(_COUNTRIES), _DIM))
        cat_vec = rng.standard_normal((n_cat, _DIM))
        tag_vec = rng.standard_normal((_N_TAGS, _DIM))

        self.user_segment = ZipfSampler(len(_SEGMENTS), 0.8).ranks(rng.random(users)) - 1
        self.user_country = ZipfSampler(len(_COUNTRIES), 1.2).ranks(rng.random(users)) - 1
        seg_age = rng.uniform(22, 55, len(_SEGMENTS))
        self.user_age = np.clip(np.rint(seg_age[self.user_segment]
                                        + 8 * rng.standard_normal(users)), 16, 90).astype(int)
        self.user_vec = _unit_rows(seg_vec[self.user_segment] + 0.6 * country_vec[self.user_country]
                                   + 0.6 * rng.standard_normal((users, _DIM)))

        self.item_category = ZipfSampler(n_cat, 1.1).ranks(rng.random(items)) - 1
        cat_tags = rng.integers(0, _N_TAGS, (n_cat, 6))
        n_tags = rng.integers(1, 5, items)
        from_cat = cat_tags[self.item_category[:, None], rng.integers(0, 6, (items, 4))]
        random_tag = rng.integers(0, _N_TAGS, (items, 4))
        tags = np.where(rng.random((items, 4)) < 0.75, from_cat, random_tag)
        self.item_tags = ["|".join(f"t{t:02d}" for t in sorted(set(row[:k].tolist())))
                          for row, k in zip(tags, n_tags, strict=True)]
        tag_mean = np.stack([tag_vec[row[:k]].mean(axis=0)
                             for row, k in zip(tags, n_tags, strict=True)])
        self.item_vec = _unit_rows(cat_vec[self.item_category] + 0.5 * tag_mean
                                   + 0.5 * rng.standard_normal((items, _DIM)))
        cat_price = rng.uniform(1.5, 5.0, n_cat)
        self.item_price = np.round(np.exp(cat_price[self.item_category]
                                          + 0.5 * rng.standard_normal(items)), 2)
        self.user_vec_t = np.ascontiguousarray(self.user_vec.T)
        self.item_vec_t = np.ascontiguousarray(self.item_vec.T)
        self.item_quality = 0.5 * rng.standard_normal(items)
        self.device_cat = 0.4 * rng.standard_normal((len(_DEVICES), n_cat))
        self.price_mu = float(np.log(self.item_price).mean())

        self.user_of_rank = rng.permutation(users)
        self.item_of_rank = rng.permutation(items)
        self.user_sampler = ZipfSampler(users, 0.9)
        self.item_sampler = ZipfSampler(items, _ITEM_EXPONENT)
        self.bias = 0.0
        self.bias = _calibrate_bias(self.block(0, 1 << 14, labels=False)["logit"], label_rate)

    def block(self, start: int, n: int, labels: bool = True) -> dict[str, np.ndarray]:
        """Rows [start, start + n): user and item indices (0-based), device, time, logit, label."""
        u = _uniforms(self.key, start, n, _I_WIDTH)
        user = self.user_of_rank[self.user_sampler.ranks(u[:, _I_USER]) - 1]
        cand = self.item_of_rank[self.item_sampler.ranks(u[:, _I_CAND:_I_CAND + _CANDIDATES]) - 1]
        gumbel = -np.log(-np.log1p(-u[:, _I_GUMBEL:_I_GUMBEL + _CANDIDATES] * (1 - 1e-12)))
        affinity = self.affinity(user[:, None], cand)
        best = np.argmax(_AFFINITY_SHARPNESS * affinity + gumbel, axis=1)
        pick = np.where(u[:, _I_MODE] < _AFFINITY_SHARE, best, 0)
        item = cand[np.arange(n), pick]
        device = np.searchsorted(_DEVICE_P, u[:, _I_DEVICE] * _DEVICE_P[-1], side="right")
        device = np.minimum(device, len(_DEVICES) - 1)
        young = (self.user_age[user] < 30).astype(float)
        logit = (self.bias + 3.0 * affinity[np.arange(n), pick] + self.item_quality[item]
                 + self.device_cat[device, self.item_category[item]]
                 - 0.6 * young * (np.log(self.item_price[item]) - self.price_mu))
        label = (u[:, _I_LABEL] < _sigmoid(logit)).astype(np.int8) if labels else \
            np.zeros(n, dtype=np.int8)
        ts = _START_TIME + (start + np.arange(n, dtype=np.int64)) * _GAP_SECONDS \
            + np.floor(u[:, _I_TIME] * _GAP_SECONDS).astype(np.int64)
        return {"user": user, "item": item, "device": device, "timestamp": ts, "logit": logit,
                "label": label}

    def affinity(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """user_vec . item_vec for broadcast index arrays, summed in a fixed order (no BLAS), so a
        row's value never depends on how rows are batched."""
        out = np.zeros(np.broadcast_shapes(users.shape, items.shape))
        for d in range(_DIM):
            out += self.user_vec_t[d][users] * self.item_vec_t[d][items]
        return out

    def user_table(self) -> list[str]:
        """One CSV line body per user index: age, country, segment."""
        return [f"{a},{_COUNTRIES[c]},{_SEGMENTS[s]}" for a, c, s in
                zip(self.user_age.tolist(), self.user_country.tolist(),
                    self.user_segment.tolist(), strict=True)]

    def item_table(self) -> list[str]:
        """One CSV line body per item index: category, tags, price."""
        return [f"cat{c:03d},{t},{p:.2f}" for c, t, p in
                zip(self.item_category.tolist(), self.item_tags, self.item_price.tolist(),
                    strict=True)]


def _csv_lines(parts: Iterator[str]) -> bytes:
    return "".join(parts).encode()


def write_interactions(out_dir: str | Path, rows: int, seed: int = 0, users: int | None = None,
                       items: int | None = None, chunk_rows: int = 200_000,
                       progress: bool = True) -> SynthStats:
    """Writes `out_dir/interactions.csv` (denormalised: the columns of
    configs/synthetic_interactions.toml, in time order) and the catalogues
    `out_dir/catalog/users.csv` and `out_dir/catalog/items.csv` (every user and item, including
    those never seen, for exporting vectors). Defaults: users = rows/20, items = rows/50."""
    _check_counts(rows, chunk_rows)
    users = max(10, rows // 20) if users is None else users
    items = max(10, rows // 50) if items is None else items
    out_dir = Path(out_dir)
    gen = InteractionGenerator(seed, users, items)
    prog = _Progress("interactions", rows, progress)
    user_cols, item_cols = gen.user_table(), gen.item_table()
    devices = list(_DEVICES)

    def chunk(start: int, n: int) -> tuple[bytes, int]:
        b = gen.block(start, n)
        lines = (f"{us + 1},{it + 1},{t},{y},{devices[d]},{user_cols[us]},{item_cols[it]}\n"
                 for us, it, t, y, d in zip(b["user"].tolist(), b["item"].tolist(),
                                            b["timestamp"].tolist(), b["label"].tolist(),
                                            b["device"].tolist(), strict=True))
        return _csv_lines(lines), int(b["label"].sum())

    path = out_dir / INTERACTIONS_FILE
    positives = _write_chunks(path, rows, chunk_rows, (",".join(INTERACTION_COLUMNS) + "\n")
                              .encode(), chunk, prog)
    catalog = out_dir / CATALOG_DIR
    written = [path]
    for name, cols, bodies in (("users.csv", USER_COLUMNS, user_cols),
                               ("items.csv", ITEM_COLUMNS, item_cols)):
        target = catalog / name

        def table(start: int, n: int, bodies: list[str] = bodies) -> tuple[bytes, int]:
            return _csv_lines(f"{i + 1},{bodies[i]}\n" for i in range(start, start + n)), 0

        _write_chunks(target, len(bodies), chunk_rows, (",".join(cols) + "\n").encode(), table,
                      _Progress(name, len(bodies), False))
        written.append(target)
    stats = SynthStats(kind="interactions", rows=rows, positives=positives, seconds=prog.seconds,
                       paths=tuple(str(p) for p in written),
                       bytes=sum(p.stat().st_size for p in written), users=users, items=items)
    if progress:
        print(f"synth interactions: wrote {rows:,} rows ({users:,} users, {items:,} items) to "
              f"{out_dir}, label rate {stats.label_rate:.4f}, {stats.seconds:.1f}s",
              file=sys.stderr)
    return stats
