"""Request pacing for remote judges (`requests_per_second`, the CLI's --judge-rps).

Retries and backoff are the openai SDK's; pacing is not something the SDK (or its HTTP client) offers, and no
rate-limiting library is among srlm's dependencies, so this stays: a one-slot scheduler (a token bucket of size
one), small enough that a dependency would cost more than it saves. Clock and sleep are injectable so tests need no
real time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """At most `per_second` request starts per second, shared by all threads: each caller takes the next slot."""

    def __init__(
        self,
        per_second: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_second is not None and per_second <= 0:
            raise ValueError(f"requests per second must be positive, got {per_second}")
        self.interval = 1.0 / per_second if per_second else 0.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot: float | None = None

    def acquire(self) -> float:
        """Block until this caller's slot; returns the seconds waited."""
        if not self.interval:
            return 0.0
        with self._lock:
            now = self._clock()
            slot = now if self._next_slot is None else max(now, self._next_slot)
            self._next_slot = slot + self.interval
        wait = slot - now
        if wait > 0:
            self._sleep(wait)
        return wait
