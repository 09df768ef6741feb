"""The scale-out configuration: PostgreSQL + Redis Streams bus (one Redis server, or a Redis Cluster)."""

from __future__ import annotations

import asyncio

from redis.asyncio.cluster import RedisCluster

from storage.bus import partition_of
from storage.bus.redis_streams import RedisStreamsBus
from storage.models import Customer
from tests.bot_core.test_relay_loop import doubles
from tests.conftest import DOUBLES_YAML, DeskFactory
from tests.redis_cluster import node_of


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


async def test_whole_loop_on_a_redis_cluster(
    postgres_url: str, redis_cluster_url: str, make_desk: DeskFactory
) -> None:
    """`storage.redis_cluster: true`: the desk's bus, fan-out and rate limits on a three-master Redis
    Cluster; customers whose partitions live on different nodes each see their messages in order."""
    yaml_text = DOUBLES_YAML + "storage: {redis_cluster: true}\n"
    desk = await make_desk(postgres_url, yaml_text, redis=redis_cluster_url)
    bus = desk.bus
    assert isinstance(bus, RedisStreamsBus)
    client = bus._client  # the client the desk chose from the configuration
    assert isinstance(client, RedisCluster)
    channel, workspace = doubles(desk)
    try:

        async def customer(n: int) -> None:
            for i in range(5):
                await channel.customer_writes(f"c{n}", f"c{n} says {i}")

        await asyncio.gather(*(customer(n) for n in range(12)))
        await workspace.posts.wait_for(
            lambda items: sum(p.kind == "customer_message" for _, p in items) == 60, 60
        )
        for n in range(12):
            assert workspace.texts(workspace.room_of(f"c{n}").room_id, "customer_message") == [
                f"c{n} says {i}" for i in range(5)
            ]
        # the customers' events went through partitions held by different nodes of the cluster
        keys = [customer.bus_key for customer in await Customer.all()]
        assert len(keys) == 12 and all(keys)
        nodes = {node_of(client, bus.stream_key(partition_of(key, bus.partitions))) for key in keys if key}
        assert len(nodes) >= 2, nodes
        room_id = workspace.room_of("c0").room_id
        await workspace.agent_writes(room_id, "answer from the agent")
        await channel.sent.wait_for(lambda items: [d.text for d in items] == ["answer from the agent"])
        assert await bus.wait_idle(10)
        assert await bus.pending() == 0
    finally:
        await desk.stop(timeout=5)
        cleanup = RedisCluster.from_url(redis_cluster_url)
        for key in bus.keys():
            await cleanup.delete(key)
        await cleanup.aclose()
