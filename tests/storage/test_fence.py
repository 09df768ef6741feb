"""Fencing (storage/fence.py): once a bus handler's lease may be another worker's, its PostgreSQL
statements stop, its open transaction is rolled back, and its entry is left for the partition's owner."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from tortoise import connections

from storage.bus import BusEntry, RedisStreamsBus
from storage.db import close_db, init_db, transaction
from storage.fence import Fence, FenceLost, fenced
from storage.models import InboundReceipt


@pytest.fixture
async def database(postgres_url: str) -> AsyncIterator[None]:
    """The tortoise connections opened on a fresh PostgreSQL database (with the fenced connection class)."""
    await init_db(postgres_url)
    try:
        yield
    finally:
        await close_db()


async def test_statements_stop_once_the_fence_lapses_and_not_after_it_is_released(database: None) -> None:
    conn = connections.get("default")
    state = {"holds": True}
    guard = Fence(lambda: state["holds"], "partition 3")
    with fenced(guard):
        await conn.execute_query("SELECT 1")
        state["holds"] = False
        with pytest.raises(FenceLost, match="partition 3"):
            await conn.execute_query("SELECT 1")
        with pytest.raises(FenceLost):
            await InboundReceipt.create(source="fence", external_id="late")
    # the work is over: what it left behind (a task started with its context, say) is not stopped
    await conn.execute_query("SELECT 1")
    assert not await InboundReceipt.exists(source="fence", external_id="late")


async def test_a_transaction_whose_fence_lapses_before_commit_is_rolled_back(database: None) -> None:
    state = {"holds": True}
    with fenced(Fence(lambda: state["holds"])), pytest.raises(FenceLost):
        async with transaction():
            await InboundReceipt.create(source="fence", external_id="in-transaction")
            state["holds"] = False  # the worker froze here; when it wakes, COMMIT is refused
    assert not await InboundReceipt.exists(source="fence", external_id="in-transaction")
    await InboundReceipt.create(source="fence", external_id="after")  # the pool's connections still work
    assert await InboundReceipt.filter(source="fence").count() == 1


async def test_a_handler_frozen_past_its_lease_writes_nothing_more_and_its_entry_is_handled_again(
    database: None, redis_prefix: tuple[str, str]
) -> None:
    url, prefix = redis_prefix
    bus = RedisStreamsBus(url, prefix=prefix, partitions=1, lease_ttl=0.6)
    outcomes: list[str] = []
    dead: list[BusEntry] = []
    done = asyncio.Event()

    async def handler(entry: BusEntry) -> None:
        await InboundReceipt.get_or_create(source="fence", external_id="before")
        if not outcomes:
            # the whole process freezes (as under SIGSTOP) past the lease's deadline: blocking is the point
            time.sleep(0.9)  # noqa: ASYNC251
        try:
            await InboundReceipt.create(source="fence", external_id="after")
        except FenceLost:
            outcomes.append("fenced")
            raise
        outcomes.append("written")
        done.set()

    async def on_dead_letter(entry: BusEntry, exc: BaseException) -> None:
        dead.append(entry)

    await bus.start(handler, on_dead_letter)
    try:
        await bus.publish("conv-frozen", {"n": 1})
        await asyncio.wait_for(done.wait(), 15)
        assert await bus.wait_idle(10)
    finally:
        await bus.stop(timeout=2)
    assert outcomes == ["fenced", "written"]  # handled again (by the partition's next owner: here, itself)
    assert dead == []  # a lapsed fence is not a failure of the entry
    assert await InboundReceipt.filter(source="fence", external_id="after").count() == 1
