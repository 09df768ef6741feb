"""Shared rate limits: a burst of ``per_minute`` requests, then one per interval; in Redis, one bucket for every worker."""

from __future__ import annotations

import asyncio

import pytest

from storage.ratelimit import MemoryRateLimits, RateLimits, RedisRateLimits


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_bucket_allows_a_burst_then_one_request_per_interval() -> None:
    clock = FakeClock()
    limits = MemoryRateLimits(clock=clock)
    for _ in range(6):  # 6 per minute: one every 10 s once the burst is used
        assert await limits.take("web:messages", "alice", 6) == 0.0
    assert await limits.take("web:messages", "alice", 6) == pytest.approx(10.0)
    assert await limits.take("web:messages", "bob", 6) == 0.0  # other keys have their own bucket
    assert await limits.take("web:sessions", "alice", 6) == 0.0  # and so do other buckets
    clock.now += 10
    assert await limits.take("web:messages", "alice", 6) == 0.0
    assert await limits.take("web:messages", "alice", 6) > 0
    clock.now += 3600  # a full bucket again, never more than the burst
    for _ in range(6):
        assert await limits.take("web:messages", "alice", 6) == 0.0
    assert await limits.take("web:messages", "alice", 6) > 0


async def test_memory_limits_forget_the_least_recent_keys_beyond_their_size() -> None:
    limits = MemoryRateLimits(max_keys=2, clock=FakeClock())
    for key in ("a", "b", "c"):  # "a" is forgotten: it starts with a full bucket again
        assert await limits.take("x", key, 1) == 0.0
    assert await limits.take("x", "a", 1) == 0.0
    assert await limits.take("x", "c", 1) > 0


async def _told_when_to_come_back_and_then_allowed(limits: RateLimits) -> None:
    await limits.start()
    try:
        for _ in range(120):
            assert await limits.take("web:messages", "alice", 120) == 0.0
        wait = await limits.take("web:messages", "alice", 120)  # two a second once the burst is used
        assert 0 < wait <= 0.5
        await asyncio.sleep(wait)  # the Retry-After the visitor was given
        assert await limits.take("web:messages", "alice", 120) == 0.0
        with pytest.raises(ValueError, match="at least 1"):
            await limits.take("web:messages", "alice", 0)
    finally:
        await limits.stop()


async def test_a_refused_request_is_told_when_to_come_back_in_memory() -> None:
    await _told_when_to_come_back_and_then_allowed(MemoryRateLimits())


async def test_a_refused_request_is_told_when_to_come_back_in_redis(redis_prefix: tuple[str, str]) -> None:
    url, prefix = redis_prefix
    await _told_when_to_come_back_and_then_allowed(RedisRateLimits(url, prefix=prefix))


async def test_every_worker_counts_against_the_same_redis_bucket(redis_prefix: tuple[str, str]) -> None:
    url, prefix = redis_prefix
    workers = [RedisRateLimits(url, prefix=prefix), RedisRateLimits(url, prefix=prefix)]
    for worker in workers:
        await worker.start()
    try:
        for n in range(6):  # 6 per minute in all, whichever worker serves the request
            assert await workers[n % 2].take("web:messages", "alice", 6) == 0.0
        for worker in workers:
            assert await worker.take("web:messages", "alice", 6) == pytest.approx(10.0, abs=0.5)
    finally:
        for worker in workers:
            await worker.stop()


async def _paced(limits: RateLimits, other: RateLimits) -> None:
    """Reservations one interval apart, whichever of the two asks; other keys and buckets are free."""
    waits = [await (limits if n % 2 else other).pace("wa:pair", "ana", 6.0) for n in range(3)]
    assert waits[0] == 0.0
    assert waits[1] == pytest.approx(6.0, abs=0.2) and waits[2] == pytest.approx(12.0, abs=0.2)
    assert await limits.pace("wa:pair", "ben", 6.0) == 0.0
    assert await limits.pace("wa:number", "ana", 6.0) == 0.0


async def test_pace_reserves_slots_one_interval_apart_in_memory() -> None:
    limits = MemoryRateLimits()
    await _paced(limits, limits)
    clock = [100.0]
    moved = MemoryRateLimits(clock=lambda: clock[0])
    assert await moved.pace("sms", "+1555", 1.0) == 0.0
    clock[0] += 5.0  # long after the reserved slot: free again at once, not owed
    assert await moved.pace("sms", "+1555", 1.0) == 0.0


async def test_every_worker_shares_the_redis_slots(redis_prefix: tuple[str, str]) -> None:
    url, prefix = redis_prefix
    workers = [RedisRateLimits(url, prefix=prefix), RedisRateLimits(url, prefix=prefix)]
    for worker in workers:
        await worker.start()
    try:
        await _paced(workers[0], workers[1])
    finally:
        for worker in workers:
            await worker.stop()
