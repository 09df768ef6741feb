"""Rate limits that every worker shares: token buckets in memory (one process) or in Redis (all workers).

A bucket holds up to ``per_minute`` tokens (also the burst size) and refills continuously at
``per_minute`` a minute; a request takes one token or is told how many seconds until the next one.
:class:`MemoryRateLimits` keeps the buckets in this process, :class:`RedisRateLimits` in Redis, where
one small script takes the token atomically with the server's clock, so N workers together allow the
rate once, not N times. Buckets are named (say ``web:messages``) and keyed (say by visitor).

:meth:`RateLimits.pace` spaces events out instead of counting them: each call reserves the next slot at
least ``interval`` seconds after the previous reservation of its key and says how long to wait for it
(a platform's per-number throughput, WhatsApp's pair rate), across every worker in Redis.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol, cast

from storage.redis_client import connect

SECONDS_PER_MINUTE = 60.0


class RateLimits(Protocol):
    """Named token buckets per key."""

    async def start(self) -> None:
        """Connect (before the first :meth:`take`)."""
        ...

    async def stop(self) -> None:
        """Disconnect."""
        ...

    async def take(self, bucket: str, key: str, per_minute: int) -> float:
        """Take one token from ``key``'s bucket: 0.0 when allowed, else the seconds until one is free."""
        ...

    async def pace(self, bucket: str, key: str, interval: float) -> float:
        """Reserve the next slot of ``key``: no sooner than ``interval`` seconds after the slot reserved
        before it. Returns the seconds to wait until the reserved slot (0.0: go now). A reservation is
        kept even if the caller fails; a caller that sleeps the wait and then acts keeps the spacing."""
        ...


def _check(per_minute: int) -> None:
    if per_minute < 1:
        raise ValueError("per_minute must be at least 1")


class MemoryRateLimits:
    """:class:`RateLimits` in this process's memory, for up to ``max_keys`` keys (least recent forgotten).

    A forgotten key starts again with a full bucket: a flood stays limited, a quota would not be exact.
    """

    def __init__(self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()  # -> (tokens, at)
        self._slots: OrderedDict[tuple[str, str], float] = OrderedDict()  # -> the next free slot

    async def start(self) -> None:
        """Nothing to connect."""

    async def stop(self) -> None:
        """Forget every bucket."""
        self._buckets.clear()
        self._slots.clear()

    async def pace(self, bucket: str, key: str, interval: float) -> float:
        """Reserve ``key``'s next slot, ``interval`` seconds after the previous one; the seconds to wait."""
        now = self._clock()
        slot = max(now, self._slots.pop((bucket, key), now))
        self._slots[(bucket, key)] = slot + max(0.0, interval)
        while len(self._slots) > self._max_keys:
            self._slots.popitem(last=False)
        return slot - now

    async def take(self, bucket: str, key: str, per_minute: int) -> float:
        """Take one token from ``key``'s bucket: 0.0 when allowed, else the seconds until one is free."""
        _check(per_minute)
        rate = per_minute / SECONDS_PER_MINUTE
        now = self._clock()
        tokens, at = self._buckets.pop((bucket, key), (float(per_minute), now))
        tokens = min(float(per_minute), tokens + (now - at) * rate)
        wait = 0.0
        if tokens < 1.0:
            wait = (1.0 - tokens) / rate
        else:
            tokens -= 1.0
        self._buckets[(bucket, key)] = (tokens, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait


# KEYS[1]: the bucket's hash; ARGV[1]: per_minute. Returns the wait in seconds as a string (a Lua
# number would come back truncated to an integer). A bucket left alone for a minute is full again,
# which a missing key also means, so the key expires then.
_TAKE_SCRIPT = """
local capacity = tonumber(ARGV[1])
local rate = capacity / 60.0
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens < 1 then
  wait = (1 - tokens) / rate
else
  tokens = tokens - 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], 60000)
return tostring(wait)
"""


# KEYS[1]: the key's next free slot (server time, seconds); ARGV[1]: the interval. Returns the wait as
# a string. The key expires a second after the slot it holds has passed.
_PACE_SCRIPT = """
local interval = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local slot = tonumber(redis.call('GET', KEYS[1])) or now
if slot < now then slot = now end
local after = slot + interval
redis.call('SET', KEYS[1], tostring(after), 'PX', math.ceil((after - now) * 1000) + 1000)
return tostring(slot - now)
"""


class RedisRateLimits:
    """:class:`RateLimits` in Redis: keys ``{prefix}:rate:{bucket}:{key}`` (and ``{prefix}:pace:...`` for
    :meth:`pace`), shared by every worker.

    Each take or pace touches one key, so the keys spread over a Redis Cluster's nodes (``cluster=True``).
    """

    def __init__(self, url: str, prefix: str = "relaydesk", *, cluster: bool = False) -> None:
        self._client = connect(url, cluster=cluster)
        self._prefix = f"{prefix}:rate:"
        self._take = self._client.register_script(_TAKE_SCRIPT)
        self._pace = self._client.register_script(_PACE_SCRIPT)
        self._pace_prefix = f"{prefix}:pace:"

    async def start(self) -> None:
        """Check the connection, so a wrong URL fails at start rather than at the first request."""
        await self._client.ping()

    async def stop(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def take(self, bucket: str, key: str, per_minute: int) -> float:
        """Take one token from ``key``'s bucket: 0.0 when allowed, else the seconds until one is free."""
        _check(per_minute)
        wait = await self._take(keys=[f"{self._prefix}{bucket}:{key}"], args=[per_minute])
        return float(cast(str, wait))

    async def pace(self, bucket: str, key: str, interval: float) -> float:
        """Reserve ``key``'s next slot (``{prefix}:pace:{bucket}:{key}``), shared by every worker; the
        seconds to wait for it."""
        wait = await self._pace(keys=[f"{self._pace_prefix}{bucket}:{key}"], args=[max(0.0, interval)])
        return float(cast(str, wait))


__all__ = ["MemoryRateLimits", "RateLimits", "RedisRateLimits"]
