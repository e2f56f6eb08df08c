"""The command's surface: a version, and help text on every flag of every sub-command."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator

import pytest

import plexrec
from plexrec.cli.main import build_parser


def _parsers(parser: argparse.ArgumentParser, path: str = "plexrec"
             ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, f"{path} {name}")


def test_version_is_the_installed_one() -> None:
    out = subprocess.run([sys.executable, "-m", "plexrec.cli.main", "--version"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert out.stdout.strip() == f"plexrec {plexrec.__version__}"
    assert plexrec.__version__ != "0+unknown"


PARSERS = dict(_parsers(build_parser()))


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_flag_has_help(command: str) -> None:
    parser = PARSERS[command]
    missing = [a.option_strings[0] for a in parser._actions
               if a.option_strings and not a.help]
    assert missing == [], f"{command}: flags without help"


def test_defaults_are_shown() -> None:
    text = PARSERS["plexrec train"].format_help()
    assert "(default: 1)" in text and "(default: 0)" in text
    assert "(default: None)" not in text
