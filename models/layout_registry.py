"""The embedding layouts, one line each: `[layout] kind` -> "module:class" of its
`EmbeddingLayout`. Names only, so the CLI help and config checks list the kinds without importing
torch; `layout_class` imports the one a run builds. A new layout is
`models/layouts/<name>.py` plus one line below."""

from __future__ import annotations

import importlib
from typing import Any

from plexrec.features.errors import ConfigError

LAYOUTS: dict[str, str] = {
    "per_feature": "plexrec.models.layouts.per_feature:PerFeatureLayout",
    "mixed_dim": "plexrec.models.layouts.mixed_dim:MixedDimLayout",
    "unified": "plexrec.models.layouts.unified:UnifiedLayout",
    "qr": "plexrec.models.layouts.qr:QRLayout",
}


def check_layout_kind(kind: object, where: str = "layout") -> str:
    if not isinstance(kind, str) or kind not in LAYOUTS:
        raise ConfigError(f"{where}: unknown layout kind {kind!r} (valid: {', '.join(LAYOUTS)})")
    return kind


def layout_class(kind: str, where: str = "layout") -> Any:
    module, _, name = LAYOUTS[check_layout_kind(kind, where)].partition(":")
    return getattr(importlib.import_module(module), name)
