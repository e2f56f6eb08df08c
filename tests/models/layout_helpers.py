"""LayoutConfig from flat keyword arguments: the shared keys stay at the top, the rest go to the
kind's own table ([layout.<kind>])."""

from __future__ import annotations

from typing import Any

from plexrec.models.layouts import LayoutConfig

SHARED = ("dim", "budget", "seed")


def layout_config(kind: str = "per_feature", **kw: Any) -> LayoutConfig:
    own = {k: v for k, v in kw.items() if k not in SHARED and v is not None}
    shared = {k: v for k, v in kw.items() if k in SHARED}
    return LayoutConfig(kind=kind, **shared, **({kind: own} if own else {}))
