"""Credentials never leave the process in a message: URLs are shown without their user info,
and any known secret is masked wherever it appears in a text."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

MASK = "***"


def redact_url(url: str) -> str:
    """`redis://user:pw@host:6379/0` -> `redis://***@host:6379/0`; query strings (which may
    carry `password=`) are dropped. Unparseable input becomes the mask alone."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return MASK
    netloc = host if port is None else f"{host}:{port}"
    if parts.username or parts.password:
        netloc = f"{MASK}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every non-empty secret replaced by the mask, longest first."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def url_secrets(url: str) -> list[str]:
    """What `redact` must mask to hide a URL's credentials: the URL itself, its user and
    password (some drivers quote either in their errors)."""
    try:
        parts = urlsplit(url)
        return [url, parts.password or "", parts.username or ""]
    except ValueError:
        return [url]
