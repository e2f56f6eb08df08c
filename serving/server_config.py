"""ServerConfig: every knob of the serving tier in one typed section (features.config), loadable
from TOML (a [server] table or top-level keys, plus an [index] table) with CLI overrides applied
last. A wrong type or range is a ConfigError naming the file, key and value."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import Field, model_validator

from plexrec.features.config import Section, load_toml, parse_section
from plexrec.features.errors import ConfigError
from plexrec.serving.index import IndexConfig

Positive = Annotated[int, Field(ge=1)]
Seconds = Annotated[float, Field(gt=0)]


class ServerConfig(Section):
    """Limits are enforced per request (INVALID_ARGUMENT beyond them); `redis_url=None` serves
    from the local snapshot only; `prefer_snapshot=True` reads vectors of versions on local disk
    from the memory map first (Redis then only serves versions this server does not hold)."""

    snapshot: Annotated[Path, Field(strict=False)] | None = None
    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    redis_url: str | None = None
    namespace: str = "default"
    index: IndexConfig = IndexConfig()
    max_ids: Positive = 10_000
    max_k: Positive = 1_000
    cache_ttl_s: Seconds = 3600.0
    cache_ttl_jitter_s: float = Field(600.0, ge=0)
    poll_interval_s: Seconds = 2.0
    redis_timeout_s: Seconds = 0.25
    breaker_cooldown_s: Seconds = 1.0
    prefer_snapshot: bool = False
    max_concurrent_rpcs: Positive = 512
    max_streams_per_connection: Positive = 100
    keepalive_time_s: Seconds = 60.0
    keepalive_timeout_s: Seconds = 20.0
    max_connection_idle_s: Seconds = 300.0
    max_connection_age_s: Seconds | None = None
    max_message_bytes: Positive = 64 << 20
    keep_versions: Positive = 3
    search_threads: Positive = 2
    grace_s: float = Field(5.0, ge=0)
    reflection: bool = True
    tls_cert: Annotated[Path, Field(strict=False)] | None = None
    tls_key: Annotated[Path, Field(strict=False)] | None = None
    tls_client_ca: Annotated[Path, Field(strict=False)] | None = None
    auth_tokens: list[str] = []
    auth_tokens_file: Annotated[Path, Field(strict=False)] | None = None
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    workers: Positive = 1

    secret_fields: ClassVar[frozenset[str]] = frozenset({"redis_url", "auth_tokens"})

    @model_validator(mode="after")
    def _check_tls(self) -> ServerConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key: give both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca: mutual TLS needs tls_cert and tls_key too")
        return self

    def __repr_args__(self) -> Any:
        """The Redis URL may carry a password and tokens are secrets: never print them."""
        for key, value in super().__repr_args__():
            hidden = key in self.secret_fields and value
            yield key, ("<set>" if hidden else value)

    def tokens(self) -> list[str]:
        """Every accepted bearer token: `auth_tokens` plus one per non-empty line of
        `auth_tokens_file`."""
        tokens = list(self.auth_tokens)
        if self.auth_tokens_file is not None:
            try:
                text = self.auth_tokens_file.read_text()
            except OSError as exc:
                raise ConfigError(f"auth_tokens_file: cannot read {self.auth_tokens_file}: "
                                  f"{exc.strerror}") from None
            tokens += [line.strip() for line in text.splitlines() if line.strip()]
        return tokens



def load_server_config(path: str | Path | None = None, **overrides: Any) -> ServerConfig:
    """Reads `path` (a TOML file; a [server] table or top-level keys) and applies the non-None
    overrides; `exact_threshold` and `index_kind` overrides go to the [index] table."""
    raw: dict[str, Any] = {}
    where = "server config"
    if path is not None:
        where = str(path)
        data = load_toml(path)
        raw = dict(data.get("server", data))
    index = raw.pop("index", {})
    index = dict(index) if isinstance(index, dict) else index
    for key, target in (("exact_threshold", "exact_threshold"), ("index_kind", "kind")):
        value = overrides.pop(key, None)
        if value is not None and isinstance(index, dict):
            index[target] = value
    raw.update({k: v for k, v in overrides.items() if v is not None})
    raw["index"] = index
    return parse_section(ServerConfig, raw, where)
