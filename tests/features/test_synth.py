"""The synthetic generators: exact Kaggle format, determinism independent of chunking, Zipf ids
within the cardinalities, a calibrated click rate and a signal a simple model can learn."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from plexrec.features.errors import ConfigError, DataError
from plexrec.features.schema import load_schema
from plexrec.features.synth import (
    CRITEO_CARDINALITIES,
    INTERACTION_COLUMNS,
    CriteoBlock,
    CriteoGenerator,
    InteractionGenerator,
    ZipfSampler,
    format_criteo,
    write_criteo,
    write_interactions,
)
from tests.conftest import CONFIGS

HEX8 = re.compile(r"^[0-9a-f]{8}$")


def _read_criteo(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def generator() -> CriteoGenerator:
    return CriteoGenerator(seed=0)


def test_criteo_bytes_depend_on_seed_not_chunking(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.tsv", tmp_path / "b.tsv", tmp_path / "c.tsv"
    sa = write_criteo(a, 3000, seed=3, chunk_rows=1000, progress=False)
    write_criteo(b, 3000, seed=3, chunk_rows=777, progress=False)
    write_criteo(c, 3000, seed=4, chunk_rows=1000, progress=False)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert sa.rows == 3000 and sa.bytes == a.stat().st_size and 0 < sa.positives < 3000
    assert not list(tmp_path.glob("*.tmp"))


def test_criteo_prefix_is_stable(tmp_path: Path) -> None:
    """Row r depends only on (seed, r): a shorter file is a prefix of a longer one."""
    short, long = tmp_path / "s.tsv", tmp_path / "l.tsv"
    write_criteo(short, 500, seed=1, chunk_rows=128, progress=False)
    write_criteo(long, 1200, seed=1, chunk_rows=1000, progress=False)
    assert long.read_bytes().startswith(short.read_bytes())


def test_criteo_file_is_kaggle_format(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    write_criteo(path, 20_000, seed=0, chunk_rows=6000, progress=False)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 20_001
    assert all(line.count(b"\t") == 39 for line in lines[:-1])
    df = _read_criteo(path)
    assert df.shape == (20_000, 40)
    assert set(df[0]) == {"0", "1"}
    ints = df.iloc[:, 1:14].to_numpy(dtype=object)
    texts = ints[ints != ""]
    values = texts.astype(np.int64)
    assert (values.astype(str) == texts.astype(str)).all()  # canonical: no padding, no "+"
    assert (values >= -2).all() and values.max() > 10_000
    i2 = ints[:, 1]
    assert (i2 != "").all() and 0.05 < (i2.astype(np.int64) < 0).mean() < 0.15
    cats = df.iloc[:, 14:].to_numpy(dtype=object)
    assert all(HEX8.match(v) for v in cats[cats != ""])
    missing = (df == "").mean()
    assert abs(missing[12] - 0.774) < 0.02  # I12
    assert abs(missing[13 + 22] - 0.818) < 0.02  # C22
    assert missing[[1, 10]].nunique() == 1  # I1 and I10 go missing together
    assert missing[13 + 1] == 0.0  # C1 never missing


def test_formatter_writes_edge_values_exactly() -> None:
    ints = np.array([[0, -1, 7, 10, 99_999_999, 123, 1, 0, 5, 6, 7, 8, 9],
                     [1, -2, 100, 1000, 0, 0, 0, 0, 0, 0, 0, 0, 40]], dtype=np.int64)
    int_missing = np.zeros_like(ints, dtype=bool)
    int_missing[1, 0] = int_missing[0, 12] = True
    ids = np.array([np.arange(26) * 0x0A0B0C0D, np.full(26, 0xFFFFFFFF)], dtype=np.uint32)
    ranks = np.ones((2, 26), dtype=np.int64)
    ranks[0, 25] = ranks[1, 0] = 0
    block = CriteoBlock(labels=np.array([1, 0], dtype=np.int8), ints=ints,
                        int_missing=int_missing, ids=ids, ranks=ranks, logits=np.zeros(2))
    text = format_criteo(block).decode()
    expected = []
    for r in range(2):
        fields = [str(block.labels[r])]
        fields += ["" if int_missing[r, j] else str(ints[r, j]) for j in range(13)]
        fields += ["" if ranks[r, j] == 0 else f"{ids[r, j]:08x}" for j in range(26)]
        expected.append("\t".join(fields) + "\n")
    assert text == "".join(expected)


def test_ids_stay_within_cardinalities_and_are_zipf(generator: CriteoGenerator) -> None:
    block = generator.block(0, 30_000)
    assert (block.ranks.max(axis=0) <= np.array(CRITEO_CARDINALITIES)).all()
    assert (block.ranks >= 0).all()
    for f, card in enumerate(CRITEO_CARDINALITIES):
        present = block.ranks[:, f] > 0
        distinct = np.unique(block.ids[present, f]).size
        assert distinct <= card
        if card >= 1000:
            counts = np.sort(np.bincount(block.ranks[present, f]))[::-1]
            assert counts[0] > 20 * np.median(counts[counts > 0])
    big = CRITEO_CARDINALITIES.index(10_000_000)
    assert block.ranks[:, big].max() > ZipfSampler.HEAD  # the tail is reached
    assert np.unique(block.ranks[:, big]).size > 5000


@pytest.mark.parametrize("n, s", [(50, 1.2), (1000, 1.05), (200_000, 1.1)])
def test_zipf_sampler_matches_the_distribution(n: int, s: float) -> None:
    u = np.random.default_rng(0).random(400_000)
    ranks = ZipfSampler(n, s).ranks(u)
    assert ranks.min() >= 1 and ranks.max() <= n
    pmf = np.arange(1, n + 1, dtype=np.float64) ** -s
    pmf /= pmf.sum()
    for lo, hi in ((1, 1), (2, 5), (6, 40), (41, n)):
        observed = np.mean((ranks >= lo) & (ranks <= hi))
        expected = pmf[lo - 1:hi].sum()
        assert abs(observed - expected) < 0.01, (lo, hi, observed, expected)


def test_zipf_rejects_bad_parameters() -> None:
    with pytest.raises(ConfigError, match="exponent"):
        ZipfSampler(100, 1.0)
    with pytest.raises(ConfigError, match="cardinality"):
        ZipfSampler(0, 1.1)


def test_label_rate_and_planted_signal(generator: CriteoGenerator) -> None:
    block = generator.block(100_000, 50_000)
    assert 0.20 < block.labels.mean() < 0.26
    assert roc_auc_score(block.labels, block.logits) > 0.75
    # A naive model learns it from data: per-id smoothed click log-odds, fitted on one half.
    train, test = slice(0, 25_000), slice(25_000, 50_000)
    y = block.labels[train].astype(np.float64)
    prior = y.mean()
    score = np.zeros(25_000)
    for f in range(26):
        ranks = block.ranks[:, f]
        size = int(ranks.max()) + 1
        clicks = np.bincount(ranks[train], weights=y, minlength=size)
        shows = np.bincount(ranks[train], minlength=size)
        rate = (clicks + 20 * prior) / (shows + 20)
        score += np.log(rate / (1 - rate))[ranks[test]]
    assert roc_auc_score(block.labels[test], score) > 0.65


def test_bad_arguments_raise_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rows"):
        write_criteo(tmp_path / "x.tsv", -1, progress=False)
    with pytest.raises(ConfigError, match="chunk_rows"):
        write_interactions(tmp_path, 10, chunk_rows=0, progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DataError, match="file"):
        write_criteo(blocker / "x.tsv", 10, progress=False)
    empty = write_criteo(tmp_path / "empty.tsv", 0, progress=False)
    assert empty.rows == 0 and (tmp_path / "empty.tsv").read_bytes() == b""


def test_interactions_deterministic_and_chunk_independent(tmp_path: Path) -> None:
    a = write_interactions(tmp_path / "a", 4000, seed=5, users=300, items=150, chunk_rows=1000,
                           progress=False)
    b = write_interactions(tmp_path / "b", 4000, seed=5, users=300, items=150, chunk_rows=1234,
                           progress=False)
    assert [Path(p).relative_to(tmp_path / "a") for p in a.paths] == \
        [Path(p).relative_to(tmp_path / "b") for p in b.paths]
    for pa, pb in zip(a.paths, b.paths, strict=True):
        assert Path(pa).read_bytes() == Path(pb).read_bytes()
    c = write_interactions(tmp_path / "c", 4000, seed=6, users=300, items=150, progress=False)
    assert Path(c.paths[0]).read_bytes() != Path(a.paths[0]).read_bytes()


def test_interactions_csv_matches_schema(tmp_path: Path) -> None:
    stats = write_interactions(tmp_path, 6000, seed=0, progress=False)
    assert (stats.users, stats.items) == (300, 120)
    assert 0.25 < stats.label_rate < 0.45
    schema = load_schema(CONFIGS / "synthetic_interactions.toml")
    assert schema.columns == INTERACTION_COLUMNS
    assert schema.user_key == "user_id" and schema.item_key == "item_id"
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == ["interactions.csv"]
    df = pd.read_csv(tmp_path / "interactions.csv", keep_default_na=False)
    assert tuple(df.columns) == schema.columns and len(df) == 6000
    assert df["timestamp"].is_monotonic_increasing
    assert set(df["label"]) == {0, 1} and df["label"].sum() == stats.positives
    assert df["user_id"].between(1, 300).all() and df["item_id"].between(1, 120).all()
    assert df["item_tags"].str.split("|").map(len).between(1, 4).all()
    assert (df["item_price"] > 0).all()
    users = pd.read_csv(tmp_path / "catalog" / "users.csv", keep_default_na=False)
    items = pd.read_csv(tmp_path / "catalog" / "items.csv", keep_default_na=False)
    assert len(users) == 300 and len(items) == 120
    joined = df.merge(items, on="item_id", suffixes=("", "_cat")).merge(
        users, on="user_id", suffixes=("", "_cat"))
    assert len(joined) == len(df)
    for col in ("item_category", "item_tags", "item_price", "user_age", "user_country",
                "user_segment"):
        assert (joined[col] == joined[f"{col}_cat"]).all(), col


def test_interaction_positives_beat_popularity() -> None:
    """Personalisation is learnable: per-segment popularity (a model that only knows a user
    feature) retrieves held-out positives better than global popularity."""
    gen = InteractionGenerator(seed=0, users=2000, items=800)
    rows = gen.block(0, 80_000)
    assert roc_auc_score(rows["label"], rows["logit"]) > 0.65
    pos = np.flatnonzero(rows["label"] == 1)
    train, test = pos[pos < 64_000], pos[pos >= 64_000]
    seg = gen.user_segment
    counts = np.zeros((seg.max() + 1, gen.items))
    np.add.at(counts, (seg[rows["user"][train]], rows["item"][train]), 1)
    k = 20
    global_top = np.argsort(-counts.sum(axis=0))[:k]
    seg_top = np.argsort(-counts, axis=1)[:, :k]
    items = rows["item"][test]
    global_recall = np.isin(items, global_top).mean()
    seg_recall = (seg_top[seg[rows["user"][test]]] == items[:, None]).any(axis=1).mean()
    assert seg_recall > 1.1 * global_recall
