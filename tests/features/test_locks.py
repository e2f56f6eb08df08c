"""The file lock really excludes another process: the second holder waits for the first."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from plexrec.features.locks import exclusive

CHILD = """
import sys, time
from pathlib import Path
from plexrec.features.locks import exclusive
lock, log = Path(sys.argv[1]), Path(sys.argv[2])
with exclusive(lock):
    log.write_text("held")
    time.sleep(1.0)
    log.write_text("released")
"""


def test_a_second_process_waits_for_the_holder(tmp_path: Path) -> None:
    lock, log = tmp_path / "sub" / "x.lock", tmp_path / "log"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(lock), str(log)])
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and log.read_text() == "held"):
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.01)
        with exclusive(lock):
            assert log.read_text() == "released"
    finally:
        child.wait(timeout=30)
