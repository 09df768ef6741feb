"""The error of a widget request over its rate limit.

The widget's endpoints are open to the internet: without a limit, one script could fill the agents'
rooms or the upload directory. Each key (a visitor, or an address creating sessions) has a token
bucket in the desk's shared rate limits (:mod:`storage.ratelimit`: in Redis when the desk has one, so
every worker counts against the same bucket); a request takes a token or is refused with the seconds
until the next one.
"""

from __future__ import annotations


class RateLimited(Exception):
    """A request over the limit; ``retry_after`` is how many seconds until one is allowed again."""

    def __init__(self, what: str, retry_after: float) -> None:
        self.retry_after = max(1, round(retry_after + 0.5))
        super().__init__(f"{what}: please wait {self.retry_after} s.")
