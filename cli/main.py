"""The `plexrec` command: parses arguments and calls into the packages; it holds no logic."""

from __future__ import annotations

import argparse
import importlib
import sys

from plexrec import __version__
from plexrec.features.errors import PlexrecError
from plexrec.features.logs import configure_logging
from plexrec.training import third_party_warnings

# Each module defines register(subparsers), adding parsers whose `func(args) -> int` runs them.
COMMAND_MODULES = ("plexrec.cli.data", "plexrec.cli.train", "plexrec.cli.export",
                   "plexrec.cli.publish", "plexrec.cli.serve", "plexrec.cli.query",
                   "plexrec.cli.demo", "plexrec.cli.tune")


class _DefaultsFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends `(default: X)` to every flag's help that has a meaningful default, so no command
    module repeats its defaults in prose."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        empty = default is None or default is False or default is argparse.SUPPRESS or (
            isinstance(default, str | list) and not default)
        if not action.option_strings or empty or "%(default)" in text:
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """Every parser and sub-parser of the command formats its help the same way."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="plexrec",
        description="Recommender embedding tables: prepare data, train, export, publish, serve.")
    parser.add_argument("--version", action="version", version=f"plexrec {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(verbose=args.verbose)
    third_party_warnings.silence()
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
