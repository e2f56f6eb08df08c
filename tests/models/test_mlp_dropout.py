"""Dropout on every model's hidden layers: active in training, gone in evaluation and export."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from plexrec.features.errors import ConfigError
from plexrec.models.dlrm import mlp
from plexrec.models.two_tower import mlp as tower_mlp
from plexrec.training.config import parse_config


def _dropouts(module: nn.Module) -> list[float]:
    return [m.p for m in module.modules() if isinstance(m, nn.Dropout)]


def test_dropout_follows_hidden_layers_only() -> None:
    top = mlp(8, [16, 16, 1], final_activation=False, dropout=0.3)
    assert _dropouts(top) == [0.3, 0.3]
    assert isinstance(top[-1], nn.Linear)
    assert _dropouts(mlp(8, [16, 1], dropout=0.0)) == []
    assert _dropouts(tower_mlp(8, [16, 16], 4, dropout=0.2)) == [0.2, 0.2]


def test_dropout_is_random_in_training_and_off_in_eval() -> None:
    torch.manual_seed(0)
    net = mlp(8, [64, 1], final_activation=False, dropout=0.5)
    x = torch.randn(32, 8)
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))
    scripted = torch.jit.script(net)
    assert torch.allclose(scripted(x), net(x))


def test_ranking_models_and_towers_take_model_dropout() -> None:
    from plexrec.models.dcn import DCNv2
    from plexrec.models.dlrm import DLRM

    dlrm = DLRM(nn.Identity(), ["a"], 4, 3, [8], [8, 4], dropout=0.1)
    assert _dropouts(dlrm) == [0.1, 0.1, 0.1]
    dcn = DCNv2(nn.Identity(), ["a"], 4, 3, 1, 2, [8, 4], dropout=0.1)
    assert _dropouts(dcn) == [0.1, 0.1]


def test_dropout_must_be_a_fraction() -> None:
    with pytest.raises(ConfigError, match=r"\[model\] dropout: must be in \[0, 1\), got 1.0"):
        parse_config({"model": {"dropout": 1.0}}, "run.toml")
