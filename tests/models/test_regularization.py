from __future__ import annotations

import torch

from plexrec.models.regularization import embedding_l2


def test_l2_adds_its_gradient_and_leaves_the_forward_pass() -> None:
    x = torch.randn(4, 3, requires_grad=True)
    out = embedding_l2({"f": x}, 0.5, training=True)["f"]
    assert torch.equal(out, x)
    out.sum().backward()
    assert x.grad is not None
    assert torch.allclose(x.grad, 1 + 2 * 0.5 * x.detach() / 4)


def test_no_penalty_in_evaluation_or_at_zero() -> None:
    x = torch.randn(2, 3)
    vectors = {"f": x}
    assert embedding_l2(vectors, 0.5, training=False) is vectors
    assert embedding_l2(vectors, 0.0, training=True) is vectors
