"""What every embedding layout shares: feature specs, the [layout] config, table reports, and the
module skeleton (select features -> vectorised id transform -> one EmbeddingBagCollection ->
per-feature [B, dim] outputs)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

from plexrec.features.config import Section, describe_errors, parse_section
from plexrec.features.errors import ConfigError
from plexrec.features.hashing import hash_ids_np, hash_ids_torch, hash_strings
from plexrec.models.layout_registry import LAYOUTS, check_layout_kind, layout_class
from plexrec.models.layouts.budget import BYTES_PER_PARAM, Budget, parse_budget

POOLINGS = ("sum", "mean")
OptionsT = TypeVar("OptionsT", bound=Section)


@dataclass(frozen=True)
class SparseFeatureSpec:
    """What a layout needs to know about one sparse feature."""

    name: str
    cardinality: int
    counts: np.ndarray | None = field(default=None, compare=False, repr=False)
    pooling: str = "sum"


class LayoutConfig(Section):
    """The [layout] table: the keys every layout shares, and one sub-table per layout kind
    (`[layout.mixed_dim] alpha = 0.3`) that the layout's own `Options` section checks, so the
    settings of every kind can sit side by side (for `--layout`) and a new layout brings its
    keys in its own file. `budget` ("8MB", "512KB" or a parameter count) is parsed here, once."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True,
                              arbitrary_types_allowed=True)

    kind: str = "per_feature"
    dim: int = Field(16, ge=1)
    budget: Budget | None = None
    seed: int = 0
    _options: dict[str, Section] = PrivateAttr(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        try:
            return check_layout_kind(kind, "kind")
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("kind: ")) from None

    @field_validator("budget", mode="before")
    @classmethod
    def _parse_budget(cls, value: Any) -> Budget | None:
        if value is None or isinstance(value, Budget):
            return value
        try:
            return parse_budget(value, "budget")
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("budget: ")) from None

    @model_validator(mode="after")
    def _layout_tables(self) -> LayoutConfig:
        for name, table in (self.model_extra or {}).items():
            if name not in LAYOUTS:
                shared = ", ".join(type(self).model_fields)
                raise ValueError(f"unknown key {name!r} (known: {shared}, and a table per "
                                 f"layout kind: {', '.join(LAYOUTS)})")
            if not isinstance(table, Mapping):
                raise ValueError(f"{name} must be a table ([layout.{name}]), got {table!r}")
            options_cls = layout_class(name).Options
            try:
                self._options[name] = options_cls.model_validate(dict(table))
            except ValidationError as exc:
                raise ValueError(describe_errors(exc, "", options_cls, ("layout", name))) from None
        return self

    def options(self, cls: type[OptionsT]) -> OptionsT:
        """This kind's settings ([layout.<kind>]), defaults where the table is absent."""
        found = self._options.get(self.kind)
        return found if isinstance(found, cls) else cls()

    def with_budget(self, budget: Budget | None) -> LayoutConfig:
        """The same layout under another budget (e.g. one tower's share)."""
        return self.model_copy(update={"budget": budget})

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "layout") -> LayoutConfig:
        """Build from a TOML table; a ConfigError names the bad key and its value."""
        return parse_section(cls, d, where)


class NoOptions(Section):
    """A layout without settings of its own."""


@dataclass(frozen=True)
class TableReport:
    """One line of a layout's size report; `note` says e.g. that ids are hashed into fewer rows."""

    name: str
    rows: int
    dim: int
    params: int
    bytes: int
    note: str = ""


def table_report(name: str, rows: int, dim: int, note: str = "") -> TableReport:
    params = rows * dim
    return TableReport(name, rows, dim, params, params * BYTES_PER_PARAM, note)


def specs_from_prepared(data: Any, features: Sequence[str] | None = None) -> list[SparseFeatureSpec]:
    """Specs for the sparse features of a features.cache.PreparedData (duck-typed)."""
    names = list(features) if features is not None else list(data.sparse_names)
    pooling_of: dict[str, str] = {}
    meta = getattr(data, "meta", None)
    if isinstance(meta, dict):
        for entry in meta.get("sparse", []):
            if isinstance(entry, dict) and entry.get("pooling") in POOLINGS:
                pooling_of[entry["name"]] = entry["pooling"]
    return [SparseFeatureSpec(name=name, cardinality=int(data.cardinality(name)),
                              counts=np.asarray(data.counts(name), dtype=np.int64),
                              pooling=pooling_of.get(name, "sum"))
            for name in names]


def check_specs(specs: Sequence[SparseFeatureSpec]) -> None:
    if not specs:
        raise ConfigError("layout: no sparse features to embed")
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(f"layout: sparse feature {spec.name!r} appears twice")
        seen.add(spec.name)
        if "__" in spec.name or "@" in spec.name:
            raise ConfigError(
                f"layout: feature name {spec.name!r} may not contain '__' or '@' "
                "(reserved for table keys)")
        if spec.cardinality < 1:
            raise ConfigError(
                f"layout: feature {spec.name!r} has cardinality {spec.cardinality} (< 1)")
        if spec.pooling not in POOLINGS:
            raise ConfigError(
                f"layout: feature {spec.name!r} pooling {spec.pooling!r} "
                f"(valid: {', '.join(POOLINGS)})")
        if spec.counts is not None and len(spec.counts) != spec.cardinality:
            raise ConfigError(
                f"layout: feature {spec.name!r} has {len(spec.counts)} counts for cardinality "
                f"{spec.cardinality}")


_MASK64 = (1 << 64) - 1


def feature_salt(feature: str, slot: str, seed: int) -> int:
    """A 63-bit salt for (feature name, slot), e.g. slot "p1" = probe 1: xxh64 of
    "<feature>#<slot>" keyed by the layout seed. Keyed by name, not position, so a feature keeps
    its rows when the feature list is reordered or subset."""
    return int(hash_strings([f"{feature}#{slot}"], seed=seed & _MASK64)[0])


def salted_hash_torch(values: torch.Tensor, salts: torch.Tensor, seed: int) -> torch.Tensor:
    """hash_ids(value + salt (wrapping 64-bit add), seed): one vectorised call hashes ids of
    many features, each with its own salt. Non-negative int64."""
    return hash_ids_torch(values.to(torch.int64) + salts, seed)


def salted_hash_np(values: np.ndarray, salt: int, seed: int) -> np.ndarray:
    """The numpy twin of salted_hash_torch (bit-identical), for serving and tests."""
    with np.errstate(over="ignore"):
        mixed = np.asarray(values).astype(np.int64).astype(np.uint64) + np.uint64(salt)
    return hash_ids_np(mixed, seed)


def default_init_range(rows: int) -> tuple[float, float]:
    bound = math.sqrt(1.0 / max(rows, 1))
    return -bound, bound


def make_table(name: str, rows: int, dim: int, feature_names: list[str]) -> EmbeddingBagConfig:
    """Tables always sum-pool: mean features are divided by their bag length afterwards, because
    a table may be shared by features of either pooling (unified) or split into blocks
    (mixed_dim), where a per-table mean would be wrong."""
    low, high = default_init_range(rows)
    return EmbeddingBagConfig(name=name, num_embeddings=rows, embedding_dim=dim,
                              feature_names=feature_names, pooling=PoolingType.SUM,
                              weight_init_min=low, weight_init_max=high)


def dense_device(device: torch.device | str | None) -> torch.device:
    """Where the non-sharded parts live: DMP builds the EBC on meta, the rest stays real."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return torch.device("cpu") if dev.type == "meta" else dev


class KeySelect(nn.Module):
    """forward(kjt) -> the KJT of `feature_names` in that order (the batch may carry other
    features or another order). A parameter-free module of its own, so TorchRec's train pipeline
    can trace a model around it and run it in the input-distribution stage."""

    def __init__(self, feature_names: Sequence[str], where: str = "layout") -> None:
        super().__init__()
        self.feature_names = list(feature_names)
        self.where = where
        self._orders: dict[tuple[str, ...], list[int]] = {}

    def forward(self, kjt: KeyedJaggedTensor) -> KeyedJaggedTensor:
        keys = tuple(kjt.keys())
        if list(keys) == self.feature_names:
            return kjt
        order = self._orders.get(keys)
        if order is None:
            position = {k: i for i, k in enumerate(keys)}
            missing = [f for f in self.feature_names if f not in position]
            if missing:
                raise ConfigError(f"{self.where}: batch lacks sparse feature(s) {missing}; "
                                  f"it has {list(keys)}")
            order = [position[f] for f in self.feature_names]
            self._orders[keys] = order
        return kjt.permute(order)


class BagLengths(nn.Module):
    """forward(kjt) -> [features, B] bag lengths in `select`'s order (for mean pooling)."""

    def __init__(self, select: KeySelect) -> None:
        super().__init__()
        self.select = select

    def forward(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
        return self.select(kjt).lengths().view(len(self.select.feature_names), -1)


class LayoutInput(nn.Module):
    """forward(kjt) -> the EBC's KJT: the layout's features selected, then its vectorised id
    transform. Parameter-free (the layout's buffers are read through a reference that is not a
    submodule), so TorchRec's train pipeline runs it as a post-processing module, off the
    critical path, and the EBC itself is pipelined."""

    def __init__(self, layout: LayoutModule) -> None:
        super().__init__()
        object.__setattr__(self, "_layout", layout)

    def forward(self, kjt: KeyedJaggedTensor) -> KeyedJaggedTensor:
        layout: LayoutModule = self.__dict__["_layout"]
        return layout.transform(layout.select(kjt))


class LayoutModule(nn.Module, ABC):
    """forward(kjt) -> {feature: [B, dim]}. Subclasses supply transform() (the vectorised id
    remap into the EBC's keys) and combine() (pooled EBC outputs -> per-feature tensors)."""

    def __init__(self, feature_names: list[str], dim: int, mean_features: list[str],
                 ebc: EmbeddingBagCollection) -> None:
        super().__init__()
        self.feature_names = list(feature_names)
        self.dim = dim
        self.mean_features = list(mean_features)
        self.ebc = ebc
        self.select = KeySelect(self.feature_names)
        self.bag_lengths = BagLengths(self.select)
        self.ebc_input = LayoutInput(self)

    @staticmethod
    def key_index(kjt: KeyedJaggedTensor) -> torch.Tensor:
        """For each value of the KJT, the index of its key (vectorised)."""
        num_keys = len(kjt.keys())
        per_key = kjt.lengths().view(num_keys, -1).sum(dim=1)
        return torch.repeat_interleave(
            torch.arange(num_keys, device=kjt.values().device), per_key)

    @abstractmethod
    def transform(self, kjt: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """Map the layout's features (in layout order) to the EBC's KJT."""

    @abstractmethod
    def combine(self, pooled: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Pooled EBC outputs -> {feature: [B, dim]}."""

    def forward(self, kjt: KeyedJaggedTensor) -> dict[str, torch.Tensor]:
        out = self.combine(self.ebc(self.ebc_input(kjt)).to_dict())
        if self.mean_features:
            lengths = self.bag_lengths(kjt)
            for name in self.mean_features:
                count = lengths[self.feature_names.index(name)].clamp(min=1)
                out[name] = out[name] / count.unsqueeze(1).to(out[name].dtype)
        return out


def rebucket(kjt: KeyedJaggedTensor, new_key: torch.Tensor, new_values: torch.Tensor,
             new_keys: list[str]) -> KeyedJaggedTensor:
    """Move each value of `kjt` (same sample) into key `new_key[i]` of a KJT with keys
    `new_keys`; bags that receive nothing become empty (pooling to zeros)."""
    batch = kjt.stride()
    lengths = kjt.lengths()
    bag = torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths)
    new_bag = new_key * batch + bag % batch
    order = torch.argsort(new_bag, stable=True)
    new_lengths = torch.bincount(new_bag, minlength=len(new_keys) * batch)
    return KeyedJaggedTensor(keys=new_keys, values=new_values[order], lengths=new_lengths,
                             stride=batch)


class EmbeddingLayout(ABC):
    """A plan of TorchRec tables for a list of sparse features, plus the module that uses them.
    `Options` is the layout's own settings section, `[layout.<kind>]`."""

    Options: type[Section] = NoOptions
    name: str
    dim: int
    feature_names: list[str]

    def __init__(self, specs: list[SparseFeatureSpec], config: LayoutConfig) -> None:
        check_specs(specs)
        self.specs = list(specs)
        self.config = config
        self.dim = config.dim
        self.feature_names = [s.name for s in specs]

    @abstractmethod
    def table_configs(self) -> list[EmbeddingBagConfig]:
        """The real TorchRec tables (what DMP shards)."""

    @abstractmethod
    def module(self, device: torch.device | str | None = None) -> LayoutModule:
        """A fresh module; its EBC is built on `device` (may be "meta" for DMP)."""

    @abstractmethod
    def report(self) -> list[TableReport]:
        """One row per table, plus a "projections" row when the layout has any."""

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.report())

    @property
    def total_bytes(self) -> int:
        return sum(r.bytes for r in self.report())

    def describe(self) -> str:
        lines = [f"{self.name}: dim {self.dim}, {len(self.feature_names)} features, "
                 f"{self.total_params} params ({self.total_bytes} bytes)"]
        for r in self.report():
            note = f"  [{r.note}]" if r.note else ""
            lines.append(f"  {r.name}: {r.rows} x {r.dim} = {r.params}{note}")
        return "\n".join(lines)
