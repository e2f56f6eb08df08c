"""per_feature: one table per feature, hashed into fewer rows under a budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchrec import KeyedJaggedTensor

from plexrec.models.layouts import LayoutConfig, PerFeatureLayout, SparseFeatureSpec, build_layout

CARDS = (3, 50, 1000, 5500)


def specs(pooling: str = "sum") -> list[SparseFeatureSpec]:
    return [SparseFeatureSpec(f"c{i}", c, None, pooling if i == 1 else "sum")
            for i, c in enumerate(CARDS)]


def one_hot_kjt(ids: list[torch.Tensor], names: list[str]) -> KeyedJaggedTensor:
    batch = len(ids[0])
    return KeyedJaggedTensor(keys=names, values=torch.cat(ids),
                             lengths=torch.ones(len(ids) * batch, dtype=torch.int32))


def weights(module: torch.nn.Module, table: str) -> torch.Tensor:
    return module.ebc.embedding_bags[table].weight.detach()


def test_full_size_params_equal_formula() -> None:
    layout = build_layout(specs(), LayoutConfig(dim=16))
    assert isinstance(layout, PerFeatureLayout)
    assert layout.total_params == sum(CARDS) * 16
    assert layout.total_bytes == sum(CARDS) * 16 * 4
    assert [t.num_embeddings for t in layout.table_configs()] == list(CARDS)
    assert [r.note for r in layout.report()] == ["", "", "", ""]


@pytest.mark.parametrize("budget", [sum(CARDS) * 16 // 16, "8KB", 5000, sum(CARDS) * 16 - 1])
def test_budget_respected_and_small_tables_kept(budget: int | str) -> None:
    layout = build_layout(specs(), LayoutConfig(dim=16, budget=budget))
    limit = budget if isinstance(budget, int) else 8 * 1024 // 4
    assert layout.total_params <= limit
    rows = [r.rows for r in layout.report()]
    assert rows[0] == 3
    assert rows[3] < 5500
    assert "hashed from 5500 ids" in layout.report()[3].note
    assert layout.total_params > limit - 16 * len(CARDS)


def test_unhashed_lookup_reads_the_id_row() -> None:
    layout = build_layout(specs(), LayoutConfig(dim=8))
    module = layout.module()
    ids = [torch.tensor([0, 2]), torch.tensor([5, 49]), torch.tensor([7, 999]),
           torch.tensor([1, 5499])]
    out = module(one_hot_kjt(ids, layout.feature_names))
    for f, name in enumerate(layout.feature_names):
        assert out[name].shape == (2, 8)
        assert torch.equal(out[name], weights(module, f"t_{name}")[ids[f]])


def test_hashed_ids_spread_over_rows_deterministically() -> None:
    layout = build_layout(specs(), LayoutConfig(dim=8, budget=4000))
    module = layout.module()
    ids = [torch.zeros(5500, dtype=torch.long), torch.zeros(5500, dtype=torch.long),
           torch.zeros(5500, dtype=torch.long), torch.arange(5500)]
    kjt = one_hot_kjt(ids, layout.feature_names)
    rows = module.transform(kjt).values()[3 * 5500:]
    cap = layout.rows[3]
    assert rows.min() >= 0 and rows.max() < cap
    assert len(torch.unique(rows)) > 0.95 * cap
    assert torch.equal(rows, layout.module().transform(kjt).values()[3 * 5500:])


def test_mean_pooling_and_multi_hot() -> None:
    layout = build_layout(specs("mean"), LayoutConfig(dim=4))
    module = layout.module()
    lengths = torch.tensor([1, 1, 3, 0, 1, 1, 1, 1])
    values = torch.tensor([0, 1, 4, 5, 9, 3, 4, 6, 7])
    out = module(KeyedJaggedTensor(keys=layout.feature_names, values=values, lengths=lengths))
    table = weights(module, "t_c1")
    assert torch.allclose(out["c1"][0], table[[4, 5, 9]].mean(dim=0))
    assert torch.equal(out["c1"][1], torch.zeros(4))


def test_batch_with_extra_and_reordered_keys() -> None:
    layout = build_layout(specs()[:2], LayoutConfig(dim=4))
    module = layout.module()
    kjt = KeyedJaggedTensor(keys=["other", "c1", "c0"], values=torch.tensor([77, 5, 2]),
                            lengths=torch.tensor([1, 1, 1]))
    out = module(kjt)
    assert sorted(out) == ["c0", "c1"]
    assert torch.equal(out["c1"][0], weights(module, "t_c1")[5])
    assert torch.equal(out["c0"][0], weights(module, "t_c0")[2])


def test_meta_device_module() -> None:
    module = build_layout(specs(), LayoutConfig(dim=8, budget=4000)).module("meta")
    assert all(p.device.type == "meta" for p in module.ebc.parameters())
    assert module.rows.device.type == "cpu"


def test_rows_match_numpy_formula() -> None:
    from plexrec.models.layouts.base import salted_hash_np

    layout = build_layout(specs(), LayoutConfig(dim=8, budget=4000, seed=3))
    ids = np.arange(5500)
    expected = salted_hash_np(ids, layout.salts[3], 3) % layout.rows[3]
    kjt = one_hot_kjt([torch.zeros(5500, dtype=torch.long)] * 3 + [torch.from_numpy(ids)],
                      layout.feature_names)
    got = layout.module().transform(kjt).values()[3 * 5500:].numpy()
    assert np.array_equal(got, expected)
