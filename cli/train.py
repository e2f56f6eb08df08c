"""`plexrec train`: argument parsing only; the work is done by the packages."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Not built yet: the command appears once its package exists."""
