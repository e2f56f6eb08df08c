"""The baseline layout: one table per feature, rows = cardinality, width = dim.

Under a budget smaller than full size the largest tables are capped first (water-filling: every
table gets min(cardinality, C) rows for the largest C that fits), and ids of a capped feature are
hashed into its rows, so small vocabularies stay collision-free."""

from __future__ import annotations

import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

from plexrec.features.errors import ConfigError
from plexrec.models.layouts.base import (
    EmbeddingLayout,
    LayoutConfig,
    LayoutModule,
    SparseFeatureSpec,
    TableReport,
    dense_device,
    feature_salt,
    make_table,
    salted_hash_torch,
    table_report,
)


def water_fill(sizes: list[int], capacity: int) -> int:
    """The largest cap C with sum(min(s, C)) <= capacity (C >= max(sizes) when all fit)."""
    if sum(sizes) <= capacity:
        return max(sizes)
    low, high = 0, max(sizes)
    while low < high:
        mid = (low + high + 1) // 2
        if sum(min(s, mid) for s in sizes) <= capacity:
            low = mid
        else:
            high = mid - 1
    return low


class PerFeatureLayout(EmbeddingLayout):
    """One TorchRec table per feature."""

    name = "per_feature"

    def __init__(self, specs: list[SparseFeatureSpec], config: LayoutConfig) -> None:
        super().__init__(specs, config)
        cards = [s.cardinality for s in specs]
        budget = config.budget
        if budget is None:
            self.rows = cards
        else:
            capacity = budget.to_params() // self.dim
            if capacity < len(specs):
                raise ConfigError(
                    f"layout.budget = {budget} is too small for per_feature: "
                    f"{len(specs)} features x dim {self.dim} need at least "
                    f"{len(specs) * self.dim} params")
            cap = water_fill(cards, capacity)
            self.rows = [min(c, cap) for c in cards]
        self.salts = [feature_salt(s.name, "pf", config.seed) for s in specs]

    def table_configs(self) -> list[EmbeddingBagConfig]:
        return [make_table(f"t_{s.name}", rows, self.dim, [s.name])
                for s, rows in zip(self.specs, self.rows, strict=True)]

    def module(self, device: torch.device | str | None = None) -> PerFeatureModule:
        ebc = EmbeddingBagCollection(tables=self.table_configs(),
                                     device=torch.device(device or "cpu"))
        return PerFeatureModule(self, ebc, dense_device(device))

    def report(self) -> list[TableReport]:
        return [table_report(f"t_{s.name}", rows, self.dim,
                             f"hashed from {s.cardinality} ids" if rows < s.cardinality else "")
                for s, rows in zip(self.specs, self.rows, strict=True)]


class PerFeatureModule(LayoutModule):
    hashed: torch.Tensor
    rows: torch.Tensor
    salts: torch.Tensor
    def __init__(self, layout: PerFeatureLayout, ebc: EmbeddingBagCollection,
                 device: torch.device) -> None:
        super().__init__(layout.feature_names, layout.dim,
                         [s.name for s in layout.specs if s.pooling == "mean"], ebc)
        self.seed = layout.config.seed
        hashed = [rows < s.cardinality for s, rows in zip(layout.specs, layout.rows, strict=True)]
        self.any_hashed = any(hashed)
        self.register_buffer("hashed", torch.tensor(hashed, dtype=torch.bool, device=device),
                             persistent=False)
        self.register_buffer("rows", torch.tensor(layout.rows, dtype=torch.int64, device=device),
                             persistent=False)
        self.register_buffer("salts", torch.tensor(layout.salts, dtype=torch.int64,
                                                   device=device), persistent=False)

    def transform(self, kjt: KeyedJaggedTensor) -> KeyedJaggedTensor:
        if not self.any_hashed:
            return kjt
        key = self.key_index(kjt)
        values = kjt.values()
        hashed = salted_hash_torch(values, self.salts[key], self.seed) % self.rows[key]
        values = torch.where(self.hashed[key], hashed, values)
        return KeyedJaggedTensor(keys=kjt.keys(), values=values, lengths=kjt.lengths(),
                                 stride=kjt.stride())

    def combine(self, pooled: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: pooled[name] for name in self.feature_names}
