"""The PostgreSQL connection class (storage/pg.py): a pooled connection is reset on release only when a
statement may have changed its session, and then fully (locks released, settings back to default)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from storage.pg import FencedConnection


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A one-connection pool of fenced connections, so every acquisition gets the same session."""
    dsn = "postgresql://" + postgres_url.split("://", 1)[1]
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1, connection_class=FencedConnection)
    yield pool
    await pool.close()


async def test_a_connection_that_ran_plain_statements_goes_back_without_a_reset(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.fetch("SELECT 1")
        await conn.execute("UPDATE inbound_receipt SET processed = TRUE WHERE id = -1")
        raw = conn._con  # the connection behind the pool's proxy
        sent = raw._protocol.queries_count
    assert raw._protocol.queries_count == sent  # no reset statement went to the server
    async with pool.acquire() as again:
        assert again._con is raw


async def test_a_session_setting_is_reset_before_the_next_user(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("SET application_name = 'left-behind'")
        assert await conn.fetchval("SHOW application_name") == "left-behind"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SHOW application_name") != "left-behind"
        await conn.fetch("SELECT 1")
        raw = conn._con
        sent = raw._protocol.queries_count
    assert raw._protocol.queries_count == sent  # clean again: the next release skips the reset


async def test_an_advisory_lock_left_held_is_released_on_the_way_back_to_the_pool(
    pool: asyncpg.Pool, postgres_url: str
) -> None:
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_try_advisory_lock(4242)")
        # the section failed before its unlock: the release must not leave the lock to this session
    other = await asyncpg.connect("postgresql://" + postgres_url.split("://", 1)[1])
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock(4242)")
    finally:
        await other.close()
