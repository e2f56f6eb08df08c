"""Embedding layouts on TorchRec: per-feature tables, mixed-dimension blocks, unified
multi-probe tables and quotient-remainder tables, each under an optional parameter/byte budget."""

from __future__ import annotations

from plexrec.models.layout_registry import LAYOUTS, layout_class
from plexrec.models.layouts.base import (
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


def build_layout(specs: list[SparseFeatureSpec], config: LayoutConfig) -> EmbeddingLayout:
    """The layout `config.kind` for these features, honouring `config.budget`."""
    layout: EmbeddingLayout = layout_class(config.kind)(list(specs), config)
    return layout


__all__ = [
    "LAYOUTS",
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
