"""Embedding layouts on TorchRec: per-feature tables, mixed-dimension blocks, unified
multi-probe tables and quotient-remainder tables, each under an optional parameter/byte budget."""

from __future__ import annotations

from plexrec.features.errors import ConfigError
from plexrec.models.layouts.base import (
    KINDS,
    EmbeddingLayout,
    LayoutConfig,
    LayoutModule,
    SparseFeatureSpec,
    TableReport,
    specs_from_prepared,
)
from plexrec.models.layouts.budget import Budget, parse_budget
from plexrec.models.layouts.mixed_dim import MixedDimLayout
from plexrec.models.layouts.per_feature import PerFeatureLayout
from plexrec.models.layouts.qr import QRLayout
from plexrec.models.layouts.unified import UnifiedLayout

_LAYOUTS: dict[str, type[EmbeddingLayout]] = {
    "per_feature": PerFeatureLayout,
    "mixed_dim": MixedDimLayout,
    "unified": UnifiedLayout,
    "qr": QRLayout,
}


def build_layout(specs: list[SparseFeatureSpec], config: LayoutConfig) -> EmbeddingLayout:
    """The layout `config.kind` for these features, honouring `config.budget`."""
    if config.kind not in _LAYOUTS:
        raise ConfigError(
            f"layout: unknown layout kind {config.kind!r} (valid: {', '.join(KINDS)})")
    config.validate("layout")
    return _LAYOUTS[config.kind](list(specs), config)


__all__ = [
    "KINDS",
    "Budget",
    "EmbeddingLayout",
    "LayoutConfig",
    "LayoutModule",
    "MixedDimLayout",
    "PerFeatureLayout",
    "QRLayout",
    "SparseFeatureSpec",
    "TableReport",
    "UnifiedLayout",
    "build_layout",
    "parse_budget",
    "specs_from_prepared",
]
