"""URLs lose their credentials and query strings in messages; known secrets are masked."""

from __future__ import annotations

import pytest

from plexrec.features.redact import MASK, redact, redact_url, url_secrets


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:pw@127.0.0.1:6379/0", f"redis://{MASK}@127.0.0.1:6379/0"),
    ("rediss://user:p%40ss@cache.internal/1", f"rediss://{MASK}@cache.internal/1"),
    ("http://mlflow:5000/?token=abc", "http://mlflow:5000/"),
    ("sqlite:////srv/mlflow.db", "sqlite:////srv/mlflow.db"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
])
def test_redact_url_hides_user_info_and_queries(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_masks_every_form_of_the_url_secrets() -> None:
    url = "rediss://alice:p%40ss@cache.internal/1"
    text = f"AUTH failed for alice with p@ss and p%40ss at {url}"
    masked = redact(text, url_secrets(url))
    assert "alice" not in masked and "p@ss" not in masked and "p%40ss" not in masked
    assert masked.count(MASK) == 4
