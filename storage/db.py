"""Database connection and migrations: SQLite by default, PostgreSQL through ``DATABASE_URL``."""

from __future__ import annotations

import os
from typing import Any

from tortoise import Tortoise, connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.backends.base.executor import EXECUTOR_CACHE

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
        # asyncpg is the production driver; tortoise names its scheme asyncpg://
        connection = "asyncpg://" + url.split("://", 1)[1]
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
    if resolved.startswith("sqlite"):
        conn = connections.get("default")
        # WAL lets readers run beside the writer; NORMAL sync is crash-safe in WAL mode. No busy
        # timeout: a locked statement is retried without blocking the loop (storage.sqlite_inline).
        await conn.execute_script(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=0;"
        )
    return resolved


async def close_db() -> None:
    """Close every connection opened by :func:`init_db` and forget the models' bindings.

    Forgetting the bindings lets one process open another database afterwards (tests switch
    between SQLite and PostgreSQL; a model keeps the first dialect's queries otherwise).
    """
    # Tortoise keeps connections per context (a ContextVar): close_connections() only sees the calling
    # task's. Close the ones init_db opened explicitly, so a desk stopped from another task (a test's
    # fixture teardown, a signal handler) leaves no connection, and no worker thread, behind.
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
