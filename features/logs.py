"""Logging set-up shared by the `plexrec` command and the torchrun workers."""

from __future__ import annotations

import logging
import sys

OWN_PACKAGES = ("plexrec", "bench")


def configure_logging(verbose: bool = False, prefix: str = "", level: int = logging.INFO) -> None:
    """Our packages log at `level`; third-party libraries (fbgemm's load messages, the planner's
    statistics tables) only at WARNING unless verbose, so progress stays readable."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, force=True,
                        stream=sys.stderr,
                        format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s")
    for name in OWN_PACKAGES:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else level)
