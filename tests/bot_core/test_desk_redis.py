"""The scale-out configuration: PostgreSQL + Redis Streams bus, two workers on one database."""

from __future__ import annotations

import asyncio

from storage.bus.redis_streams import RedisStreamsBus
from tests.bot_core.test_relay_loop import doubles
from tests.conftest import DeskFactory


async def test_whole_loop_on_postgres_and_redis_streams(
    postgres_url: str, redis_prefix: tuple[str, str], make_desk: DeskFactory
) -> None:
    redis_url, prefix = redis_prefix
    bus = RedisStreamsBus(redis_url, prefix=prefix, partitions=8)
    desk = await make_desk(postgres_url, redis=redis_url, bus=bus)
    channel, workspace = doubles(desk)

    async def customer(n: int) -> None:
        for i in range(5):
            await channel.customer_writes(f"r{n}", f"r{n} says {i}")

    await asyncio.gather(*(customer(n) for n in range(20)))
    await workspace.posts.wait_for(
        lambda items: sum(p.kind == "customer_message" for _, p in items) == 100, 60
    )
    for n in range(20):
        assert workspace.texts(workspace.room_of(f"r{n}").room_id, "customer_message") == [
            f"r{n} says {i}" for i in range(5)
        ]
    room_id = workspace.room_of("r0").room_id
    await workspace.agent_writes(room_id, "answer from the agent")
    await channel.sent.wait_for(lambda items: [d.text for d in items] == ["answer from the agent"])
    assert await bus.wait_idle(10)
    assert await bus.pending() == 0


async def test_a_burst_of_concurrent_webhooks_waits_for_connections_instead_of_failing(
    postgres_url: str, redis_prefix: tuple[str, str], make_desk: DeskFactory
) -> None:
    redis_url, prefix = redis_prefix
    desk = await make_desk(postgres_url, redis=redis_url, bus=RedisStreamsBus(redis_url, prefix=prefix))
    channel, workspace = doubles(desk)
    # 300 webhooks at once: more than redis-py's default pool would hand out
    await asyncio.gather(*(channel.customer_writes(f"b{n}", f"burst {n}") for n in range(300)))
    await workspace.posts.wait_for(
        lambda items: sum(p.kind == "customer_message" for _, p in items) == 300, 120
    )
