import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchrec import KeyedJaggedTensor

from plexrec.features.errors import ConfigError
from plexrec.models.layouts import LayoutConfig, SparseFeatureSpec, build_layout
from plexrec.models.two_tower import (
    Tower,
    TwoTower,
    log_q_from_counts,
    padded_user_tower,
    sampled_softmax_loss,
)
from tests.models.layout_helpers import layout_config


def test_sampled_softmax_matches_hand_computation_with_log_q():
    user = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    item = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    ids = torch.tensor([3, 7])
    log_q = torch.zeros(8)
    log_q[3], log_q[7] = -1.0, -2.0
    t = 0.5
    logits = torch.tensor([[0.6 / t + 1.0, 1.0 / t + 2.0], [0.8 / t + 1.0, 0.0 / t + 2.0]])
    expected = (-(logits[0, 0] - torch.logsumexp(logits[0], 0))
                - (logits[1, 1] - torch.logsumexp(logits[1], 0))) / 2
    assert sampled_softmax_loss(user, item, ids, log_q, t).item() == pytest.approx(
        expected.item(), rel=1e-6)
    plain = sampled_softmax_loss(user, item, ids, None, t)
    assert plain.item() != pytest.approx(expected.item())


def test_same_item_in_batch_is_not_a_negative():
    torch.manual_seed(0)
    user = F.normalize(torch.randn(3, 4), dim=1)
    item = F.normalize(torch.randn(3, 4), dim=1)
    ids = torch.tensor([5, 5, 9])
    loss = sampled_softmax_loss(user, item, ids, None, 0.1)
    logits = user @ item.T / 0.1
    # Row 0 competes with columns 0 and 2 only, row 1 with 1 and 2, row 2 with all three.
    rows = [logits[0, [0, 2]], logits[1, [1, 2]], logits[2]]
    targets = [0, 0, 2]
    expected = torch.stack([-(r[t] - torch.logsumexp(r, 0)) for r, t in zip(rows, targets, strict=True)]).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_log_q_is_the_log_of_training_frequencies():
    lq = log_q_from_counts(np.array([0, 3, 1]))
    assert torch.allclose(lq.exp(), torch.tensor([1 / 5, 3 / 5, 1 / 5]))


def test_two_tower_rejects_mismatched_widths_and_bad_temperature():
    specs = [SparseFeatureSpec("a", 10)]
    layout = build_layout(specs, LayoutConfig(dim=4))
    t8 = Tower(layout.module(), ["a"], 4, [], [8], 8)
    t4 = Tower(layout.module(), ["a"], 4, [], [8], 4)
    with pytest.raises(ConfigError, match="width"):
        TwoTower(t8, t4)
    with pytest.raises(ConfigError, match="temperature"):
        TwoTower(t8, t8, temperature=0.0)


def _random_bags(rng: np.random.Generator, cards: list[int], max_lengths: list[int],
                 batch: int) -> tuple[KeyedJaggedTensor, torch.Tensor]:
    """A KJT and the same ids padded with -1, one block of max_length slots per feature."""
    values, lengths, blocks = [], [], []
    for card, width in zip(cards, max_lengths, strict=True):
        lens = rng.integers(0 if width > 1 else 1, width + 1, batch)
        block = np.full((batch, width), -1, dtype=np.int64)
        for i, n in enumerate(lens):
            ids = rng.integers(0, card, n)
            block[i, :n] = ids
            values.append(ids)
        lengths.append(lens)
        blocks.append(block)
    kjt = KeyedJaggedTensor(keys=[f"f{i}" for i in range(len(cards))],
                            values=torch.from_numpy(np.concatenate(values)),
                            lengths=torch.from_numpy(np.concatenate(lengths).astype(np.int32)))
    return kjt, torch.from_numpy(np.concatenate(blocks, axis=1))


@pytest.mark.parametrize("kind,extra", [
    ("per_feature", {}),
    ("per_feature", {"budget": 3000}),
    ("mixed_dim", {"budget": 3000}),
    ("unified", {"budget": 3000, "probes": 2}),
    ("qr", {"budget": 3000}),
])
def test_scripted_padded_tower_equals_the_torchrec_tower(kind, extra, tmp_path):
    """Hashing, shared tables, mixed-dim projections, multi-hot bags, empty bags and mean pooling
    all survive the conversion to the TorchScript, TorchRec-free tower."""
    rng = np.random.default_rng(0)
    cards, max_lengths = [50, 400, 30], [1, 1, 4]
    poolings = ["sum", "sum", "mean"]
    specs = [SparseFeatureSpec(f"f{i}", c, np.sort(rng.integers(1, 100, c))[::-1].copy(), p)
             for i, (c, p) in enumerate(zip(cards, poolings, strict=True))]
    layout = build_layout(specs, layout_config(kind, dim=8, **extra))
    torch.manual_seed(0)
    tower = Tower(layout.module(), layout.feature_names, layout.dim, [0, 2], [16], 6).eval()
    kjt, padded = _random_bags(rng, cards, max_lengths, 64)
    dense = torch.randn(64, 3)
    with torch.no_grad():
        expected = tower(kjt, dense)
    mean = [n in layout.module().mean_features for n in layout.feature_names]
    assert mean == [False, False, True]
    serving = padded_user_tower(tower, cards, max_lengths, mean)
    path = tmp_path / "tower.pt"
    torch.jit.script(serving).save(str(path))
    loaded = torch.jit.load(str(path))
    got = loaded(padded, dense[:, [0, 2]])
    assert got.shape == (64, 6)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(got.norm(dim=1), torch.ones(64), atol=1e-5)
