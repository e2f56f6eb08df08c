"""qr: quotient + remainder tables, summed; budgets pick the collision count m."""

from __future__ import annotations

import pytest
import torch
from torchrec import KeyedJaggedTensor

from plexrec.features.errors import ConfigError
from plexrec.models.layouts import QRLayout, SparseFeatureSpec, build_layout
from plexrec.models.layouts.qr import plan_feature, qr_rows
from tests.models.layout_helpers import layout_config

CARDS = (3, 50, 1000, 5500)


def build(**kw: object) -> QRLayout:
    specs = [SparseFeatureSpec(f"c{i}", c, None, "mean" if i == 1 else "sum")
             for i, c in enumerate(CARDS)]
    layout = build_layout(specs, layout_config("qr", **kw))
    assert isinstance(layout, QRLayout)
    return layout


def test_plan_feature() -> None:
    assert plan_feature(50, 60) == (1, 50, False)
    m, rows, hashed = plan_feature(5500, 600)
    assert not hashed and rows + m <= 600 and qr_rows(5500, m - 1) > 600
    assert plan_feature(5500, 100) == (1, 100, True)


@pytest.mark.parametrize("budget", [sum(CARDS) * 16 // 4, sum(CARDS) * 16 // 16, 3000])
def test_budget_respected_and_params_formula(budget: int) -> None:
    layout = build(dim=16, budget=budget)
    assert layout.total_params <= budget
    assert layout.total_params == sum(t.num_embeddings * 16 for t in layout.table_configs())
    assert layout.report()[0].name == "t_c0"
    assert layout.total_params > budget // 2


def test_full_size_without_budget() -> None:
    assert build(dim=16).total_params == sum(CARDS) * 16


def test_fixed_collisions_and_over_budget() -> None:
    layout = build(dim=8, collisions=10)
    assert layout.total_params == 8 * (3 + (5 + 10) + (100 + 10) + (550 + 10))
    with pytest.raises(ConfigError, match="layout.qr.collisions = 10"):
        build(dim=8, collisions=10, budget=1000)


def test_embedding_is_quotient_plus_remainder_row() -> None:
    layout = build(dim=8, collisions=10)
    module = layout.module()
    ids = [torch.tensor([2]), torch.tensor([13, 49]), torch.tensor([999]), torch.tensor([5499])]
    kjt = KeyedJaggedTensor(keys=layout.feature_names, values=torch.cat(ids),
                            lengths=torch.tensor([1, 2, 1, 1]))
    out = module(kjt)
    bags = module.ebc.embedding_bags

    def emb(name: str, i: int) -> torch.Tensor:
        return bags[f"t_{name}__q"].weight[i // 10] + bags[f"t_{name}__r"].weight[i % 10]

    assert torch.equal(out["c0"][0], bags["t_c0"].weight[2])
    assert torch.allclose(out["c1"][0], (emb("c1", 13) + emb("c1", 49)) / 2)
    assert torch.allclose(out["c3"][0], emb("c3", 5499))
    pairs = {(i // 10, i % 10) for i in range(5500)}
    assert len(pairs) == 5500


def test_hashed_fallback_rows_in_range() -> None:
    layout = build(dim=8, budget=8 * 200)
    assert any(h for _, _, h in layout.plans)
    module = layout.module()
    kjt = KeyedJaggedTensor(keys=layout.feature_names,
                            values=torch.cat([torch.zeros(3, dtype=torch.long)] * 3
                                             + [torch.tensor([0, 2000, 5499])]),
                            lengths=torch.ones(12, dtype=torch.long))
    out = module(kjt)
    assert all(v.shape == (3, 8) for v in out.values())
