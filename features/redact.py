"""Credentials never leave the process in a message: URLs are shown without their user info,
and any known secret is masked wherever it appears in a text."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

MASK = "***"


def redact_url(url: str) -> str:
    """`redis://user:pw@host:6379/0` -> `redis://***@host:6379/0`; query strings (which may
    carry `password=`) are dropped; a URL without either comes back unchanged. Unparseable
    input becomes the mask alone."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if parts.query:
        url = url.split("?", 1)[0]
    if "@" in parts.netloc:
        url = url.replace(parts.netloc, f"{MASK}@{parts.netloc.rsplit('@', 1)[1]}", 1)
    return url


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
    except ValueError:
        return [url]
    found = [url, parts.password or "", parts.username or ""]
    return found + [unquote(s) for s in found[1:]]
