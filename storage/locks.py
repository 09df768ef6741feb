"""Locks every worker of a desk shares, held in the database: a short critical section of a plugin (the
handoff plugin's hand-out) runs in one task of one worker at a time.

On PostgreSQL a lock is a session-level advisory lock (``pg_try_advisory_lock`` on a 64-bit key derived
from the name) held on a pooled connection for the section's length. A waiter tries again after a short,
growing pause and holds no connection meanwhile, so waiters never starve the holder of the pool's few
connections. A worker that dies while holding one loses its session, and PostgreSQL releases the lock;
a connection returned to the pool is reset by asyncpg (``pg_advisory_unlock_all``), so no lock outlives
its section even if the unlock itself failed.

On SQLite a desk is one process (several desks on one file need PostgreSQL, like the Redis bus), so
the lock is an ``asyncio.Lock`` per name and event loop in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import weakref
from collections.abc import AsyncIterator
from typing import Any

from tortoise import connections

_local: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


class LockTimeout(TimeoutError):
    """A database lock was not free within the time given."""


def lock_key(name: str) -> int:
    """The advisory-lock key of ``name``: a stable signed 64-bit number."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def _base_client() -> Any:
    client = connections.get("default")
    return getattr(
        client, "_parent", client
    )  # inside a transaction: the pool's client, not the transaction's


@contextlib.asynccontextmanager
async def db_lock(name: str, *, timeout: float = 60.0) -> AsyncIterator[None]:
    """Hold the lock ``name`` (shared by every worker on this database) while the block runs.

    Raises :class:`LockTimeout` when it was not free within ``timeout`` seconds. Not re-entrant: a task
    holding ``name`` must not ask for it again.
    """
    client = _base_client()
    if client.capabilities.dialect != "postgres":
        locks = _local.setdefault(asyncio.get_running_loop(), {})
        lock = locks.setdefault(name, asyncio.Lock())
        try:
            await asyncio.wait_for(lock.acquire(), timeout)
        except TimeoutError:
            raise LockTimeout(f"lock {name!r} not free within {timeout:g} s") from None
        try:
            yield
        finally:
            lock.release()
        return
    key = lock_key(name)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pause = 0.005
    while True:
        wrapper = client.acquire_connection()
        conn = await wrapper.__aenter__()
        try:
            got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", key)
        except BaseException:
            await wrapper.__aexit__(None, None, None)
            raise
        if got:
            break
        await wrapper.__aexit__(None, None, None)
        if loop.time() + pause > deadline:
            raise LockTimeout(f"lock {name!r} not free within {timeout:g} s")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.1)
    try:
        yield
    finally:
        try:
            # a failure means the session is gone (the lock with it); the pool's reset unlocks it otherwise
            with contextlib.suppress(Exception):
                await conn.execute("SELECT pg_advisory_unlock($1)", key)
        finally:
            await wrapper.__aexit__(None, None, None)
