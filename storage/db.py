"""Database connection and migrations: SQLite by default, PostgreSQL through ``DATABASE_URL``."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
from collections.abc import AsyncIterator
from typing import Any

from tortoise import Tortoise, connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.exceptions import DBConnectionError
from tortoise.transactions import in_transaction

DEFAULT_DATABASE_URL = "sqlite://relaydesk.db"
MODELS_MODULE = "storage.models"
MIGRATIONS_MODULE = "storage.migrations"
SQLITE_ENGINE = "storage.sqlite_inline"


def database_url(explicit: str | None = None) -> str:
    """The database to use: the explicit URL, else ``DATABASE_URL``, else a SQLite file in the working dir."""
    return explicit or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def tortoise_config(url: str) -> dict[str, Any]:
    """The tortoise-orm config dict for one database URL."""
    connection: str | dict[str, Any] = url
    if url.startswith("postgres://") or url.startswith("postgresql://"):
        from storage.pg import FencedConnection  # asyncpg is imported for PostgreSQL only

        # asyncpg is the production driver; tortoise names its scheme asyncpg://
        connection = expand_db_url("asyncpg://" + url.split("://", 1)[1])
        # a bus handler's statements stop once its partition may be another worker's (storage.fence)
        connection["credentials"]["connection_class"] = FencedConnection
    elif url.startswith("sqlite://"):
        connection = expand_db_url(url)
        connection["engine"] = SQLITE_ENGINE  # statements run on the loop's thread: see storage.sqlite_inline
    return {
        "connections": {"default": connection},
        "apps": {
            "models": {
                "models": [MODELS_MODULE],
                "default_connection": "default",
                "migrations": MIGRATIONS_MODULE,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


_opened: list[BaseDBAsyncClient] = []  # connections init_db opened and close_db has not closed yet


async def init_db(url: str | None = None) -> str:
    """Open the connection pool for ``url`` (the schema must already be migrated). Returns the URL used."""
    resolved = database_url(url)
    await Tortoise.init(config=tortoise_config(resolved))
    _opened.append(connections.get("default"))
    global _base_context
    _base_context = contextvars.copy_context()
    if resolved.startswith("sqlite"):
        conn = connections.get("default")
        # WAL lets readers run beside the writer; NORMAL sync is crash-safe in WAL mode. No busy
        # timeout: a locked statement is retried without blocking the loop (storage.sqlite_inline).
        await conn.execute_script(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=0;"
        )
    return resolved


_base_context: contextvars.Context | None = None


def fresh_context() -> contextvars.Context:
    """A context for a new task: the database's connections as :func:`init_db` opened them, and no
    transaction, whatever task creates it.

    Tortoise keeps the current transaction in a context variable, and a task inherits its creator's
    context: a task started inside a transaction would run its queries on that transaction's connection.
    And tortoise 1.1 leaves the variable pointing at the transaction's (released) connection when the
    connection dies under the transaction (a PostgreSQL restart), so every later query of that task, and
    of every task it starts, fails with "connection has been released back to the pool". Long-lived
    loops therefore start their per-event tasks in a fresh context: a poisoned one dies with its task.
    """
    if _base_context is None:
        return contextvars.copy_context()
    return _base_context.run(contextvars.copy_context)


async def database_answers(timeout: float = 5.0) -> bool:
    """Whether the database answers a query now (within ``timeout`` s); True when none is open."""
    if not Tortoise._inited:
        return True
    try:
        await asyncio.wait_for(connections.get("default").execute_query("SELECT 1"), timeout)
    except Exception:
        return False
    return True


def lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the database connection failing, not the query."""
    import asyncpg  # only PostgreSQL loses connections this way; imported here to keep SQLite setups lean

    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, asyncpg.InterfaceError | asyncpg.PostgresConnectionError | DBConnectionError):
            return True
        if isinstance(seen, asyncpg.CannotConnectNowError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.asynccontextmanager
async def transaction(connection_name: str = "default") -> AsyncIterator[BaseDBAsyncClient]:
    """tortoise's ``in_transaction()``, safe when the database goes away under it.

    tortoise 1.1 (asyncpg) acquires a pooled connection and makes it the task's current one before it
    sends BEGIN; when BEGIN fails (PostgreSQL restarting) it neither releases the connection nor
    resets the task's current connection, and when releasing a broken connection fails at the end it
    skips the reset too. A failed BEGIN leaks one of the pool's few connections, and either failure
    leaves the task on a released connection. This wrapper undoes both.
    """
    context = in_transaction(connection_name)
    try:
        client = await context.__aenter__()
    except BaseException:
        await _undo_transaction(context)
        raise
    try:
        yield client
    except BaseException as exc:
        try:
            await context.__aexit__(type(exc), exc, exc.__traceback__)
        finally:
            _reset_current(context)
        raise
    else:
        try:
            await context.__aexit__(None, None, None)
        finally:
            _reset_current(context)


def _reset_current(context: Any) -> None:
    """Make the task's current connection what it was before the transaction (if tortoise did not)."""
    token = getattr(context, "token", None)
    if token is not None and not getattr(token, "_used", True):
        connections.reset(token)


async def _undo_transaction(context: Any) -> None:
    """After a failed start: release the connection tortoise acquired, reset the current connection."""
    _reset_current(context)
    client = getattr(context, "client", None)
    connection = getattr(client, "_connection", None)
    pool = getattr(getattr(client, "_parent", None), "_pool", None)
    if client is not None and connection is not None and pool is not None:
        with contextlib.suppress(Exception):
            await pool.release(connection)
        client._connection = None


async def close_db() -> None:
    """Close every connection opened by :func:`init_db` and forget the models' bindings.

    Forgetting the bindings lets one process open another database afterwards (tests switch
    between SQLite and PostgreSQL; a model keeps the first dialect's queries otherwise).
    """
    # Tortoise keeps connections per context (a ContextVar): close_connections() only sees the calling
    # task's. Close the ones init_db opened explicitly, so a desk stopped from another task (a test's
    # fixture teardown, a signal handler) leaves no connection, and no worker thread, behind.
    global _base_context
    _base_context = None
    while _opened:
        await _opened.pop().close()
    await Tortoise.close_connections()
    await Tortoise._reset_apps()
    # tortoise caches INSERT statements per connection *name*, across dialects
    EXECUTOR_CACHE.clear()


async def migrate(url: str | None = None) -> None:
    """Apply every committed migration to the database at ``url``."""
    from tortoise.migrations.api import migrate as tortoise_migrate

    try:
        await tortoise_migrate(config=tortoise_config(database_url(url)))
    finally:
        await close_db()


# For tortoise's own CLI (`tortoise -c storage.db.TORTOISE_ORM makemigrations`): how migrations are generated.
TORTOISE_ORM = tortoise_config(DEFAULT_DATABASE_URL)
