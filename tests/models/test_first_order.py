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


def test_per_id_l2_pulls_each_id_by_its_share_of_a_pass() -> None:
    # a: id 1 seen once, id 3 eight times, in 10 values in all (row 0 is the OOV row).
    counts = np.array([1, 1, 0, 8, 0], dtype=np.int64)
    specs = [SparseFeatureSpec("a", 5, counts, "sum")]
    wide = FirstOrder(specs, num_dense=0, id_l2=0.5)
    table = dict(wide.ebc.embedding_bags.items())["w_a"]
    with torch.no_grad():
        table.weight.fill_(2.0)
    kjt = KeyedJaggedTensor(keys=["a"], values=torch.tensor([1, 3]), lengths=torch.tensor([1, 1]))
    (wide(torch.zeros(2, 0), kjt) * 0).sum().backward()
    assert table.weight.grad is not None
    # l2 · N / (n · B) · w with N = 10, B = 2, w = 2: the rare id is pulled 8 times harder.
    assert torch.allclose(table.weight.grad[1], torch.full((WIDTH,), 0.5 * 10 / (1 * 2) * 2))
    assert torch.allclose(table.weight.grad[3], torch.full((WIDTH,), 0.5 * 10 / (8 * 2) * 2))
    wide.eval()
    table.weight.grad = None
    (wide(torch.zeros(2, 0), kjt) * 0).sum().backward()
    assert table.weight.grad is not None and not table.weight.grad.any()


class _Deep(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(3, 4)
        self.dropout = nn.Dropout(0.5)
        self.out = nn.Linear(4, 1)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        return self.out(self.dropout(torch.relu(self.hidden(dense)))).squeeze(1)


def test_start_from_prior_zeroes_the_deep_output_and_sets_the_log_odds() -> None:
    model = WithFirstOrder(_Deep(), FirstOrder(_specs(), num_dense=3))
    model.start_from_prior(0.25)
    out = model(torch.randn(4, 3), _kjt_of(4))
    assert torch.allclose(out, torch.full((4,), float(np.log(0.25 / 0.75))))
    assert not model.model.out.weight.any() and not model.model.out.bias.any()


def _kjt_of(rows: int) -> KeyedJaggedTensor:
    return KeyedJaggedTensor(keys=["a", "b"], values=torch.zeros(0, dtype=torch.long),
                             lengths=torch.zeros(2 * rows, dtype=torch.long))


def test_fitting_the_term_alone_leaves_the_deep_part_still_and_out_of_the_logit() -> None:
    deep = _Deep()
    model = WithFirstOrder(deep, FirstOrder(_specs(), num_dense=3))
    model.train()
    model.fit_first_order_only(True)
    assert model.training and not deep.training and not deep.dropout.training
    dense = torch.randn(2, 3)
    out = model(dense, _kjt())
    assert torch.allclose(out, model.first_order(dense, _kjt()))
    out.sum().backward()
    assert all(p.grad is not None and not p.grad.any() for p in deep.parameters())
    linear = model.first_order.dense
    assert linear is not None and linear.weight.grad is not None and linear.weight.grad.any()
    model.fit_first_order_only(False)
    assert deep.training
