"""Error types shared by every package: each names its culprit so the CLI can print one clear line."""

from __future__ import annotations


class PlexrecError(Exception):
    """Base of every error the CLI reports as `error: <message>` with exit code 2."""


class SchemaError(PlexrecError):
    """A schema TOML that is missing, malformed, or names something that does not exist."""


class ConfigError(PlexrecError):
    """A run config, CLI flag or override with a bad value; the message names the field."""


class DataError(PlexrecError):
    """A bad input row or file. Carries the file, 1-based line and field that were wrong."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.message, self.path, self.line, self.field = message, path, line, field
        where = ":".join(str(p) for p in (path, line) if p is not None)
        prefix = f"{where}: " if where else ""
        suffix = f" (field {field})" if field else ""
        super().__init__(f"{prefix}{message}{suffix}")
