"""The online stores, one line each: the URL scheme of `--redis`/`redis_url` -> "module:class"
of an `OnlineStore` with a `from_url(url, namespace, *, timeout_s, ttl_s, jitter_s)`
constructor. A new online store is `serving/stores/<name>.py` plus its schemes below; the
server composes it with the local snapshot (stores.fallback.FallbackStore)."""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from plexrec.features.errors import ConfigError
from plexrec.serving.stores.base import OnlineStore

ONLINE_STORES: dict[str, str] = {
    "redis": "plexrec.serving.stores.redis:RedisStore",
    "rediss": "plexrec.serving.stores.redis:RedisStore",
    "unix": "plexrec.serving.stores.redis:RedisStore",
}


def online_store(url: str, namespace: str, *, timeout_s: float, ttl_s: float,
                 jitter_s: float) -> OnlineStore:
    """The online store for `url`, chosen by its scheme (the URL itself is never echoed: it
    may hold a password)."""
    scheme = urlsplit(url).scheme
    if scheme not in ONLINE_STORES:
        raise ConfigError(f"redis_url: unknown scheme {scheme!r} (known: "
                          f"{', '.join(ONLINE_STORES)})")
    module, _, name = ONLINE_STORES[scheme].partition(":")
    cls = getattr(importlib.import_module(module), name)
    store: OnlineStore = cls.from_url(url, namespace, timeout_s=timeout_s, ttl_s=ttl_s,
                                      jitter_s=jitter_s)
    return store
