"""Progress that suits where it is shown: a tqdm bar on a terminal, and in a log file or CI (not a
terminal) a plain line every `every_s` seconds and one at the end, never `\\r` frames."""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any

from tqdm import tqdm

log = logging.getLogger("plexrec.progress")


class Progress:
    """`with Progress("prepare", total=None, unit="rows") as p: p.update(n)`."""

    def __init__(self, desc: str, total: float | None = None, unit: str = "rows",
                 enabled: bool = True, every_s: float = 10.0, **bar: Any) -> None:
        self.desc, self.total, self.unit, self.every_s = desc, total, unit, every_s
        self.enabled = enabled
        self.done = float(bar.get("initial", 0))
        self.postfix = ""
        self.t0 = self.last = time.perf_counter()
        self.bar = (tqdm(total=total, unit=f" {unit}", desc=desc, **bar)
                    if enabled and sys.stderr.isatty() else None)

    def update(self, n: float) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.perf_counter() - self.last >= self.every_s:
            self._line()

    def set_postfix(self, **values: str) -> None:
        """Figures shown after the count (loss, rate...), on the bar or in the next line."""
        if self.bar is not None:
            self.bar.set_postfix(**values)
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def _line(self) -> None:
        self.last = now = time.perf_counter()
        of = f"/{self.total:,.0f}" if self.total else ""
        log.info("%s: %s%s %s, %.1fs%s", self.desc, f"{self.done:,.0f}", of, self.unit,
                 now - self.t0, f" {self.postfix}" if self.postfix else "")

    def __enter__(self) -> Progress:
        return self

    def close(self, completed: bool = True) -> None:
        """Ends the bar, or writes the final line when the work completed."""
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and completed:
            self._line()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(completed=kind is None)
