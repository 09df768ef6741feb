"""Per-key rate limits for the public widget endpoints (token buckets, in memory, per worker).

The widget's endpoints are open to the internet: without a limit, one script could fill the agents'
rooms or the upload directory. Each key (a visitor, or an address creating sessions) has a bucket of
``per_minute`` tokens that refills continuously; a request takes one or is refused with the seconds
until the next token. Limits are per worker process, so with N workers a key may get up to N times
the rate: enough to stop floods, not an exact quota.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimited(Exception):
    """A request over the limit; ``retry_after`` is how many seconds until one is allowed again."""

    def __init__(self, what: str, retry_after: float) -> None:
        self.retry_after = max(1, round(retry_after + 0.5))
        super().__init__(f"{what}: please wait {self.retry_after} s.")


class RateLimiter:
    """Token buckets of ``per_minute`` tokens (also the burst size) for up to ``max_keys`` keys."""

    def __init__(
        self, per_minute: int, *, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def take(self, key: str, what: str) -> None:
        """Take one token for ``key``, or raise :class:`RateLimited` saying ``what`` is too fast."""
        now = self._clock()
        tokens, at = self._buckets.pop(key, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - at) * self._rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            raise RateLimited(what, (1.0 - tokens) / self._rate)
        self._buckets[key] = (tokens - 1.0, now)
        while len(self._buckets) > self._max_keys:  # the least recently seen keys go first
            self._buckets.popitem(last=False)
