"""Mixed-dimension embeddings (Ginart et al., "Mixed Dimension Embeddings with Application to
Memory-Efficient Recommendation Systems").

Each feature's ids are ranked by frequency (from counts; ties by id) and split into `blocks`
blocks at log-spaced rank boundaries (n^(i/blocks)), so the head block is tiny and the tail huge.
Block i gets the paper's power-law width d_i = lambda * p_i^alpha with p_i its average per-row
frequency (block mass / block rows); without a budget lambda = d / p_0^alpha (the head block is
full width). Widths are rounded to a multiple of 4 and clamped to [min_block_dim, d]. A block
whose projection (d_i x d) would cost more than it saves (rows * (d - d_i)) keeps width d and
needs no projection. Each block is its own TorchRec table; a learned projection (d_i -> d, no
bias) lifts narrower blocks to d, and a feature's output is the sum of its projected block
outputs (an id lives in exactly one block, the other blocks' bags are empty and pool to zeros).

Under a budget, lambda is lowered until the total fits; if even minimum widths do not fit, the
largest blocks are capped (water-filling) and the ids of a capped block are hashed into its rows.

The id -> (block key, row) remap is built once from counts and held as two int32 tensors over
all features' ids (8 bytes per id: 80 MB for 10M ids in total)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field
from torch import nn
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
    rebucket,
    salted_hash_np,
    table_report,
)
from plexrec.models.layouts.budget import BYTES_PER_PARAM

_SCALE_STEPS = 400


@dataclass(frozen=True)
class Block:
    """Frequency ranks [start, end) of one feature, stored in `rows` rows of width `dim`."""

    start: int
    end: int
    rows: int
    dim: int
    popularity: float

    @property
    def size(self) -> int:
        return self.end - self.start


def block_key(feature: str, block: int) -> str:
    return f"{feature}__b{block}"


def block_edges(cardinality: int, blocks: int) -> list[int]:
    """Log-spaced rank boundaries 0 = e_0 < e_1 < ... < e_b = cardinality."""
    count = min(blocks, cardinality)
    edges = [0]
    for i in range(1, count):
        edge = int(round(cardinality ** (i / count)))
        edges.append(max(edges[-1] + 1, min(edge, cardinality - (count - i))))
    edges.append(cardinality)
    return edges


def round_width(raw: float, dim: int, min_dim: int) -> int:
    width = int(4 * round(raw / 4))
    return max(min_dim, min(dim, width))


def worth_projecting(rows: int, width: int, dim: int) -> bool:
    return width < dim and rows * (dim - width) > width * dim


class MixedDimOptions(Section):
    """[layout.mixed_dim]: block widths scale as dim * (count ratio) ** alpha (Ginart et al.)."""

    alpha: float = Field(0.3, ge=0.0, le=2.0)
    blocks: int = Field(4, ge=1)
    min_block_dim: int = Field(4, ge=1)

class MixedDimLayout(EmbeddingLayout):
    """Frequency blocks per feature, narrower for rarer ids, projected up to dim."""

    name = "mixed_dim"
    Options = MixedDimOptions

    def __init__(self, specs: list[SparseFeatureSpec], config: LayoutConfig) -> None:
        super().__init__(specs, config)
        for spec in specs:
            if spec.counts is None:
                raise ConfigError(
                    f"layout: mixed_dim needs frequency counts for feature {spec.name!r} "
                    "(prepare the data to get stats/<name>.counts.npy)")
        self.opts = config.options(MixedDimOptions)
        if self.opts.min_block_dim > self.dim:
            raise ConfigError(f"layout.mixed_dim.min_block_dim = {self.opts.min_block_dim} "
                              f"must be <= dim = {self.dim}")
        self.alpha = self.opts.alpha
        self._order: list[np.ndarray] = []
        self._spans: list[list[tuple[int, int, float]]] = []
        for spec in specs:
            order, spans = self._rank(spec, self.opts.blocks)
            self._order.append(order)
            self._spans.append(spans)
        self.scale = 1.0
        self.blocks = self._plan(1.0, None)
        budget = config.budget
        if budget is not None and self._params(self.blocks) > budget.to_params():
            self._fit(budget.to_params())

    @staticmethod
    def _rank(spec: SparseFeatureSpec, blocks: int
              ) -> tuple[np.ndarray, list[tuple[int, int, float]]]:
        """Ids by descending count (ties by id), and each block's rank span [a, b) with its
        popularity (average count per id): computed once, as it is the costly part."""
        counts = np.asarray(spec.counts, dtype=np.int64)
        order = np.argsort(-counts, kind="stable")
        cumulative = np.concatenate([[0], np.cumsum(counts[order], dtype=np.float64)])
        edges = block_edges(spec.cardinality, blocks)
        spans = [(a, b, float(cumulative[b] - cumulative[a]) / (b - a))
                 for a, b in zip(edges[:-1], edges[1:], strict=True)]
        return order, spans

    def _plan(self, scale: float, row_cap: int | None) -> list[list[Block]]:
        """Blocks of every feature for lambda = scale * d / p_0^alpha and an optional row cap."""
        plan = []
        for spans in self._spans:
            head = spans[0][2]
            blocks = []
            for a, b, pop in spans:
                ratio = (pop / head) if head > 0 else 1.0
                width = round_width(scale * self.dim * ratio ** self.alpha, self.dim,
                                    self.opts.min_block_dim)
                rows = b - a if row_cap is None else min(b - a, row_cap)
                if not worth_projecting(rows, width, self.dim):
                    width = self.dim
                blocks.append(Block(a, b, rows, width, pop))
            plan.append(blocks)
        return plan

    def _params(self, plan: list[list[Block]]) -> int:
        tables = sum(b.rows * b.dim for blocks in plan for b in blocks)
        return tables + self._projection_params(plan)

    def _projection_params(self, plan: list[list[Block]]) -> int:
        return sum(b.dim * self.dim for blocks in plan for b in blocks if b.dim < self.dim)

    def _fit(self, capacity: int) -> None:
        for step in range(_SCALE_STEPS - 1, -1, -1):
            scale = step / _SCALE_STEPS
            plan = self._plan(scale, None)
            if self._params(plan) <= capacity:
                self.scale, self.blocks = scale, plan
                return
        floor = self._params(self._plan(0.0, 1))
        if floor > capacity:
            raise ConfigError(
                f"layout.budget = {self.config.budget} ({capacity} params) is too small for "
                f"mixed_dim: one row per block at minimum widths needs {floor} params")
        low, high = 1, max(s.cardinality for s in self.specs)
        while low < high:
            mid = (low + high + 1) // 2
            if self._params(self._plan(0.0, mid)) <= capacity:
                low = mid
            else:
                high = mid - 1
        self.scale, self.blocks = 0.0, self._plan(0.0, low)

    def assignment(self, feature: str) -> tuple[np.ndarray, np.ndarray]:
        """(block, row) of every id of `feature`, each int64 [cardinality]."""
        f = self.feature_names.index(feature)
        spec, order = self.specs[f], self._order[f]
        block = np.empty(spec.cardinality, dtype=np.int64)
        row = np.empty(spec.cardinality, dtype=np.int64)
        for i, b in enumerate(self.blocks[f]):
            ids = order[b.start:b.end]
            block[ids] = i
            if b.rows == b.size:
                row[ids] = np.arange(b.size)
            else:
                salt = feature_salt(spec.name, f"b{i}", self.config.seed)
                row[ids] = salted_hash_np(ids, salt, self.config.seed) % b.rows
        return block, row

    def block_keys(self) -> list[str]:
        return [block_key(s.name, i) for s, blocks in zip(self.specs, self.blocks, strict=True)
                for i in range(len(blocks))]

    def table_configs(self) -> list[EmbeddingBagConfig]:
        return [make_table(f"t_{block_key(s.name, i)}", b.rows, b.dim, [block_key(s.name, i)])
                for s, blocks in zip(self.specs, self.blocks, strict=True)
                for i, b in enumerate(blocks)]

    def module(self, device: torch.device | str | None = None) -> MixedDimModule:
        ebc = EmbeddingBagCollection(tables=self.table_configs(),
                                     device=torch.device(device or "cpu"))
        return MixedDimModule(self, ebc, dense_device(device))

    def report(self) -> list[TableReport]:
        reports = []
        for s, blocks in zip(self.specs, self.blocks, strict=True):
            for i, b in enumerate(blocks):
                note = f"ranks {b.start}..{b.end - 1}"
                if b.rows < b.size:
                    note += f", hashed from {b.size} ids"
                reports.append(table_report(f"t_{block_key(s.name, i)}", b.rows, b.dim, note))
        projected = [b for blocks in self.blocks for b in blocks if b.dim < self.dim]
        params = self._projection_params(self.blocks)
        reports.append(TableReport("projections", sum(b.dim for b in projected), self.dim, params,
                                   params * BYTES_PER_PARAM,
                                   f"{len(projected)} block projections up to dim {self.dim}"))
        return reports


class MixedDimModule(LayoutModule):
    key_of: torch.Tensor
    row_of: torch.Tensor
    offsets: torch.Tensor
    def __init__(self, layout: MixedDimLayout, ebc: EmbeddingBagCollection,
                 device: torch.device) -> None:
        super().__init__(layout.feature_names, layout.dim,
                         [s.name for s in layout.specs if s.pooling == "mean"], ebc)
        self.block_keys = layout.block_keys()
        key_of, row_of, offsets = [], [], [0]
        base = 0
        self.identity_keys: list[list[str]] = []
        self.projected_keys: list[list[str]] = []
        self.projection_index: list[int] = []
        self.projections = nn.ParameterList()
        for spec, blocks in zip(layout.specs, layout.blocks, strict=True):
            block, row = layout.assignment(spec.name)
            key_of.append((block + base).astype(np.int32))
            row_of.append(row.astype(np.int32))
            offsets.append(offsets[-1] + spec.cardinality)
            keys = [block_key(spec.name, i) for i in range(len(blocks))]
            self.identity_keys.append([k for k, b in zip(keys, blocks, strict=True)
                                       if b.dim == layout.dim])
            narrow = [(k, b) for k, b in zip(keys, blocks, strict=True) if b.dim < layout.dim]
            self.projected_keys.append([k for k, _ in narrow])
            if narrow:
                weight = torch.empty(sum(b.dim for _, b in narrow), layout.dim, device=device)
                start = 0
                for _, b in narrow:
                    bound = 1.0 / b.dim ** 0.5
                    nn.init.uniform_(weight[start:start + b.dim], -bound, bound)
                    start += b.dim
                self.projection_index.append(len(self.projections))
                self.projections.append(nn.Parameter(weight))
            else:
                self.projection_index.append(-1)
            base += len(blocks)
        self.register_buffer("key_of", torch.from_numpy(np.concatenate(key_of)).to(device),
                             persistent=False)
        self.register_buffer("row_of", torch.from_numpy(np.concatenate(row_of)).to(device),
                             persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets[:-1], dtype=torch.int64,
                                                     device=device), persistent=False)

    def transform(self, kjt: KeyedJaggedTensor) -> KeyedJaggedTensor:
        key = self.key_index(kjt)
        flat = self.offsets[key] + kjt.values()
        return rebucket(kjt, self.key_of[flat].long(), self.row_of[flat].long(), self.block_keys)

    def combine(self, pooled: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for f, name in enumerate(self.feature_names):
            parts = [pooled[k] for k in self.identity_keys[f]]
            index = self.projection_index[f]
            if index >= 0:
                narrow = torch.cat([pooled[k] for k in self.projected_keys[f]], dim=1)
                parts.append(narrow @ self.projections[index])
            total = parts[0]
            for part in parts[1:]:
                total = total + part
            out[name] = total
        return out
