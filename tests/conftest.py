"""Shared fixtures: a real desk on a fresh, migrated database (SQLite, or PostgreSQL where asked)."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import asyncpg
import pytest
import redis.asyncio as aioredis

from bot_core.config import DeskConfig, parse_config
from bot_core.desk import Desk
from bot_core.outbox import OutboxSettings
from storage.db import migrate
from tests.services import require_postgres, require_redis

# the session-wide Synapse fixture, the agent account on it, the session-wide headless Chromium and Redis Cluster
pytest_plugins = [
    "tests.matrix_server",
    "tests.bridge.workspaces.matrix_agent",
    "tests.browser",
    "tests.redis_cluster",
]

# a failing delivery is given up five seconds after it was written (no delay notice before that):
# tests about outages set their own window and notice delay
FAST_OUTBOX = OutboxSettings(
    base_backoff=0.02, max_backoff=0.2, poll_interval=0.2, retry_window=5.0, notice_after=30.0
)

DOUBLES_YAML = """
plugins:
  - customers: {use: "bot_core.testing:MemoryChannel"}
  - desk: {use: "bot_core.testing:MemoryWorkspace"}
"""


async def fresh_postgres_schema(template: str = "") -> str:
    """A new database URL on the test PostgreSQL (a fresh database per call): empty, or a copy of the
    database named ``template`` when given."""
    base = require_postgres()
    name = f"relaydesk_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(base)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    finally:
        await admin.close()
    return base.rsplit("/", 1)[0] + "/" + name


async def drop_postgres_database(url: str) -> None:
    """Drop a database made by :func:`fresh_postgres_schema`."""
    name = url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(require_postgres())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def copy_sqlite(source: Path, target: Path) -> None:
    """Copy a SQLite database file (SQLite's backup API: a consistent copy, WAL or not)."""
    reader, writer = sqlite3.connect(source), sqlite3.connect(target)
    try:
        reader.backup(writer)
    finally:
        reader.close()
        writer.close()


@dataclass
class MigratedDatabases:
    """Migrated databases for tests: each store is migrated once per session (by storage.db.migrate, on
    first use) and every test gets its own copy. Migrating takes seconds (tortoise rebuilds its model
    state for every operation of every migration) and hundreds of tests want a migrated database. The
    tests of migrating itself (tests/storage/test_models.py, the CLI's) still migrate from scratch.
    """

    directory: Path
    sqlite_template: Path | None = None
    postgres_template: str = ""  # the url of the migrated PostgreSQL database copied from

    async def sqlite(self, path: Path) -> str:
        """A copy of the migrated SQLite database at ``path`` (which must not exist); its URL."""
        if self.sqlite_template is None:
            template = self.directory / "relaydesk.db"
            await migrate(f"sqlite://{template}")
            self.sqlite_template = template
        copy_sqlite(self.sqlite_template, path)
        return f"sqlite://{path}"

    async def postgres(self) -> str:
        """A fresh PostgreSQL database, a copy of the migrated one (drop it with
        :func:`drop_postgres_database`)."""
        if not self.postgres_template:
            url = await fresh_postgres_schema()
            try:
                await migrate(url)
            except BaseException:
                await drop_postgres_database(url)
                raise
            self.postgres_template = url
        return await fresh_postgres_schema(template=self.postgres_template.rsplit("/", 1)[1])

    async def close(self) -> None:
        """Drop the PostgreSQL template (the SQLite one goes with pytest's temporary directories)."""
        if self.postgres_template:
            await drop_postgres_database(self.postgres_template)
            self.postgres_template = ""


@pytest.fixture(scope="session")
async def migrated(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MigratedDatabases]:
    """The session's migrated databases, copied for each test (see :class:`MigratedDatabases`)."""
    databases = MigratedDatabases(tmp_path_factory.mktemp("migrated"))
    yield databases
    await databases.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, migrated: MigratedDatabases
) -> AsyncIterator[str]:
    """A migrated database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield await migrated.sqlite(tmp_path / "relaydesk.db")
        return
    url = await migrated.postgres()
    try:
        yield url
    finally:
        await drop_postgres_database(url)


@pytest.fixture
async def redis_prefix() -> AsyncIterator[tuple[str, str]]:
    """The test Redis and a key prefix of this test's own; its keys are deleted afterwards."""
    url = require_redis()
    prefix = f"relaydesk-test-{uuid.uuid4().hex[:10]}"
    yield url, prefix
    client = aioredis.from_url(url)
    # the bus's partition keys start with their hash tag: {prefix:pN}:...
    keys = [k for pattern in (f"{prefix}*", "{" + prefix + "*") async for k in client.scan_iter(pattern)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def postgres_url(migrated: MigratedDatabases) -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database, dropped afterwards."""
    url = await migrated.postgres()
    yield url
    await drop_postgres_database(url)


@pytest.fixture
async def sqlite_url(tmp_path: Path, migrated: MigratedDatabases) -> str:
    """A migrated SQLite database file."""
    return await migrated.sqlite(tmp_path / "relaydesk.db")


DeskFactory = Callable[..., Awaitable[Desk]]


@pytest.fixture
async def make_desk() -> AsyncIterator[DeskFactory]:
    """Start desks from plugins.yaml text on a given database; every desk still running is stopped after."""
    running: list[Desk] = []

    async def factory(
        url: str,
        yaml_text: str = DOUBLES_YAML,
        *,
        serve_http: bool = False,
        http_port: int = 0,
        redis: str = "",
        environ: dict[str, str] | None = None,
        **kwargs: object,
    ) -> Desk:
        config: DeskConfig = parse_config(yaml_text, "plugins.yaml", environ=environ or {})
        config = config.model_copy(
            update={"storage": config.storage.model_copy(update={"database": url, "redis": redis})}
        )
        if serve_http:
            config = config.model_copy(
                update={"server": config.server.model_copy(update={"port": http_port})}
            )
        desk = Desk(
            config,
            serve_http=serve_http,
            outbox_settings=cast(OutboxSettings, kwargs.pop("outbox", FAST_OUTBOX)),
            scheduler_poll=cast(float, kwargs.pop("scheduler_poll", 0.1)),
            **kwargs,  # type: ignore[arg-type]
        )
        await desk.start()
        running.append(desk)
        return desk

    yield factory
    for desk in running:
        if desk.plugins:
            await desk.stop(timeout=5)


@pytest.fixture(scope="session", autouse=True)
def no_threads_left_behind() -> Iterator[None]:
    """After the session, no database connection may be left open: its worker thread (not a daemon)
    would keep pytest from exiting. A desk that failed to start used to leave one behind.
    """
    yield
    left = [t for t in threading.enumerate() if "_connection_worker_thread" in t.name and t.is_alive()]
    for thread in left:
        thread.join(5)  # a connection closing right now finishes its thread
    left = [t for t in left if t.is_alive()]
    assert not left, f"database connections left open after the tests: {[t.name for t in left]}"
