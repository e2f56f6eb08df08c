"""Embedding budgets: "8MB" (bytes of float32 weights) or a plain parameter count.

Layouts compare against parameters, so bytes are converted at 4 bytes per float32. Units are
binary (KB = 1024 bytes) because budgets describe memory."""

from __future__ import annotations

import re
from dataclasses import dataclass

from plexrec.features.errors import ConfigError

BYTES_PER_PARAM = 4

_UNITS = {
    "b": 1,
    "kb": 1024, "kib": 1024, "k": 1024,
    "mb": 1024**2, "mib": 1024**2, "m": 1024**2,
    "gb": 1024**3, "gib": 1024**3, "g": 1024**3,
}
_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*$")


@dataclass(frozen=True)
class Budget:
    """Exactly one of `params` or `bytes` is set; `to_params()` gives the comparable figure."""

    params: int | None = None
    bytes: int | None = None

    def to_params(self) -> int:
        if self.params is not None:
            return self.params
        assert self.bytes is not None
        return self.bytes // BYTES_PER_PARAM

    def __str__(self) -> str:
        if self.params is not None:
            return f"{self.params} params"
        return f"{self.bytes} bytes"


def parse_budget(value: str | int | float | None, where: str = "budget") -> Budget | None:
    """Parse "8MB", "512KB", "1.5GB" (bytes) or 2000000 / "2000000" / "2_000_000" (params).

    `where` names the setting in error messages (e.g. "layout.budget")."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{where}: {value!r} is not a budget (use e.g. \"8MB\" or 2000000)")
    if isinstance(value, int):
        if value <= 0:
            raise ConfigError(f"{where}: {value!r} must be a positive parameter count")
        return Budget(params=value)
    if isinstance(value, float):
        if not value.is_integer() or value <= 0:
            raise ConfigError(f"{where}: {value!r} must be a positive whole parameter count")
        return Budget(params=int(value))
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {value!r} is not a budget (use e.g. \"8MB\" or 2000000)")
    text = value.replace("_", "")
    match = _PATTERN.match(text)
    if match is None:
        raise ConfigError(
            f"{where}: cannot parse budget {value!r} (use e.g. \"8MB\", \"512KB\", \"1.5GB\" "
            "or a parameter count such as 2000000)")
    number, unit = float(match.group(1)), match.group(2).lower()
    if not unit:
        if not number.is_integer() or number <= 0:
            raise ConfigError(f"{where}: {value!r} must be a positive whole parameter count")
        return Budget(params=int(number))
    if unit not in _UNITS:
        raise ConfigError(
            f"{where}: unknown unit {match.group(2)!r} in budget {value!r} "
            f"(valid: B, KB, MB, GB)")
    size = int(number * _UNITS[unit])
    if size < BYTES_PER_PARAM:
        raise ConfigError(f"{where}: budget {value!r} is smaller than one float32 parameter")
    return Budget(bytes=size)
