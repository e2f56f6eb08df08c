"""The first-order (wide) term: zero at the start, one weight per id summed over the row, mean
pooling honoured, and gradients reaching both the id weights and the dense part."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchrec import KeyedJaggedTensor

from plexrec.models.first_order import WIDTH, FirstOrder, WithFirstOrder, first_order_report
from plexrec.models.layouts import SparseFeatureSpec


def _specs() -> list[SparseFeatureSpec]:
    return [SparseFeatureSpec("a", 5, np.ones(5, dtype=np.int64), "sum"),
            SparseFeatureSpec("b", 7, np.ones(7, dtype=np.int64), "mean")]


def _kjt() -> KeyedJaggedTensor:
    # rows: a = [1], [3]; b = [2, 4], [] (feature-major lengths)
    return KeyedJaggedTensor(keys=["a", "b"], values=torch.tensor([1, 3, 2, 4]),
                             lengths=torch.tensor([1, 1, 2, 0]))


class _Constant(nn.Module):
    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        return torch.full((dense.shape[0],), 0.25)


def test_first_order_starts_at_zero_and_leaves_the_model_logit() -> None:
    wide = FirstOrder(_specs(), num_dense=3)
    model = WithFirstOrder(_Constant(), wide)
    out = model(torch.randn(2, 3), _kjt())
    assert torch.equal(out, torch.full((2,), 0.25))


def test_each_id_adds_its_row_sum_and_mean_features_divide_by_length() -> None:
    wide = FirstOrder(_specs(), num_dense=0)
    tables = dict(wide.ebc.embedding_bags.items())
    with torch.no_grad():
        tables["w_a"].weight.copy_(torch.arange(5, dtype=torch.float32).unsqueeze(1)
                                   .expand(5, WIDTH) / WIDTH)
        tables["w_b"].weight.copy_(torch.arange(7, dtype=torch.float32).unsqueeze(1)
                                   .expand(7, WIDTH) / WIDTH * 10)
    out = wide(torch.zeros(2, 0), _kjt())
    # row 0: a=1 -> 1, b=(20 + 40) / 2 -> 30; row 1: a=3 -> 3, empty b -> 0
    assert torch.allclose(out, torch.tensor([31.0, 3.0]))


def test_features_are_read_by_name_whatever_their_order_in_the_batch() -> None:
    wide = FirstOrder(_specs(), num_dense=0)
    with torch.no_grad():
        dict(wide.ebc.embedding_bags.items())["w_a"].weight.fill_(1.0)
    swapped = KeyedJaggedTensor(keys=["b", "a"], values=torch.tensor([2, 4, 1, 3]),
                                lengths=torch.tensor([2, 0, 1, 1]))
    assert torch.allclose(wide(torch.zeros(2, 0), swapped), torch.full((2,), float(WIDTH)))


def test_gradients_reach_the_looked_up_rows_and_the_dense_part() -> None:
    wide = FirstOrder(_specs(), num_dense=3, l2=0.1)
    wide(torch.ones(2, 3), _kjt()).sum().backward()
    grad_a = dict(wide.ebc.embedding_bags.items())["w_a"].weight.grad
    assert grad_a is not None
    touched = grad_a.abs().sum(dim=1) > 0
    assert touched.tolist() == [False, True, False, True, False]
    assert wide.dense is not None and wide.dense.weight.grad is not None
    assert torch.allclose(wide.dense.weight.grad, torch.full((1, 3), 2.0))


def test_report_counts_the_first_order_tables() -> None:
    rows = first_order_report(_specs())
    assert [(r.name, r.rows, r.dim, r.params) for r in rows] == [
        ("w_a", 5, WIDTH, 5 * WIDTH), ("w_b", 7, WIDTH, 7 * WIDTH)]
