"""ServerConfig: every knob of the serving tier in one typed dataclass, loadable from TOML
(flat keys plus an [index] table) with CLI overrides applied last."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plexrec.features.errors import ConfigError
from plexrec.serving.index import IndexConfig


@dataclass(frozen=True)
class ServerConfig:
    """Limits are enforced per request (INVALID_ARGUMENT beyond them); `redis_url=None` serves
    from the local snapshot only; `prefer_snapshot=True` reads vectors of versions on local disk
    from the memory map first (Redis then only serves versions this server does not hold)."""

    snapshot: Path | None = None
    host: str = "127.0.0.1"
    port: int = 50051
    redis_url: str | None = None
    namespace: str = "default"
    index: IndexConfig = field(default_factory=IndexConfig)
    max_ids: int = 10_000
    max_k: int = 1_000
    cache_ttl_s: float = 3600.0
    cache_ttl_jitter_s: float = 600.0
    poll_interval_s: float = 2.0
    redis_timeout_s: float = 0.25
    breaker_cooldown_s: float = 3.0
    prefer_snapshot: bool = False
    max_concurrent_rpcs: int = 512
    max_message_bytes: int = 64 << 20
    keep_versions: int = 3
    search_threads: int = 2
    grace_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("max_ids", "max_k", "max_concurrent_rpcs", "max_message_bytes",
                     "keep_versions", "search_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"server config: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("cache_ttl_s", "poll_interval_s", "redis_timeout_s", "breaker_cooldown_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"server config: {name} must be > 0, got {getattr(self, name)}")
        if self.cache_ttl_jitter_s < 0 or self.grace_s < 0:
            raise ConfigError("server config: cache_ttl_jitter_s and grace_s must be >= 0")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"server config: port must be in 0..65535, got {self.port}")


def _coerce(cls: type, raw: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {sorted(fields)})")
        if key == "index":
            if not isinstance(value, dict | IndexConfig):
                raise ConfigError(f"{where}: 'index' must be a table")
            value = value if isinstance(value, IndexConfig) else _coerce(
                IndexConfig, value, f"{where} [index]")
        elif key == "snapshot" and value is not None:
            value = Path(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def load_server_config(path: str | Path | None = None, **overrides: Any) -> ServerConfig:
    """Reads `path` (a TOML file; a [server] table or top-level keys) and applies the non-None
    overrides; `exact_threshold` and `index_kind` overrides go to the [index] table."""
    raw: dict[str, Any] = {}
    where = "server config"
    if path is not None:
        where = str(path)
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read server config: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
        raw = dict(data.get("server", data))
    index = dict(raw.pop("index", {}) or {})
    for key, target in (("exact_threshold", "exact_threshold"), ("index_kind", "kind")):
        value = overrides.pop(key, None)
        if value is not None:
            index[target] = value
    raw.update({k: v for k, v in overrides.items() if v is not None})
    raw["index"] = index
    return _coerce(ServerConfig, raw, where)
