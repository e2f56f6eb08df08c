"""Matryoshka widths of the two-tower model: the nested loss and how a prefix is scored."""

import pytest
import torch
import torch.nn.functional as F

from plexrec.features.errors import ConfigError
from plexrec.models.layouts import LayoutConfig, SparseFeatureSpec, build_layout
from plexrec.models.two_tower import (
    Tower,
    TwoTower,
    matryoshka_loss,
    prefix_vectors,
    sampled_softmax_loss,
)


def _batch(n: int = 6, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                               torch.Tensor]:
    torch.manual_seed(0)
    user = F.normalize(torch.randn(n, dim), dim=1)
    item = F.normalize(torch.randn(n, dim), dim=1)
    ids = torch.tensor([1, 2, 2, 3, 4, 5])[:n]
    log_q = torch.log_softmax(torch.randn(6), dim=0)
    return user, item, ids, log_q


def test_nested_loss_with_only_the_full_width_is_the_plain_loss():
    user, item, ids, log_q = _batch()
    plain = sampled_softmax_loss(user, item, ids, log_q, 0.1)
    assert torch.equal(matryoshka_loss(user, item, ids, log_q, 0.1, [8]), plain)
    assert torch.equal(matryoshka_loss(user, item, ids, None, 0.1, [8], [1.0]),
                       sampled_softmax_loss(user, item, ids, None, 0.1))


def test_nested_loss_sums_the_plain_loss_on_renormalised_prefixes():
    user, item, ids, log_q = _batch()

    def at(w: int) -> torch.Tensor:
        return sampled_softmax_loss(F.normalize(user[:, :w], dim=1),
                                    F.normalize(item[:, :w], dim=1), ids, log_q, 0.1)

    got = matryoshka_loss(user, item, ids, log_q, 0.1, [2, 4, 8])
    assert got.item() == pytest.approx((at(2) + at(4) + at(8)).item(), rel=1e-6)
    weighted = matryoshka_loss(user, item, ids, log_q, 0.1, [2, 4, 8], [0.5, 1.0, 2.0])
    assert weighted.item() == pytest.approx((0.5 * at(2) + at(4) + 2 * at(8)).item(),
                                            rel=1e-6)
    with pytest.raises(ValueError, match="2 matryoshka weights for 3 widths"):
        matryoshka_loss(user, item, ids, log_q, 0.1, [2, 4, 8], [1.0, 1.0])
    # A prefix's loss only reaches its own coordinates: the tail gets the full width's gradient.
    u = user.clone().requires_grad_(True)
    matryoshka_loss(u, item, ids, log_q, 0.1, [2, 8]).backward()
    tail = u.grad
    u2 = user.clone().requires_grad_(True)
    sampled_softmax_loss(u2, item, ids, log_q, 0.1).backward()
    assert u2.grad is not None and tail is not None
    assert not torch.allclose(tail[:, :2], u2.grad[:, :2])
    assert torch.allclose(tail[:, 2:], u2.grad[:, 2:])


def test_a_prefix_is_scored_as_the_cosine_of_the_cut_vectors():
    user, item, _, _ = _batch()
    assert prefix_vectors(user, 8) is user
    cut = prefix_vectors(item, 4)
    assert cut.shape == (6, 4)
    assert torch.allclose(cut.norm(dim=1), torch.ones(6))
    assert torch.allclose(cut * item[:, :4].norm(dim=1, keepdim=True), item[:, :4])
    # The serving shortcut: re-normalised item prefixes against the raw query prefix rank the
    # items exactly as the cosines do.
    cosine = prefix_vectors(user, 4) @ cut.T
    shortcut = user[:, :4] @ cut.T
    assert torch.equal(cosine.argsort(dim=1, descending=True),
                       shortcut.argsort(dim=1, descending=True))
    with pytest.raises(ValueError, match="prefix width 9"):
        prefix_vectors(user, 9)


@pytest.mark.parametrize(("widths", "message"), [
    ([3, 8], "3 does not divide the vector width 8"),
    ([4, 2, 8], "strictly increasing"),
    ([0, 8], ">= 1"),
    ([4, 16], "16 is larger than the vector width 8"),
    ([2, 4], "the last width must be the vector width 8"),
])
def test_two_tower_rejects_bad_matryoshka_widths(widths, message):
    layout = build_layout([SparseFeatureSpec("a", 10)], LayoutConfig(dim=4))
    tower = Tower(layout.module(), ["a"], 4, [], [8], 8)
    with pytest.raises(ConfigError, match=message):
        TwoTower(tower, tower, matryoshka=widths)
    assert TwoTower(tower, tower, matryoshka=[2, 4, 8]).matryoshka == (2, 4, 8)
    assert TwoTower(tower, tower).matryoshka == ()
