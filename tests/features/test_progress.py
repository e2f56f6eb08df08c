"""Progress: plain log lines when stderr is not a terminal (no tqdm frames in a log file)."""

from __future__ import annotations

import logging

import pytest

from plexrec.features.progress import Progress


def test_not_a_terminal_logs_plain_lines(caplog: pytest.LogCaptureFixture,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.INFO, "plexrec.progress")
    with Progress("prepare", total=300, every_s=0.0) as p:
        assert p.bar is None
        p.update(100)
        p.update(200)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("prepare: 100/300 rows") and lines[-1].startswith("prepare: 300/300")
    assert "\r" not in capsys.readouterr().err


def test_disabled_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "plexrec.progress")
    with Progress("prepare", enabled=False, every_s=0.0) as p:
        p.update(5)
    assert not caplog.records and p.done == 5
