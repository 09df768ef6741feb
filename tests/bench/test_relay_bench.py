"""Smoke tests of the core benchmark (bench/relay.py): tiny sizes on SQLite; delivery is checked, timing is not."""

from __future__ import annotations

import dataclasses

from bench.relay import (
    PassResult,
    QueryCounter,
    Services,
    customer_name,
    message_text,
    percentile,
    run_first_contacts,
    run_pass,
    run_workers,
    statement_ceiling,
)
from tests.services import require_postgres, require_redis

CUSTOMERS = 4
MESSAGES = 5


def _expected(user: str) -> list[str]:
    return [message_text(user, i) for i in range(MESSAGES)]


async def test_closed_loop_pass_delivers_every_message_once_in_order() -> None:
    result = await run_pass("sqlite", CUSTOMERS, MESSAGES, warmup=2)

    assert result.messages == CUSTOMERS * MESSAGES
    for n in range(CUSTOMERS):
        user = customer_name(n)
        assert result.rooms[user] == _expected(user)  # exactly once each, in the order written
        assert result.rooms_per_customer[user] == 1
    assert result.delivery_problems() == []
    assert len(result.latencies_ms) == result.messages
    assert len(result.followup_latencies_ms) == CUSTOMERS * (MESSAGES - 1)
    assert result.seconds > 0 and result.cpu_seconds > 0


async def test_open_loop_pass_and_query_counter() -> None:
    counter = QueryCounter()
    result = await run_pass("sqlite", CUSTOMERS, MESSAGES, rate=400.0, warmup=0, section=counter.attached)

    assert result.mode == "half" and result.target_rate == 400.0
    assert result.delivery_problems() == []
    for n in range(CUSTOMERS):
        assert result.rooms[customer_name(n)] == _expected(customer_name(n))
    # every message is at least journaled, stored and mirrored: several statements each
    assert counter.total >= 3 * result.messages
    assert counter.by_kind["INSERT message"] == result.messages
    assert "per message" in counter.report(result.messages)


async def test_first_contact_pass_then_follow_ups_with_every_conversation_open() -> None:
    result = await run_first_contacts("sqlite", CUSTOMERS, warmup=1)

    assert (result.first.messages, result.follow.messages) == (CUSTOMERS, CUSTOMERS)
    assert result.first.delivery_problems() == [] and result.follow.delivery_problems() == []
    for n in range(CUSTOMERS):  # the follow-up went to the room the first message opened
        user = customer_name(n)
        assert result.follow.rooms[user] == [message_text(user, 0), message_text(user, 1)]
    assert (result.open_conversations, result.rooms) == (CUSTOMERS + 1, CUSTOMERS + 1)  # (and the warm-up's)
    assert result.ratio > 0 and 0 < result.rss_mb <= result.peak_rss_mb


async def test_two_worker_processes_deliver_every_message_once_in_order() -> None:
    services = Services(require_postgres(), require_redis())
    result = await run_workers(2, CUSTOMERS, MESSAGES, services=services)

    assert result.problems == ()
    assert len(result.latencies_ms) == result.messages == CUSTOMERS * MESSAGES
    assert result.seconds > 0 and result.cpu_seconds > 0
    assert 0 < result.machine_busy <= 1  # how busy the cores were while the load ran


async def test_the_postgresql_ceiling_is_measured_on_a_throwaway_database() -> None:
    import asyncpg

    services = Services(require_postgres(), require_redis())
    ceiling = await statement_ceiling(services, statements=200, tasks=10)

    assert ceiling.pooled > 0 and ceiling.pinned > 0 and 0 < ceiling.machine_busy <= 1
    admin = await asyncpg.connect(services.postgres_url)
    try:  # dropped afterwards
        left = await admin.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'relaydesk_ceiling_%'"
        )
    finally:
        await admin.close()
    assert left == 0


def test_delivery_check_catches_reordered_duplicated_and_missing_messages() -> None:
    users = [customer_name(n) for n in range(3)]
    good = PassResult(
        backend="sqlite",
        mode="max",
        customers=3,
        messages_per_customer=MESSAGES,
        seconds=1.0,
        latencies_ms=(1.0,),
        followup_latencies_ms=(1.0,),
        cpu_seconds=0.1,
        rooms={user: _expected(user) for user in users},
        rooms_per_customer=dict.fromkeys(users, 1),
    )
    assert good.delivery_problems() == []

    swapped = _expected(users[0])
    swapped[1], swapped[2] = swapped[2], swapped[1]
    doubled = [*_expected(users[1]), _expected(users[1])[-1]]
    bad = dataclasses.replace(
        good,
        rooms={users[0]: swapped, users[1]: doubled},
        rooms_per_customer={users[0]: 1, users[1]: 2},
    )
    problems = bad.delivery_problems()
    assert any(p.startswith(f"{users[0]}: room shows") for p in problems)
    assert any(p.startswith(f"{users[1]}: room shows") for p in problems)
    assert any(p.startswith(f"{users[1]}: 2 rooms") for p in problems)
    assert any(p.startswith(f"{users[2]}:") for p in problems)  # no room at all


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
