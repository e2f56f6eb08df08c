"""Quotient-remainder embeddings (Shi et al., "Compositional Embeddings Using Complementary
Partitions for Memory-Efficient Recommendation Systems").

A feature with n ids and m collisions gets two tables of width d: a quotient table of ceil(n/m)
rows read at id // m and a remainder table of m rows read at id % m; the id's embedding is their
sum. (q, r) is unique per id, so ids share rows but never a whole embedding. The sum, unlike the
paper's product, stays exact under bag pooling (sum of pooled quotient + pooled remainder), so
multi-hot features work too.

Budget: rows are water-filled like per_feature (cap C for the largest C that fits); a feature
with more ids than its cap takes the smallest m whose ceil(n/m) + m rows fit, and if even
m ~ sqrt(n) does not fit, its ids are hashed into C rows. `collisions` fixes m instead."""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

from plexrec.features.config import Section
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


def qr_rows(n: int, m: int) -> int:
    return -(-n // m) + m


def plan_feature(n: int, cap: int) -> tuple[int, int, bool]:
    """(m, rows of the primary table, hashed) for n ids within `cap` rows in total."""
    if n <= cap:
        return 1, n, False
    top = max(2, math.isqrt(n))
    if min(qr_rows(n, top), qr_rows(n, top + 1)) > cap:
        return 1, cap, True
    low, high = 2, top + 1
    while low < high:
        mid = (low + high) // 2
        if qr_rows(n, mid) <= cap:
            high = mid
        else:
            low = mid + 1
    return low, -(-n // low), False


class QROptions(Section):
    """[layout.qr]: ids per quotient row; derived from the budget when unset."""

    collisions: int | None = Field(None, ge=1)

class QRLayout(EmbeddingLayout):
    """Quotient + remainder tables per feature."""

    name = "qr"
    Options = QROptions

    def __init__(self, specs: list[SparseFeatureSpec], config: LayoutConfig) -> None:
        super().__init__(specs, config)
        cards = [s.cardinality for s in specs]
        budget = config.budget
        collisions = config.options(QROptions).collisions
        if collisions is not None:
            m = collisions
            self.plans = [(m, -(-n // m), False) if qr_rows(n, m) < n else (1, n, False)
                          for n in cards]
            if budget is not None and self._params() > budget.to_params():
                raise ConfigError(
                    f"layout.qr.collisions = {m} needs {self._params()} params, over "
                    f"layout.budget = {budget}")
        elif budget is None:
            self.plans = [(1, n, False) for n in cards]
        else:
            capacity = budget.to_params() // self.dim
            if capacity < len(specs):
                raise ConfigError(
                    f"layout.budget = {budget} is too small for qr: "
                    f"{len(specs)} features x dim {self.dim} need at least "
                    f"{len(specs) * self.dim} params")
            low, high = 1, max(cards)
            while low < high:
                mid = (low + high + 1) // 2
                if self._rows([plan_feature(n, mid) for n in cards]) <= capacity:
                    low = mid
                else:
                    high = mid - 1
            self.plans = [plan_feature(n, low) for n in cards]
        self.salts = [feature_salt(s.name, "qr", config.seed) for s in specs]

    @staticmethod
    def _rows(plans: list[tuple[int, int, bool]]) -> int:
        return sum(rows + (m if m > 1 else 0) for m, rows, _ in plans)

    def _params(self) -> int:
        return self._rows(self.plans) * self.dim

    def _tables(self) -> list[tuple[str, str, int, str]]:
        """(table name, KJT key, rows, note) in table order."""
        tables = []
        for spec, (m, rows, hashed) in zip(self.specs, self.plans, strict=True):
            if m > 1:
                tables.append((f"t_{spec.name}__q", f"{spec.name}__q", rows,
                               f"ids // {m} of {spec.cardinality}"))
                tables.append((f"t_{spec.name}__r", f"{spec.name}__r", m, f"ids % {m}"))
            else:
                note = f"hashed from {spec.cardinality} ids" if hashed else ""
                tables.append((f"t_{spec.name}", spec.name, rows, note))
        return tables

    def table_configs(self) -> list[EmbeddingBagConfig]:
        return [make_table(name, rows, self.dim, [key]) for name, key, rows, _ in self._tables()]

    def module(self, device: torch.device | str | None = None) -> QRModule:
        ebc = EmbeddingBagCollection(tables=self.table_configs(),
                                     device=torch.device(device or "cpu"))
        return QRModule(self, ebc, dense_device(device))

    def report(self) -> list[TableReport]:
        return [table_report(name, rows, self.dim, note)
                for name, _, rows, note in self._tables()]


class QRModule(LayoutModule):
    m: torch.Tensor
    rows: torch.Tensor
    hashed: torch.Tensor
    is_qr: torch.Tensor
    salts: torch.Tensor
    qr_features: torch.Tensor
    def __init__(self, layout: QRLayout, ebc: EmbeddingBagCollection,
                 device: torch.device) -> None:
        super().__init__(layout.feature_names, layout.dim,
                         [s.name for s in layout.specs if s.pooling == "mean"], ebc)
        self.seed = layout.config.seed
        plans = layout.plans
        self.any_hashed = any(h for _, _, h in plans)
        self.qr_index = [f for f, (m, _, _) in enumerate(plans) if m > 1]
        names = layout.feature_names
        self.primary_keys = [f"{n}__q" if plans[f][0] > 1 else n for f, n in enumerate(names)]
        self.secondary_keys = [f"{names[f]}__r" for f in self.qr_index]

        def buffer(name: str, values: list, dtype: torch.dtype) -> None:
            self.register_buffer(name, torch.tensor(values, dtype=dtype, device=device),
                                 persistent=False)

        buffer("m", [m for m, _, _ in plans], torch.int64)
        buffer("rows", [rows for _, rows, _ in plans], torch.int64)
        buffer("hashed", [h for _, _, h in plans], torch.bool)
        buffer("is_qr", [m > 1 for m, _, _ in plans], torch.bool)
        buffer("salts", layout.salts, torch.int64)
        buffer("qr_features", self.qr_index, torch.int64)

    def transform(self, kjt: KeyedJaggedTensor) -> KeyedJaggedTensor:
        key = self.key_index(kjt)
        values = kjt.values().to(torch.int64)
        m = self.m[key]
        primary = torch.div(values, m, rounding_mode="floor")
        if self.any_hashed:
            hashed = salted_hash_torch(values, self.salts[key], self.seed) % self.rows[key]
            primary = torch.where(self.hashed[key], hashed, primary)
        if not self.qr_index:
            return KeyedJaggedTensor(keys=self.primary_keys, values=primary,
                                     lengths=kjt.lengths(), stride=kjt.stride())
        mask = self.is_qr[key]
        secondary = (values % m)[mask]
        lengths = kjt.lengths().view(len(self.feature_names), -1)
        return KeyedJaggedTensor(
            keys=self.primary_keys + self.secondary_keys,
            values=torch.cat([primary, secondary]),
            lengths=torch.cat([kjt.lengths(), lengths[self.qr_features].reshape(-1)]),
            stride=kjt.stride())

    def combine(self, pooled: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {name: pooled[key]
               for name, key in zip(self.feature_names, self.primary_keys, strict=True)}
        for f, key in zip(self.qr_index, self.secondary_keys, strict=True):
            name = self.feature_names[f]
            out[name] = out[name] + pooled[key]
        return out
