"""The `plexrec` command: parses arguments and calls into the packages; it holds no logic."""

from __future__ import annotations

import argparse
import importlib
import sys

from plexrec.features.errors import PlexrecError
from plexrec.features.logs import configure_logging

# Each module defines register(subparsers), adding parsers whose `func(args) -> int` runs them.
COMMAND_MODULES = ("plexrec.cli.data", "plexrec.cli.train", "plexrec.cli.export", "plexrec.cli.publish", "plexrec.cli.serve",
                   "plexrec.cli.query", "plexrec.cli.demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plexrec",
        description="Recommender embedding tables: prepare data, train, export, publish, serve.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(verbose=args.verbose)
    try:
        return int(args.func(args) or 0)
    except PlexrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
