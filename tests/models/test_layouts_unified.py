"""unified: shared tables, k salted hash probes per feature, concatenated to width dim."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchrec import KeyedJaggedTensor

from plexrec.models.layouts import SparseFeatureSpec, UnifiedLayout, build_layout
from tests.models.layout_helpers import layout_config

CARDS = (3, 50, 1000, 5500)
REPO = Path(__file__).resolve().parents[2]


def specs(cards: tuple[int, ...] = CARDS) -> list[SparseFeatureSpec]:
    return [SparseFeatureSpec(f"c{i}", c) for i, c in enumerate(cards)]


def build(cards: tuple[int, ...] = CARDS, **kw: object) -> UnifiedLayout:
    layout = build_layout(specs(cards), layout_config("unified", **kw))
    assert isinstance(layout, UnifiedLayout)
    return layout


def one_hot(names: list[str], ids: list[torch.Tensor]) -> KeyedJaggedTensor:
    return KeyedJaggedTensor(keys=names, values=torch.cat(ids),
                             lengths=torch.ones(sum(len(i) for i in ids), dtype=torch.int64))


def module_rows(layout: UnifiedLayout, ids: np.ndarray) -> np.ndarray:
    """[features, probes, n] rows read by the torch module for `ids` in every feature."""
    names = layout.feature_names
    kjt = one_hot(names, [torch.from_numpy(ids)] * len(names))
    values = layout.module().transform(kjt).values().numpy()
    return values.reshape(layout.probes, len(names), len(ids)).transpose(1, 0, 2)


def test_params_and_rows_formulas() -> None:
    full = build(dim=16, probes=2)
    assert full.rows == 2 * sum(CARDS)
    assert full.total_params == full.rows * 8 == sum(CARDS) * 16
    budgeted = build(dim=16, probes=4, budget="64KB")
    assert budgeted.rows == 64 * 1024 // 4 // 4
    assert budgeted.total_params == budgeted.rows * 4 <= 64 * 1024 // 4
    two = build(dim=16, probes=2, num_tables=2, budget=10_000)
    assert two.rows == 10_000 // (8 * 2)
    assert two.total_params == 2 * two.rows * 8 <= 10_000
    assert [t.num_embeddings for t in two.table_configs()] == [two.rows, two.rows]
    fixed = build(dim=16, probes=2, rows=777)
    assert fixed.total_params == 777 * 8


def test_one_table_serves_every_feature_and_probe() -> None:
    layout = build(dim=8, probes=2, rows=100)
    (table,) = layout.table_configs()
    assert table.embedding_dim == 4
    assert sorted(table.feature_names) == sorted(
        f"c{i}__p{j}" for i in range(len(CARDS)) for j in range(2))
    two = build(dim=8, probes=2, rows=100, num_tables=2)
    assert [sorted(t.feature_names) for t in two.table_configs()] == [
        ["c0__p0", "c0__p1", "c2__p0", "c2__p1"], ["c1__p0", "c1__p1", "c3__p0", "c3__p1"]]


def test_output_is_concatenation_of_probe_rows() -> None:
    layout = build(dim=12, probes=3, rows=97, num_tables=2)
    module = layout.module()
    ids = [torch.tensor([0, 2]), torch.tensor([5, 49]), torch.tensor([7, 999]),
           torch.tensor([1, 5499])]
    out = module(one_hot(layout.feature_names, ids))
    for f, name in enumerate(layout.feature_names):
        table = module.ebc.embedding_bags[f"unified_t{layout.table_of[f]}"].weight.detach()
        rows = layout.probe_rows(name, ids[f].numpy())
        expected = torch.cat([table[torch.from_numpy(rows[j])] for j in range(3)], dim=1)
        assert out[name].shape == (2, 12)
        assert torch.equal(out[name], expected)


def test_torch_transform_matches_numpy_probe_rows() -> None:
    layout = build(dim=16, probes=4, rows=1009, seed=11)
    ids = np.arange(0, 3000, dtype=np.int64)
    got = module_rows(layout, ids)
    for f, name in enumerate(layout.feature_names):
        assert np.array_equal(got[f], layout.probe_rows(name, ids))


_CHILD = """
import json, sys
import numpy as np
from plexrec.models.layouts import LayoutConfig, SparseFeatureSpec, build_layout
from tests.models.test_layouts_unified import module_rows
specs = [SparseFeatureSpec(f"c{i}", c) for i, c in enumerate((3, 50, 1000, 5500))]
layout = build_layout(specs, LayoutConfig(kind="unified", dim=16, seed=5, unified={"probes": 2, "rows": 4093}))
print(json.dumps(module_rows(layout, np.arange(500, dtype=np.int64)).tolist()))
"""


@pytest.mark.slow
def test_rows_identical_in_another_process() -> None:
    layout = build(dim=16, probes=2, rows=4093, seed=5)
    here = module_rows(layout, np.arange(500, dtype=np.int64))
    env = dict(os.environ, PYTHONHASHSEED="12345", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    child = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                           env=env, cwd=REPO, timeout=120, check=True)
    there = np.array(json.loads(child.stdout.strip().splitlines()[-1]))
    assert there.shape == here.shape
    assert np.array_equal(here, there)
    assert len(np.unique(here)) > 100


def test_seed_changes_rows() -> None:
    ids = np.arange(1000, dtype=np.int64)
    a = build(rows=4093, seed=0).probe_rows("c3", ids)
    b = build(rows=4093, seed=1).probe_rows("c3", ids)
    assert np.mean(a == b) < 0.01


@pytest.mark.parametrize(("rows", "probes"), [(64, 2), (31, 3)])
def test_cross_feature_collisions_match_theory(rows: int, probes: int) -> None:
    """The same value in two features shares a probe row with p = 1/R per probe and all k rows
    with p = 1/R^k (independent uniform probes); measured rates stay within 5 sigma."""
    layout = build(dim=probes * 4, probes=probes, rows=rows)
    n = 200_000
    ids = np.arange(n, dtype=np.int64)
    a, b = layout.probe_rows("c0", ids), layout.probe_rows("c1", ids)
    same = a == b

    def within(measured: float, p: float) -> bool:
        return abs(measured - p) <= 5 * np.sqrt(p * (1 - p) / n)

    for j in range(probes):
        assert within(same[j].mean(), 1 / rows)
        assert within((a[j] == a[(j + 1) % probes]).mean(), 1 / rows)
    assert within(same.all(axis=0).mean(), rows ** -probes)
    counts = np.bincount(a[0], minlength=rows)
    assert counts.min() > 0.9 * n / rows and counts.max() < 1.1 * n / rows
