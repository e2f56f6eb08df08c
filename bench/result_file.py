"""Writing a benchmark's JSON result under bench/results/: one place stamps the machine and the
date on every file, so figures from different machines are never mistaken for one another."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any


def write_result(path: Path, result: dict[str, Any]) -> None:
    """Writes `result` (with `machine` and `measured` added when absent) and says where."""
    stamped = {**result}
    stamped.setdefault("machine", platform.processor() or platform.machine())
    stamped.setdefault("measured", time.strftime("%Y-%m-%d"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stamped, indent=2) + "\n")
    print(f"wrote {path}")
