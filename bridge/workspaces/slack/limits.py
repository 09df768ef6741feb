"""Slack's rate limits, respected per Web API method (and per channel for ``chat.postMessage``).

Every call takes a slot from its method's schedule first (GCRA: ``per_minute`` on average, ``burst`` at
once), so a burst of work is spread at the rate the tier allows instead of running into 429s. A slot
within ``max_wait`` seconds is waited for, and so is any while fewer than ``max_waiters`` calls wait for
the method (a queue long enough to keep a slow tier busy); beyond both, it raises :class:`RetryAfter`, so
the outbox puts the row back and its concurrency is not held by sleeping calls. Each call sent back gets
a turn of its own (one interval after the last turn given), so a backlog of hundreds returns spread out. A 429 anyway (another app on the same token,
a tier lower than configured) blocks the method (or the channel) for the ``Retry-After`` it named, and
raises :class:`RetryAfter` with it. Errors become the outbox's: ``ratelimited`` → RetryAfter; network
errors, 5xx and ``fatal_error`` / ``internal_error`` → TemporaryFailure; anything else Slack refused →
Undeliverable (``is_archived`` and a few others are handled by the caller first).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError

from bot_core.api import RetryAfter, TemporaryFailure, Undeliverable

T = TypeVar("T")

# Slack's published tiers, calls per minute (Tier 2: 20, Tier 3: 50, Tier 4: 100) and the bursts it allows
TIERS: dict[str, tuple[float, int]] = {
    "auth.test": (100, 10),
    "chat.postMessage": (600, 30),
    "chat.update": (50, 5),
    "chat.delete": (50, 5),
    "chat.postEphemeral": (100, 10),
    "conversations.create": (20, 3),
    "conversations.invite": (50, 5),
    "conversations.archive": (20, 3),
    "conversations.unarchive": (20, 3),
    "conversations.info": (100, 10),
    "conversations.join": (50, 5),
    "users.info": (100, 10),
    "users.getPresence": (50, 5),
    "usergroups.users.list": (20, 3),
    "files.getUploadURLExternal": (20, 3),
    "files.completeUploadExternal": (20, 3),
    "views.open": (100, 10),
}
POST_PER_CHANNEL = (60.0, 3)  # chat.postMessage: about one a second per channel, short bursts allowed
TEMPORARY_ERRORS = frozenset({"fatal_error", "internal_error", "service_unavailable", "request_timeout"})


@dataclass
class _Schedule:
    """One method's (or channel's) pace: GCRA's theoretical arrival time, a block after a 429, and a lock
    so that calls leave one after the other at the times they really leave (a busy event loop waking two
    sleepers at once must not send them together)."""

    interval: float
    tolerance: float
    tat: float = 0.0
    blocked_until: float = 0.0
    waiting: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def next_slot(self, now: float) -> float:
        """The earliest time a call may go out."""
        return max(now, self.tat - self.tolerance, self.blocked_until)

    def expected_wait(self, now: float) -> float:
        """How long a call asking now would wait, counting the calls already waiting."""
        return self.next_slot(now) - now + self.waiting * self.interval

    async def pace(self, clock: Callable[[], float]) -> None:
        """Wait for a slot, then record the call as leaving now."""
        self.waiting += 1
        try:
            async with self.lock:
                while True:
                    now = clock()
                    slot = self.next_slot(now)
                    if slot <= now:
                        self.tat = max(self.tat, now) + self.interval
                        return
                    await asyncio.sleep(slot - now)
        finally:
            self.waiting -= 1


class MethodLimits:
    """Per-method (and per-channel) schedules of one Slack workspace; ``call`` runs a Web API call under them."""

    def __init__(
        self,
        per_minute: Mapping[str, float] | None = None,
        *,
        post_per_channel: float | None = None,
        max_wait: float = 1.0,
        max_waiters: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tiers = dict(TIERS)
        for method, rate in (per_minute or {}).items():
            self._tiers[method] = (rate, self._tiers.get(method, (rate, 1))[1])
        self._per_channel = (post_per_channel or POST_PER_CHANNEL[0], POST_PER_CHANNEL[1])
        self._schedules: dict[str, _Schedule] = {}
        self._promised: dict[str, float] = {}  # per method: the latest turn given to a call sent back
        self.max_wait = max_wait
        self.max_waiters = max_waiters
        self._clock = clock
        self.retry_afters: dict[str, int] = {}  # 429s seen per method (metrics, tests)

    def _schedule(self, key: str, rate: float, burst: int) -> _Schedule:
        schedule = self._schedules.get(key)
        if schedule is None:
            interval = 60.0 / rate
            # one call of the burst is kept in hand: requests that reach Slack a little out of step
            # (one delayed on the way, the next on time) still find a token there
            schedule = self._schedules[key] = _Schedule(interval, max(0, burst - 2) * interval)
        return schedule

    def _keys(self, method: str, channel: str | None) -> list[_Schedule]:
        rate, burst = self._tiers.get(method, (50.0, 5))
        found = [self._schedule(method, rate, burst)]
        if method == "chat.postMessage" and channel:
            found.append(self._schedule(f"{method}:{channel}", *self._per_channel))
        return found

    async def slot(self, method: str, channel: str | None = None) -> None:
        """Wait for a slot of ``method`` (and of ``channel`` for posts), or raise RetryAfter if it is far."""
        now = self._clock()
        schedules = self._keys(method, channel)
        wait = max(s.expected_wait(now) for s in schedules)
        if wait > self.max_wait and max(s.waiting for s in schedules) >= self.max_waiters:
            # Each call sent back gets its own later turn (one interval after the last one promised),
            # so a backlog of hundreds comes back spread out, about once each, instead of all of it
            # asking again every time the queue drains; it comes back while the queue still holds
            # half its length, so the method never idles.
            lead = self.max_waiters * max(s.interval for s in schedules) / 2
            turn = max(self._promised.get(method, 0.0), now + wait) + max(s.interval for s in schedules)
            self._promised[method] = turn
            raise RetryAfter(max(turn - now - lead, wait), f"slack {method} rate limit")
        for schedule in schedules:  # always in the same order (method, then channel): no deadlock
            await schedule.pace(self._clock)

    def blocked(self, method: str, channel: str | None, seconds: float) -> None:
        """Slack answered 429 with ``Retry-After: seconds``: no call of ``method`` (on ``channel``) before."""
        until = self._clock() + seconds
        self.retry_afters[method] = self.retry_afters.get(method, 0) + 1
        schedules = self._keys(method, channel)
        target = (
            schedules[-1] if channel and len(schedules) > 1 and method == "chat.postMessage" else schedules[0]
        )
        target.blocked_until = max(target.blocked_until, until)

    async def call(self, method: str, fn: Callable[[], Awaitable[T]], *, channel: str | None = None) -> T:
        """Run one Web API call under the limits; Slack's errors become the outbox's.

        A 429 whose ``Retry-After`` is within ``max_wait`` is waited out here and the call made again
        (twice at most); a longer one goes back to the outbox as :class:`RetryAfter`.
        """
        for attempt in range(3):
            await self.slot(method, channel)
            try:
                return await fn()
            except SlackApiError as exc:
                error = self.translate(method, channel, exc)
                if isinstance(error, RetryAfter) and error.seconds <= self.max_wait and attempt < 2:
                    continue
                raise error from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise TemporaryFailure(f"slack {method}: {type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")

    def translate(self, method: str, channel: str | None, exc: SlackApiError) -> Exception:
        """The outbox error for a Slack error answer (a 429 also blocks the method)."""
        response = exc.response
        status = response.status_code
        error = str(response.get("error", "")) if isinstance(response.data, dict) else ""
        if status == 429 or error == "ratelimited":
            try:
                seconds = float(response.headers.get("Retry-After", "1"))
            except (TypeError, ValueError):
                seconds = 1.0
            self.blocked(method, channel, seconds)
            return RetryAfter(seconds, f"slack {method} answered 429")
        if status >= 500 or error in TEMPORARY_ERRORS:
            return TemporaryFailure(f"slack {method}: HTTP {status} {error}".rstrip())
        if error in ("invalid_auth", "not_authed", "account_inactive", "token_revoked", "missing_scope"):
            # the app's setup, not this message: retried until someone fixes it (within the retry window)
            return TemporaryFailure(f"slack {method}: {error} (check the app's token and scopes)")
        return SlackError(method, error or f"HTTP {status}")


class SlackError(Undeliverable):
    """Slack refused a call for good (``channel_not_found``, ``is_archived``...): ``error`` is its code."""

    def __init__(self, method: str, error: str) -> None:
        super().__init__(f"slack {method}: {error}")
        self.method = method
        self.error = error
