"""A circuit breaker for the online store: after a failure, look-ups skip it for a cooldown
instead of paying a timeout each."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


class CircuitBreaker:
    """Open for `cooldown_s` after a failure; the next call after that tries the store again."""

    def __init__(self, cooldown_s: float) -> None:
        self.cooldown_s = cooldown_s
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def trip(self, exc: BaseException) -> None:
        if not self.is_open:
            log.warning("online store unavailable (%s: %s); serving from the local snapshot "
                        "for %.1fs", type(exc).__name__, exc, self.cooldown_s)
        self._open_until = time.monotonic() + self.cooldown_s
