"""A tortoise SQLite client that runs statements on the event loop's own thread.

tortoise's SQLite client goes through aiosqlite, which hands every statement to a worker thread and
back: two thread switches and a GIL hand-over per statement, which on a small VM cost more than the
statement itself (WAL mode with ``synchronous=NORMAL``: a commit writes the WAL without an fsync).
relaydesk's embedded mode has one process and, as a rule, one connection to its file, so running
statements in place is both faster and simpler. The connection keeps tortoise's single-connection
lock, so transactions stay exclusive as before.

A statement must never block the loop waiting for another writer (a second connection, say a CLI
command, or a task whose context opened its own): the one holding the lock may need the loop to
finish. So SQLite's own busy handler is off (``busy_timeout=0``) and a statement that finds the file
locked is retried after a short asynchronous sleep, up to :data:`BUSY_TIMEOUT` seconds in all.

Used for ``sqlite://`` URLs by :func:`storage.db.tortoise_config`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from tortoise.backends.sqlite.client import SqliteClient

T = TypeVar("T")

BUSY_TIMEOUT = 5.0
"""Seconds a statement keeps retrying while another connection holds the write lock."""
_FIRST_BACKOFF, _MAX_BACKOFF = 0.001, 0.05
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


def _locked(exc: sqlite3.OperationalError) -> bool:
    """True when ``exc`` says another connection holds the lock (worth retrying)."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


async def run_unblocked(call: Callable[[], T], timeout: float | None = None) -> T:
    """``call()``, retried after short asynchronous sleeps while the database is locked by another connection.

    Gives up after ``timeout`` seconds (default :data:`BUSY_TIMEOUT`) with SQLite's "database is locked".
    """
    try:
        return call()
    except sqlite3.OperationalError as exc:
        if not _locked(exc):
            raise
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (BUSY_TIMEOUT if timeout is None else timeout)
    backoff = _FIRST_BACKOFF
    while True:
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, _MAX_BACKOFF)
        try:
            return call()
        except sqlite3.OperationalError as exc:
            if not _locked(exc) or loop.time() >= deadline:
                raise


class InlineCursor:
    """The part of aiosqlite's cursor that tortoise uses, over a plain sqlite3 cursor."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def close(self) -> None:
        """Close the cursor."""
        self._cursor.close()

    async def fetchall(self) -> list[Any]:
        """Every remaining row."""
        return self._cursor.fetchall()

    async def fetchone(self) -> Any:
        """The next row, or None."""
        return self._cursor.fetchone()


class InlineConnection:
    """The part of ``aiosqlite.Connection`` that tortoise uses, run on the calling thread."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> InlineCursor:
        """Run one statement; its cursor."""
        values = tuple(parameters or ())
        return InlineCursor(await run_unblocked(lambda: self._conn.execute(sql, values)))

    async def execute_insert(self, sql: str, parameters: Iterable[Any] | None = None) -> tuple[int | None]:
        """Run an INSERT; ``(rowid,)`` of the new row, as aiosqlite returns it."""
        values = tuple(parameters or ())
        cursor = await run_unblocked(lambda: self._conn.execute(sql, values))
        try:
            return (cursor.lastrowid,)
        finally:
            cursor.close()

    async def execute_fetchall(self, sql: str, parameters: Iterable[Any] | None = None) -> list[Any]:
        """Run one statement; all its rows."""
        values = tuple(parameters or ())
        cursor = await run_unblocked(lambda: self._conn.execute(sql, values))
        try:
            return cursor.fetchall()
        finally:
            cursor.close()

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> InlineCursor:
        """Run one statement for each parameter set."""
        rows = list(parameters)
        return InlineCursor(await run_unblocked(lambda: self._conn.executemany(sql, rows)))

    async def executescript(self, sql: str) -> InlineCursor:
        """Run several statements."""
        return InlineCursor(await run_unblocked(lambda: self._conn.executescript(sql)))

    async def commit(self) -> None:
        """Commit the open transaction."""
        await run_unblocked(self._conn.commit)

    async def rollback(self) -> None:
        """Roll the open transaction back."""
        self._conn.rollback()

    async def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    @property
    def total_changes(self) -> int:
        """Rows changed since the connection opened (tortoise counts a statement's changes by it)."""
        return self._conn.total_changes


class InlineSqliteClient(SqliteClient):
    """tortoise's SQLite client with :class:`InlineConnection` in place of aiosqlite's threaded one."""

    async def create_connection(self, with_db: bool) -> None:
        """Open the connection (once) and apply the pragmas, as the stock client does."""
        if self._connection:
            return
        conn = sqlite3.connect(self.filename, isolation_level=None, check_same_thread=False, timeout=0)
        conn.row_factory = sqlite3.Row
        inline = InlineConnection(conn)
        for pragma, value in self.pragmas.items():
            await (await inline.execute(f"PRAGMA {pragma}={value}")).close()
        self._connection = inline  # type: ignore[assignment]
        await self._post_connect()


client_class = InlineSqliteClient
