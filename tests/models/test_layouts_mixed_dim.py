"""mixed_dim: frequency blocks, power-law widths, projections back up to dim, budgets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchrec import KeyedJaggedTensor

from plexrec.models.layouts import MixedDimLayout, SparseFeatureSpec, build_layout
from plexrec.models.layouts.mixed_dim import block_edges
from tests.models.layout_helpers import layout_config

CARDS = (3, 50, 1000, 5500)


def zipf_counts(card: int, seed: int) -> np.ndarray:
    """Power-law counts assigned to shuffled ids, so id order says nothing about frequency."""
    counts = (1e5 / (np.arange(card) + 1) ** 1.1).astype(np.int64)
    return np.random.default_rng(seed).permutation(counts)


def specs() -> list[SparseFeatureSpec]:
    return [SparseFeatureSpec(f"c{i}", c, zipf_counts(c, i), "mean" if i == 1 else "sum")
            for i, c in enumerate(CARDS)]


def build(**kw: object) -> MixedDimLayout:
    layout = build_layout(specs(), layout_config("mixed_dim", **kw))
    assert isinstance(layout, MixedDimLayout)
    return layout


def test_block_edges_are_log_spaced_and_cover_all_ids() -> None:
    assert block_edges(5500, 4) == [0, 9, 74, 639, 5500]
    assert block_edges(3, 4) == [0, 1, 2, 3]
    assert block_edges(1, 4) == [0, 1]


def test_frequent_ids_get_wider_blocks() -> None:
    layout = build(dim=16, alpha=0.3, blocks=4)
    for spec, blocks in zip(layout.specs, layout.blocks, strict=True):
        widths = [b.dim for b in blocks]
        assert widths == sorted(widths, reverse=True)
        assert widths[0] == 16
        assert all(w % 4 == 0 and 4 <= w <= 16 for w in widths)
        block, _ = layout.assignment(spec.name)
        width_of_id = np.array(widths)[block]
        by_count = np.argsort(-spec.counts, kind="stable")
        assert np.all(np.diff(width_of_id[by_count]) <= 0)
    assert [b.dim for b in layout.blocks[3]][-1] < 16


def test_power_law_rule() -> None:
    layout = build(dim=64, alpha=0.4, blocks=4, min_block_dim=4)
    blocks = layout.blocks[3]
    for b in blocks[1:]:
        ideal = 64 * (b.popularity / blocks[0].popularity) ** 0.4
        assert abs(b.dim - ideal) <= 2 or b.dim in (4, 64)


def test_every_id_maps_to_exactly_one_block_row() -> None:
    layout = build(dim=16)
    for spec, blocks in zip(layout.specs, layout.blocks, strict=True):
        block, row = layout.assignment(spec.name)
        assert len(block) == spec.cardinality
        pairs = set(zip(block.tolist(), row.tolist(), strict=True))
        assert len(pairs) == spec.cardinality
        for i, b in enumerate(blocks):
            assert sorted(row[block == i].tolist()) == list(range(b.rows))


def test_params_equal_formula() -> None:
    layout = build(dim=16)
    tables = sum(b.rows * b.dim for blocks in layout.blocks for b in blocks)
    projections = sum(b.dim * 16 for blocks in layout.blocks for b in blocks if b.dim < 16)
    assert layout.total_params == tables + projections
    report = layout.report()
    assert report[-1].name == "projections" and report[-1].params == projections
    assert sum(t.num_embeddings * t.embedding_dim for t in layout.table_configs()) == tables
    module = layout.module()
    assert sum(p.numel() for p in module.projections) == projections
    assert sum(p.numel() for p in module.ebc.parameters()) == tables
    assert layout.total_params < sum(CARDS) * 16


@pytest.mark.parametrize("fraction", [2, 8, 16, 64])
def test_budget_respected(fraction: int) -> None:
    budget = sum(CARDS) * 16 // fraction
    layout = build(dim=16, budget=budget)
    assert layout.total_params <= budget
    assert layout.total_params > budget * 0.5
    for spec in layout.specs:
        block, row = layout.assignment(spec.name)
        for i, b in enumerate(layout.blocks[layout.feature_names.index(spec.name)]):
            assert set(row[block == i].tolist()) <= set(range(b.rows))


def one_hot(layout: MixedDimLayout, ids: list[torch.Tensor]) -> KeyedJaggedTensor:
    return KeyedJaggedTensor(keys=layout.feature_names, values=torch.cat(ids),
                             lengths=torch.ones(sum(len(i) for i in ids), dtype=torch.int32))


def expected_embedding(layout: MixedDimLayout, module: torch.nn.Module, f: int,
                       ident: int) -> torch.Tensor:
    """The id's block row, lifted by its block's slice of the feature's projection."""
    name = layout.feature_names[f]
    block, row = layout.assignment(name)
    b = int(block[ident])
    weight = module.ebc.embedding_bags[f"t_{name}__b{b}"].weight.detach()[int(row[ident])]
    if layout.blocks[f][b].dim == layout.dim:
        return weight
    narrow = [i for i, blk in enumerate(layout.blocks[f]) if blk.dim < layout.dim]
    start = sum(layout.blocks[f][i].dim for i in narrow if i < b)
    proj = module.projections[module.projection_index[f]].detach()
    return weight @ proj[start:start + layout.blocks[f][b].dim]


def test_forward_projects_each_id_to_dim() -> None:
    layout = build(dim=16)
    module = layout.module()
    ids = [torch.arange(3), torch.tensor([0, 17, 49]), torch.tensor([1, 500, 999]),
           torch.tensor([7, 2000, 5499])]
    out = module(one_hot(layout, ids))
    for f, name in enumerate(layout.feature_names):
        assert out[name].shape == (3, 16)
        for i, ident in enumerate(ids[f].tolist()):
            assert torch.allclose(out[name][i], expected_embedding(layout, module, f, ident),
                                  atol=1e-6)


def test_multi_hot_bag_spanning_blocks_sums_projected_rows() -> None:
    layout = build(dim=8)
    module = layout.module()
    block, _ = layout.assignment("c3")
    head, tail = int(np.flatnonzero(block == 0)[0]), int(np.flatnonzero(block == 3)[0])
    kjt = KeyedJaggedTensor(keys=layout.feature_names,
                            values=torch.tensor([0, 1, 2, 5, head, tail, tail]),
                            lengths=torch.tensor([1, 2, 1, 3]))
    out = module(kjt)
    expected = sum(expected_embedding(layout, module, 3, i) for i in (head, tail, tail))
    assert torch.allclose(out["c3"][0], expected, atol=1e-6)
    mean = (expected_embedding(layout, module, 1, 1) + expected_embedding(layout, module, 1, 2))
    assert torch.allclose(out["c1"][0], mean / 2, atol=1e-6)


def test_projections_train() -> None:
    layout = build(dim=8)
    module = layout.module()
    before = [p.detach().clone() for p in module.projections]
    ids = [torch.tensor([0]), torch.tensor([49]), torch.tensor([999]), torch.tensor([5499])]
    loss = sum(v.sum() for v in module(one_hot(layout, ids)).values())
    loss.backward()
    torch.optim.SGD(module.parameters(), lr=1.0).step()
    assert any(not torch.equal(b, p) for b, p in zip(before, module.projections, strict=True))


def test_meta_device_keeps_remap_and_projections_real() -> None:
    module = build(dim=8).module("meta")
    assert all(p.device.type == "meta" for p in module.ebc.parameters())
    assert module.key_of.device.type == "cpu"
    assert all(p.device.type == "cpu" for p in module.projections)
