"""Fan-out: what one process publishes, every subscribed process hears (Redis pub/sub; in-process double)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from storage.fanout import Fanout, LocalFanout, RedisFanout


class Heard:
    """A subscriber that records messages and lets a test wait for them."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self._changed.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.messages


@pytest.fixture(params=["redis", "redis-cluster"])
def fanout_redis(request: pytest.FixtureRequest, redis_prefix: tuple[str, str]) -> tuple[str, str, bool]:
    """URL, prefix and whether it is a cluster: the test Redis, or a node of the session's Redis Cluster."""
    url, prefix = redis_prefix
    if request.param == "redis-cluster":
        return request.getfixturevalue("redis_cluster_url"), prefix, True
    return url, prefix, False


@pytest.fixture
async def two_workers(fanout_redis: tuple[str, str, bool]) -> AsyncIterator[tuple[RedisFanout, RedisFanout]]:
    url, prefix, cluster = fanout_redis
    # on a cluster each worker's client subscribes on whichever node it picks: a PUBLISH reaches every node
    one, two = RedisFanout(url, prefix, cluster=cluster), RedisFanout(url, prefix, cluster=cluster)
    await one.start()
    await two.start()
    yield one, two
    await one.stop()
    await two.stop()


async def test_a_message_reaches_every_worker_in_order(two_workers: tuple[RedisFanout, RedisFanout]) -> None:
    one, two = two_workers
    here, there, elsewhere = Heard(), Heard(), Heard()
    await one.subscribe("web:chat", here)
    await two.subscribe("web:chat", there)
    await two.subscribe("web:other", elsewhere)

    for n in range(5):
        await two.publish("web:chat", {"subject": "v-1", "n": n, "text": "你好"})
    expected = [{"subject": "v-1", "n": n, "text": "你好"} for n in range(5)]
    assert await here.wait_for(5) == expected  # another worker's subscriber
    assert await there.wait_for(5) == expected  # the publisher's own
    assert elsewhere.messages == []  # other topics hear nothing


async def test_after_unsubscribing_nothing_more_arrives(two_workers: tuple[RedisFanout, RedisFanout]) -> None:
    one, two = two_workers
    stays, leaves = Heard(), Heard()
    await one.subscribe("t", stays)
    off = await one.subscribe("t", leaves)
    await two.publish("t", {"n": 1})
    await stays.wait_for(1)
    await leaves.wait_for(1)
    off()
    await two.publish("t", {"n": 2})
    assert await stays.wait_for(2) == [{"n": 1}, {"n": 2}]
    assert leaves.messages == [{"n": 1}]


async def test_garbage_on_the_channel_is_skipped(
    two_workers: tuple[RedisFanout, RedisFanout], fanout_redis: tuple[str, str, bool]
) -> None:
    one, _two = two_workers
    url, prefix, _cluster = fanout_redis
    heard = Heard()
    await one.subscribe("t", heard)
    client = aioredis.from_url(url)
    try:
        await client.publish(f"{prefix}:fanout:t", b"not json")
    finally:
        await client.aclose()
    await one.publish("t", {"after": "garbage"})
    assert await heard.wait_for(1) == [{"after": "garbage"}]


async def test_the_in_process_fanout_keeps_the_same_contract() -> None:
    fanout: Fanout = LocalFanout()
    await fanout.start()
    heard, failing = Heard(), Heard()

    def broken(_message: dict[str, Any]) -> None:
        raise RuntimeError("a subscriber's bug")

    await fanout.subscribe("t", broken)  # does not keep the others from hearing
    off = await fanout.subscribe("t", heard)
    await fanout.subscribe("u", failing)
    await fanout.publish("t", {"n": 1})
    assert heard.messages == [{"n": 1}]  # delivered before publish returned
    off()
    await fanout.publish("t", {"n": 2})
    assert heard.messages == [{"n": 1}] and failing.messages == []
    await fanout.stop()
