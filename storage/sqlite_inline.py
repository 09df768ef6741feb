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

Checkpoints (copying the write-ahead log back into the database file, with two fsyncs) would also run
on the loop: SQLite makes the statement whose commit crosses ``wal_autocheckpoint`` pages (default
1,000, about 30 relayed messages) do one, stalling every task for milliseconds, and under load their
fsyncs compete for the disk with everything else on the machine (a homeserver on the same disk fsyncs
every commit). So a :class:`WalCheckpointer` thread with its own connection checkpoints instead, once
writes pause for :data:`CHECKPOINT_QUIET_SECONDS` or, under sustained load, every
:data:`CHECKPOINT_MAX_CHANGES` changed rows (the log then holds some tens of MB). The loop's own
automatic checkpoint stays only as a backstop (:data:`BACKSTOP_PAGES`) should that thread fall behind.

Used for ``sqlite://`` URLs by :func:`storage.db.tortoise_config`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from tortoise.backends.sqlite.client import SqliteClient
from tortoise.exceptions import IntegrityError, OperationalError

T = TypeVar("T")

log = logging.getLogger("relaydesk.storage")

BUSY_TIMEOUT = 5.0
"""Seconds a statement keeps retrying while another connection holds the write lock."""
_FIRST_BACKOFF, _MAX_BACKOFF = 0.001, 0.05
CHECKPOINT_EVERY = 10
"""Rows changed on the connection between two nudges of the checkpointer (a relayed message changes ~10);
fewer than this in :data:`CHECKPOINT_QUIET_SECONDS` count as a pause."""
CHECKPOINT_QUIET_SECONDS = 0.25
"""The checkpointer waits for a pause in the writes this long before it checkpoints."""
CHECKPOINT_MAX_CHANGES = 5000
"""...but no longer than this many changed rows (about 500 relayed messages, a log of ~70 MB)."""
BACKSTOP_PAGES = 40000
"""``wal_autocheckpoint`` of the loop's connection: it checkpoints itself only if the thread falls behind."""
WAL_SIZE_LIMIT = 128 * 1024 * 1024
"""``journal_size_limit``: the log is reused from its start rather than cut down and grown again."""
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


class WalCheckpointer:
    """Checkpoints a WAL-mode database on a thread of its own, so the event loop never does.

    :meth:`request` is called every :data:`CHECKPOINT_EVERY` changed rows; the thread checkpoints once
    requests pause for :data:`CHECKPOINT_QUIET_SECONDS`, or after :data:`CHECKPOINT_MAX_CHANGES` rows.
    Only a request that finds the thread idle wakes it; while writes go on, the thread looks at the
    count of requests every :data:`CHECKPOINT_QUIET_SECONDS` instead. (A wake-up per request, about one
    per relayed message, cost a thread switch and a hand-over of the GIL each, and a homeserver sharing
    the CPUs paid for them.)
    """

    def __init__(self, filename: str) -> None:
        self._filename = filename
        self._wanted = threading.Event()
        self._stop = threading.Event()
        self._requests = 0
        self._idle = True
        self.checkpoints = 0
        """Checkpoints done so far."""
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Ask for a checkpoint soon (requests made while one runs are served by the next)."""
        self._requests += 1
        if self._idle:
            self._idle = False
            self._wanted.set()

    def _run(self) -> None:
        # Waiting for locks here blocks nobody, so this connection may use SQLite's own busy handler.
        conn = sqlite3.connect(self._filename, timeout=BUSY_TIMEOUT, check_same_thread=False)
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                seen = self._requests
                changes = CHECKPOINT_EVERY
                # Writes keep coming: wait for a pause, up to a bound on the log's growth.
                while changes < CHECKPOINT_MAX_CHANGES:
                    if self._stop.wait(CHECKPOINT_QUIET_SECONDS):
                        return
                    now = self._requests
                    if now == seen:
                        break
                    changes += (now - seen) * CHECKPOINT_EVERY
                    seen = now
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error:
                    log.warning("background WAL checkpoint failed", exc_info=True)
                self._idle = True
                if self._requests != seen:  # writes during the checkpoint found the thread busy
                    self._idle = False
                    self._wanted.set()
        finally:
            conn.close()

    async def stop(self) -> None:
        """Stop the thread (after the checkpoint it may be running)."""
        self._stop.set()
        self._wanted.set()
        await asyncio.to_thread(self._thread.join)


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


@functools.lru_cache(maxsize=4096)
def _reads_only(sql: str) -> bool:
    """A plain SELECT: it needs no write transaction (it reads the group's writes if one is open)."""
    return sql.lstrip()[:6].upper() == "SELECT"


class InlineConnection:
    """The part of ``aiosqlite.Connection`` that tortoise uses, run on the calling thread.

    **Group commit.** Statements run outside an explicit transaction share one transaction per turn
    of the event loop: the first opens it (``BEGIN IMMEDIATE``) and a callback scheduled for the
    loop's next turn commits it. A relayed message's dozen statements, and those of every other
    message handled in the same turn, then cost one commit instead of one each: fewer WAL frames
    written (rows written together share pages), fewer lock calls. What a crash can lose is the last
    turn's writes, as a whole and in order: the database is always as it was at the end of some turn.

    Only the hot path (:meth:`try_now`, :meth:`try_all`) joins the group; it returns at once, and a
    caller that is about to act on the outside world (acknowledge an event, send a message) awaits
    :meth:`durable` first. A statement through tortoise's awaitable methods commits the group first
    and then runs on its own, committed when it returns, as before.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.checkpointer: WalCheckpointer | None = None
        """Set once the file is in WAL mode: it is asked for a checkpoint every :data:`CHECKPOINT_EVERY` changes."""
        self._changes_checkpointed = 0
        self._group_open = False
        self._group = 0  # the number of the group transaction open now, or of the last one
        self._committed = 0  # the number of the last group transaction that ended (committed or lost)
        self._waiters: list[asyncio.Future[None]] = []
        self.group_commits = 0
        """Group transactions committed so far."""

    def _wrote(self) -> None:
        """Ask for a background checkpoint once enough rows changed since the last request."""
        if self.checkpointer is not None:
            changes = self._conn.total_changes
            if changes - self._changes_checkpointed >= CHECKPOINT_EVERY:
                self._changes_checkpointed = changes
                self.checkpointer.request()

    # -- the group transaction -------------------------------------------------------------------

    def _join_group(self) -> None:
        """Make sure the turn's group transaction is open, unless an explicit transaction is.

        Raises sqlite3's "database is locked" when another connection holds the write lock.
        """
        if self._group_open or self._conn.in_transaction:
            return
        self._conn.execute("BEGIN IMMEDIATE")
        self._group_open = True
        self._group += 1
        asyncio.get_running_loop().call_soon(self._commit_group)

    def _commit_group(self) -> None:
        """Commit the group transaction (if one is open) and wake whoever waits for it."""
        if not self._group_open:
            return
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.OperationalError) and _locked(exc):
                asyncio.get_running_loop().call_later(_FIRST_BACKOFF, self._commit_group)
                return
            self._lose_group(exc)
            return
        self._group_open = False
        self._committed = self._group
        self.group_commits += 1
        self._wrote()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _lose_group(self, exc: sqlite3.Error) -> None:
        """The group transaction failed (SQLite rolled it back, or its commit failed): tell its waiters."""
        if self._conn.in_transaction:
            self._conn.rollback()
        self._group_open = False
        self._committed = self._group
        log.error(
            "SQLite rolled back a group of writes (%s); what they stored is replayed from the bus journal "
            "after a restart",
            exc,
        )
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(OperationalError(exc))

    def _check_group(self, exc: sqlite3.Error) -> None:
        """After a failed statement: if SQLite rolled the whole group back with it, say so."""
        if self._group_open and not self._conn.in_transaction:
            self._lose_group(exc)

    def _flush_group(self) -> None:
        """Commit the group now (before a statement that manages transactions itself)."""
        self._commit_group()
        if self._group_open:  # still locked by another connection: give up on the group
            self._lose_group(sqlite3.OperationalError("database is locked"))

    def commit_point(self) -> int | None:
        """Where the statements run so far end, while some are not committed yet (None: all are); for
        :meth:`durable`."""
        return self._group if self._group_open else None

    async def durable(self, point: int | None = None) -> None:
        """Return once every statement run so far (or up to ``point``, from :meth:`commit_point`) is
        committed; at once when it is."""
        if not self._group_open or (point is not None and point <= self._committed):
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    # -- the hot path ---------------------------------------------------------------------------

    def try_now(self, sql: str, values: Sequence[Any]) -> tuple[int, list[Any], int | None] | None:
        """Run one statement at once, in the group transaction, without awaiting anything: (rows changed
        or returned, rows, last row id), or None when another connection holds the file's lock (the
        awaitable path waits for it). It is committed at the loop's next turn (:meth:`durable`).

        Errors come as tortoise's, as through the client: ``IntegrityError``, ``OperationalError``.
        """
        try:
            if not _reads_only(sql):
                self._join_group()
            return self._run_one(sql, values)
        except sqlite3.IntegrityError as exc:
            self._check_group(exc)
            raise IntegrityError(exc) from exc
        except sqlite3.OperationalError as exc:
            if _locked(exc) and not self._group_open:
                return None
            self._check_group(exc)
            raise OperationalError(exc) from exc

    def _run_one(self, sql: str, values: Sequence[Any]) -> tuple[int, list[Any], int | None]:
        """Execute one statement: (rows changed or returned, rows, last row id); sqlite3's errors as raised."""
        before = self._conn.total_changes
        cursor = self._conn.execute(sql, values)
        try:
            rows = cursor.fetchall()
            row_id = cursor.lastrowid
        finally:
            cursor.close()
        return (self._conn.total_changes - before) or len(rows), rows, row_id

    def try_all(
        self, statements: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[tuple[int, list[Any], int | None]] | None:
        """Run ``statements`` at once, all or none of them (a savepoint in the group transaction): each
        one's (rows changed or returned, rows, last row id). None, with nothing changed, when another
        connection holds the write lock. On an error the statements are undone and the error raised as
        tortoise's.

        The caller makes sure no explicit transaction is open on this connection (tortoise's lock is free).
        """
        try:
            self._join_group()
        except sqlite3.OperationalError as exc:
            if _locked(exc):
                return None
            raise OperationalError(exc) from exc
        try:
            self._conn.execute("SAVEPOINT hot_all")
            try:
                results = [self._run_one(sql, values) for sql, values in statements]
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK TO hot_all")
                    self._conn.execute("RELEASE hot_all")
                raise
            self._conn.execute("RELEASE hot_all")
        except sqlite3.Error as exc:
            self._check_group(exc)
            if isinstance(exc, sqlite3.IntegrityError):
                raise IntegrityError(exc) from exc
            raise OperationalError(exc) from exc
        return results

    # -- tortoise's awaitable methods -----------------------------------------------------------

    async def _run_awaitable(self, sql: str, run: Callable[[], T]) -> T:
        """``run()`` as tortoise expects, committed when it returns: a statement that writes (or manages
        transactions) first commits the open group and then runs on its own, so it never waits for the
        loop's next turn; a read runs in the group (it sees its writes). Inside tortoise's own
        transaction no group is open, and the statement is that transaction's."""
        writes = not _reads_only(sql)

        def attempt() -> T:
            if writes and self._group_open:  # (again on every retry: a group may open meanwhile)
                self._flush_group()
            return run()

        try:
            result = await run_unblocked(attempt)
        except sqlite3.Error as exc:
            self._check_group(exc)
            raise
        self._wrote()
        return result

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> InlineCursor:
        """Run one statement; its cursor."""
        values = tuple(parameters or ())
        return InlineCursor(await self._run_awaitable(sql, lambda: self._conn.execute(sql, values)))

    async def execute_insert(self, sql: str, parameters: Iterable[Any] | None = None) -> tuple[int | None]:
        """Run an INSERT; ``(rowid,)`` of the new row, as aiosqlite returns it."""
        values = tuple(parameters or ())

        def insert() -> int | None:
            cursor = self._conn.execute(sql, values)
            try:
                return cursor.lastrowid
            finally:
                cursor.close()

        return (await self._run_awaitable(sql, insert),)

    async def execute_fetchall(self, sql: str, parameters: Iterable[Any] | None = None) -> list[Any]:
        """Run one statement; all its rows."""
        values = tuple(parameters or ())

        def fetch() -> list[Any]:
            cursor = self._conn.execute(sql, values)
            try:
                return cursor.fetchall()
            finally:
                cursor.close()

        return await self._run_awaitable(sql, fetch)

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> InlineCursor:
        """Run one statement for each parameter set."""
        rows = list(parameters)
        return InlineCursor(await self._run_awaitable(sql, lambda: self._conn.executemany(sql, rows)))

    async def executescript(self, sql: str) -> InlineCursor:
        """Run several statements (after committing the group: a script manages its own transactions)."""
        self._flush_group()
        cursor = InlineCursor(await run_unblocked(lambda: self._conn.executescript(sql)))
        self._wrote()
        return cursor

    async def commit(self) -> None:
        """Commit the open transaction (the group's, if that is the one open)."""
        if self._group_open:
            self._flush_group()
            return
        await run_unblocked(self._conn.commit)
        self._wrote()

    async def rollback(self) -> None:
        """Roll the open explicit transaction back (never the group's: it holds other tasks' writes)."""
        if self._group_open:
            self._flush_group()
            return
        self._conn.rollback()

    async def close(self) -> None:
        """Close the connection (after committing the group, and stopping its checkpointer)."""
        if self._group_open:
            self._flush_group()
        if self.checkpointer is not None:
            await self.checkpointer.stop()
            self.checkpointer = None
        self._conn.close()

    @property
    def total_changes(self) -> int:
        """Rows changed since the connection opened (tortoise counts a statement's changes by it)."""
        return self._conn.total_changes


class InlineSqliteClient(SqliteClient):
    """tortoise's SQLite client with :class:`InlineConnection` in place of aiosqlite's threaded one."""

    def __init__(self, file_path: str, **kwargs: Any) -> None:
        kwargs.setdefault("journal_size_limit", WAL_SIZE_LIMIT)
        super().__init__(file_path, **kwargs)

    async def create_connection(self, with_db: bool) -> None:
        """Open the connection (once) and apply the pragmas, as the stock client does."""
        if self._connection:
            return
        conn = sqlite3.connect(self.filename, isolation_level=None, check_same_thread=False, timeout=0)
        conn.row_factory = sqlite3.Row
        inline = InlineConnection(conn)
        for pragma, value in self.pragmas.items():
            await (await inline.execute(f"PRAGMA {pragma}={value}")).close()
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() == "wal" and self.filename != ":memory:":
            conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}").close()
            inline.checkpointer = WalCheckpointer(self.filename)
        self._connection = inline  # type: ignore[assignment]
        await self._post_connect()


client_class = InlineSqliteClient
