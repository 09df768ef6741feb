"""The bus keys of identities a worker saw lately (``CustomerKeyCache``): a follow-up is published without
a query, and a merge of customers clears every worker's cache, so a merged identity's next message goes
under the surviving customer's key."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from bot_core.contacts import CustomerKeyCache, publish_key
from bot_core.context import ActionKeys
from bot_core.desk import Desk
from bot_core.events import CustomerMessage
from bot_core.testing import MemoryChannel
from storage.bus.redis_streams import RedisStreamsBus
from storage.fanout import RedisFanout
from storage.models import Customer, Identity
from tests.conftest import DeskFactory

TWO_CHANNELS_YAML = """
plugins:
  - telegram: {use: "bot_core.testing:MemoryChannel"}
  - whatsapp: {use: "bot_core.testing:MemoryChannel"}
  - desk: {use: "bot_core.testing:MemoryWorkspace"}
"""


class FakeClock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_and_the_oldest_makes_room() -> None:
    clock = FakeClock()
    cache = CustomerKeyCache(ttl=60, max_entries=2, clock=clock)
    cache.put("tg", "1", "tg:1", cache.generation)
    assert cache.get("tg", "1") == "tg:1"
    clock.now += 61
    assert cache.get("tg", "1") is None and len(cache) == 0
    for user in ("1", "2", "3"):
        cache.put("tg", user, f"tg:{user}", cache.generation)
    assert (cache.get("tg", "1"), cache.get("tg", "2"), cache.get("tg", "3")) == (None, "tg:2", "tg:3")


def test_a_lookup_begun_before_a_merge_is_not_remembered() -> None:
    cache = CustomerKeyCache()
    begun = cache.generation  # a lookup reads the database...
    cache.clear()  # ...a merge commits meanwhile...
    cache.put("tg", "1", "tg:1", begun)  # ...its (possibly stale) answer is not kept
    assert cache.get("tg", "1") is None
    cache.put("tg", "1", "tg:1", cache.generation)
    assert cache.get("tg", "1") == "tg:1"


async def _wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def _customer_of(channel: str, user: str) -> Customer:
    identity = await Identity.get(channel=channel, external_id=user)
    return await Customer.get(id=identity.customer_id)


async def test_a_follow_up_is_keyed_from_the_cache_and_a_merge_on_another_worker_clears_it(
    postgres_url: str, redis_prefix: tuple[str, str], make_desk: DeskFactory
) -> None:
    redis_url, prefix = redis_prefix
    workers: list[Desk] = [
        await make_desk(
            postgres_url,
            TWO_CHANNELS_YAML,
            redis=redis_url,
            bus=RedisStreamsBus(redis_url, prefix=prefix),
            fanout=RedisFanout(redis_url, prefix=prefix),
        )
        for _ in range(2)
    ]
    one, two = workers
    telegram = cast(MemoryChannel, one.plugins["telegram"])
    whatsapp = cast(MemoryChannel, two.plugins["whatsapp"])
    await telegram.customer_writes("12345", "my order is late")  # the older customer
    for desk in workers:
        assert await desk.wait_settled(20)
    await whatsapp.customer_writes("+4915112345678", "it is me, on WhatsApp")  # a younger one, for now
    for desk in workers:
        assert await desk.wait_settled(20)
    older = await _customer_of("telegram", "12345")
    younger = await _customer_of("whatsapp", "+4915112345678")
    assert older.id < younger.id and older.bus_key != younger.bus_key

    follow_up = CustomerMessage(
        channel="whatsapp", external_user_id="+4915112345678", external_message_id="x"
    )
    for desk in workers:  # both workers have published (or handled) the younger customer's messages
        assert await publish_key(follow_up, desk.customer_keys) == younger.bus_key
        assert desk.customer_keys.get("whatsapp", "+4915112345678") == younger.bus_key

    await one.relay.links.merge(ActionKeys("test:link"), older.id, younger.id, reason="a test", by="test")
    # the merging worker forgot the old key at once; the other hears it through the fan-out
    assert one.customer_keys.get("whatsapp", "+4915112345678") is None
    assert await _wait_until(lambda: two.customer_keys.get("whatsapp", "+4915112345678") is None)
    for desk in workers:
        assert await publish_key(follow_up, desk.customer_keys) == older.bus_key


def test_an_unknown_identity_is_guessed_only_by_the_single_worker_and_not_once_it_brought_contacts() -> None:
    several = CustomerKeyCache()
    several.put_unknown("tg", "1", "tg:1", several.generation)
    assert several.get("tg", "1") is None  # another worker may create its customer under another key

    one = CustomerKeyCache(unknown=True)
    one.put_unknown("tg", "1", "tg:1", one.generation)
    assert one.get("tg", "1") == "tg:1"
    one.taint("tg", "1")  # a message with a verified phone: its customer may get the phone's key
    assert one.get("tg", "1") is None
    one.put_unknown("tg", "1", "tg:1", one.generation)
    assert one.get("tg", "1") is None  # no guess until one of its messages was handled
    one.put("tg", "1", "phone:+4915112345678", one.generation)  # handled: the stored key
    assert one.get("tg", "1") == "phone:+4915112345678"


async def test_the_single_worker_publishes_a_new_customers_messages_under_one_key_until_a_contact_comes(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, TWO_CHANNELS_YAML)
    first = CustomerMessage(channel="telegram", external_user_id="42", external_message_id="m1")
    assert await publish_key(first, desk.customer_keys) == "telegram:42"
    assert desk.customer_keys.get("telegram", "42") == "telegram:42"  # not stored yet: guessed
    with_phone = CustomerMessage(
        channel="telegram",
        external_user_id="42",
        external_message_id="m2",
        attributes={"phone": "+4915112345678"},
    )
    assert await publish_key(with_phone, desk.customer_keys) == "phone:+4915112345678"
    assert desk.customer_keys.get("telegram", "42") is None
    follow = CustomerMessage(channel="telegram", external_user_id="42", external_message_id="m3")
    assert await publish_key(follow, desk.customer_keys) == "telegram:42"  # (looked up: still unknown)
    assert desk.customer_keys.get("telegram", "42") is None  # and not remembered
