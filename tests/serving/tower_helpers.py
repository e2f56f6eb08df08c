"""A small TorchScript user tower and its feature spec, for snapshots that answer Retrieve by
raw user features."""

from __future__ import annotations

import json
from pathlib import Path

import torch


class Tower(torch.nn.Module):
    """forward(sparse [B, S] ids padded with -1, dense [B, D]) -> [B, width]."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(64, width)
        self.lin = torch.nn.Linear(1, width)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        mask = (sparse >= 0).unsqueeze(-1).to(torch.float32)
        pooled = (self.emb(sparse.clamp(min=0)) * mask).sum(dim=1)
        return pooled + self.lin(dense)


def tower_files(tmp_path: Path, width: int) -> dict[str, Path]:
    """A scripted tower over country (vocab), tags (hashed multi-hot) and age (log1p dense),
    with the user_features.json spec the server encodes requests by."""
    torch.manual_seed(0)
    tower = torch.jit.script(Tower(width))
    tower_path = tmp_path / "user_tower.pt"
    tower.save(str(tower_path))
    spec = {"sparse": [{"name": "country", "kind": "categorical", "max_length": 1,
                        "separator": None, "vocab": {"fr": 1, "de": 2}, "hash_size": None},
                       {"name": "tags", "kind": "multi_hot", "max_length": 3, "separator": "|",
                        "vocab": None, "hash_size": 50}],
            "dense": [{"name": "age", "fill": 0.0, "transform": "log1p", "clamp_min": None,
                       "clamp_max": None}],
            "tower_input": "padded"}
    spec_path = tmp_path / "user_features.json"
    spec_path.write_text(json.dumps(spec))
    return {"user_tower.pt": tower_path, "user_features.json": spec_path}
