"""Unified embedding (Coleman et al., "Unified Embedding: Battle-Tested Feature Representations
for Web-Scale ML Systems"): every feature shares one table (or `num_tables` tables, features
assigned round-robin) of R rows and width dim / k.

Feature f looks value v up with k probes; probe j reads row

    row_j(f, v) = hash_ids(v + salt(f, j), seed) mod R,  salt(f, j) = xxh64("<f>#p<j>", seed)

(hash_ids = features.hashing.hash_ids_torch / hash_ids_np, the add wraps at 64 bits), and the k
slices are concatenated so each feature yields width dim and keeps its identity: the same value
in two features lands on the same row of a probe only with probability 1/R, on all k rows with
1/R^k. One EmbeddingBagCollection does it: the shared table lists one KJT key per (feature,
probe) pair, "<f>__p<j>"."""

from __future__ import annotations

import math

import numpy as np
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
    salted_hash_np,
    salted_hash_torch,
    table_report,
)


def probe_key(feature: str, probe: int) -> str:
    return f"{feature}__p{probe}"


class UnifiedOptions(Section):
    """[layout.unified]: k salted hash probes per id into shared tables (Coleman et al.)."""

    probes: int = Field(2, ge=1)
    rows: int | None = Field(None, ge=1)
    num_tables: int = Field(1, ge=1)

class UnifiedLayout(EmbeddingLayout):
    """Shared multi-probe hashed tables."""

    name = "unified"
    Options = UnifiedOptions

    def __init__(self, specs: list[SparseFeatureSpec], config: LayoutConfig) -> None:
        super().__init__(specs, config)
        opts = config.options(UnifiedOptions)
        self.probes = opts.probes
        if self.dim % self.probes:
            raise ConfigError(
                f"layout.unified.probes = {self.probes} does not divide dim = {self.dim}")
        self.width = self.dim // self.probes
        self.num_tables = min(opts.num_tables, len(specs))
        budget = config.budget
        per_row = self.width * self.num_tables
        if opts.rows is not None:
            self.rows = opts.rows
            if budget is not None and self.rows * per_row > budget.to_params():
                raise ConfigError(
                    f"layout.unified.rows = {self.rows} needs {self.rows * per_row} params, "
                    f"over layout.budget = {budget}")
        elif budget is not None:
            self.rows = budget.to_params() // per_row
        else:
            self.rows = math.ceil(self.probes * sum(s.cardinality for s in specs)
                                  / self.num_tables)
        if self.rows * self.num_tables < len(specs):
            culprit = (f"layout.unified.rows = {opts.rows}" if opts.rows is not None
                       else f"layout.budget = {budget}")
            raise ConfigError(
                f"{culprit} is too small for unified: {self.rows} rows x {self.num_tables} "
                f"table(s) of width {self.width} cannot give each of {len(specs)} features a "
                f"row (needs at least {math.ceil(len(specs) / self.num_tables) * per_row} "
                "params)")
        self.table_of = [i % self.num_tables for i in range(len(specs))]
        self.salts = [[feature_salt(s.name, f"p{j}", config.seed) for s in specs]
                      for j in range(self.probes)]

    def table_name(self, t: int) -> str:
        return f"unified_t{t}"

    def table_configs(self) -> list[EmbeddingBagConfig]:
        tables = []
        for t in range(self.num_tables):
            keys = [probe_key(s.name, j) for s, table in zip(self.specs, self.table_of, strict=True)
                    if table == t for j in range(self.probes)]
            tables.append(make_table(self.table_name(t), self.rows, self.width, keys))
        return tables

    def module(self, device: torch.device | str | None = None) -> UnifiedModule:
        ebc = EmbeddingBagCollection(tables=self.table_configs(),
                                     device=torch.device(device or "cpu"))
        return UnifiedModule(self, ebc, dense_device(device))

    def report(self) -> list[TableReport]:
        reports = []
        for t in range(self.num_tables):
            shared = sum(1 for table in self.table_of if table == t)
            reports.append(table_report(
                self.table_name(t), self.rows, self.width,
                f"shared by {shared} features x {self.probes} probes"))
        return reports

    def probe_rows(self, feature: str, ids: np.ndarray) -> np.ndarray:
        """[k, n] rows the ids of `feature` read (numpy twin of the module's transform)."""
        f = self.feature_names.index(feature)
        return np.stack([salted_hash_np(ids, self.salts[j][f], self.config.seed) % self.rows
                         for j in range(self.probes)])


class UnifiedModule(LayoutModule):
    salts: torch.Tensor
    def __init__(self, layout: UnifiedLayout, ebc: EmbeddingBagCollection,
                 device: torch.device) -> None:
        super().__init__(layout.feature_names, layout.dim,
                         [s.name for s in layout.specs if s.pooling == "mean"], ebc)
        self.seed = layout.config.seed
        self.rows = layout.rows
        self.probes = layout.probes
        self.register_buffer("salts", torch.tensor(layout.salts, dtype=torch.int64,
                                                   device=device), persistent=False)
        self.probe_keys = [probe_key(f, j) for j in range(self.probes)
                           for f in self.feature_names]
        self.keys_of = [[probe_key(f, j) for j in range(self.probes)]
                        for f in self.feature_names]

    def transform(self, kjt: KeyedJaggedTensor) -> KeyedJaggedTensor:
        key = self.key_index(kjt)
        values = kjt.values().unsqueeze(0).expand(self.probes, -1)
        rows = salted_hash_torch(values, self.salts[:, key], self.seed) % self.rows
        return KeyedJaggedTensor(keys=self.probe_keys, values=rows.reshape(-1),
                                 lengths=kjt.lengths().repeat(self.probes),
                                 stride=kjt.stride())

    def combine(self, pooled: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {f: torch.cat([pooled[k] for k in keys], dim=1)
                for f, keys in zip(self.feature_names, self.keys_of, strict=True)}
