"""Two workers (two desks on one PostgreSQL and one Redis bus) handing out one team's line at once: no agent
gets more than their capacity, and no waiting customer goes to two agents (the hand-out runs under a
database lock, not a lock of one process)."""

from __future__ import annotations

import asyncio
from collections import Counter

from bot_core.desk import Desk
from storage.bus.redis_streams import RedisStreamsBus
from storage.models import Conversation, ConversationLog
from tests.bot_core.test_relay_loop import doubles
from tests.conftest import DeskFactory
from tests.plugins.handoff.conftest import Clock, handoff_yaml

AGENTS = [f"@agent{n}:example.org" for n in range(6)]
CAPACITY = 2
CUSTOMERS = 20
SETTINGS = f"""
default_team: support
queue_unhandled: true
teams:
  support:
    members: [{", ".join(f'"{a}"' for a in AGENTS)}]
    capacity: {CAPACITY}
    assignment: least_busy
"""


async def settled(desks: list[Desk]) -> None:
    """Every event handled and every delivery sent, on both workers (twice: one's work feeds the other)."""
    for _ in range(2):
        for desk in desks:
            assert await desk.wait_settled(30)


async def test_two_workers_handing_out_at_once_respect_capacity_and_give_each_customer_once(
    postgres_url: str, redis_prefix: tuple[str, str], make_desk: DeskFactory
) -> None:
    redis_url, prefix = redis_prefix
    clock = Clock()
    desks = [
        await make_desk(
            postgres_url,
            handoff_yaml(SETTINGS, faq=False),
            redis=redis_url,
            bus=RedisStreamsBus(redis_url, prefix=prefix, partitions=8),
            scheduler_clock=clock,
            scheduler_poll=3600,
        )
        for _ in range(2)
    ]
    channel, _ = doubles(desks[0])
    for n in range(CUSTOMERS):  # everyone waits: no agent is available yet
        await channel.customer_writes(f"c{n}", "hello, a person please")
    await settled(desks)
    assert await Conversation.filter(state="queued").count() == CUSTOMERS

    # every agent says !available at once, half of them through each worker's workspace, each in a
    # customer's room of its own (rooms are spread over partitions: both workers hand out at once)
    rooms = [(desk, room_id) for desk in desks for room_id in doubles(desk)[1].rooms]
    assert len(rooms) >= len(AGENTS)
    await asyncio.gather(
        *(
            doubles(desk)[1].agent_writes(room_id, "!available", agent=agent)
            for agent, (desk, room_id) in zip(AGENTS, rooms, strict=False)
        )
    )
    await settled(desks)

    assigned = await Conversation.filter(state="assigned").prefetch_related("assignee")
    per_agent = Counter(c.assignee.external_id for c in assigned if c.assignee is not None)
    assert max(per_agent.values()) <= CAPACITY, per_agent
    assert len(assigned) == len(AGENTS) * CAPACITY  # every slot filled
    assert await Conversation.filter(state="queued").count() == CUSTOMERS - len(AGENTS) * CAPACITY
    handed = Counter(
        row.conversation_id for row in await ConversationLog.filter(what="assigned").only("conversation_id")
    )
    assert set(handed.values()) == {1}, handed  # no conversation was handed out twice
