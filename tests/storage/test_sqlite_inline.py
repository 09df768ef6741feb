"""The in-loop SQLite client: a writer waiting for another connection's lock does not block the loop."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from tortoise import connections
from tortoise.exceptions import OperationalError
from tortoise.transactions import in_transaction

from storage import sqlite_inline
from storage.db import close_db, init_db, tortoise_config
from storage.models import Customer
from storage.sqlite_inline import InlineSqliteClient


async def _client(path: Path) -> InlineSqliteClient:
    client = InlineSqliteClient(str(path), connection_name="test")
    await client.create_connection(with_db=True)
    return client


async def test_sqlite_urls_use_the_inline_client(sqlite_url: str) -> None:
    assert tortoise_config(sqlite_url)["connections"]["default"]["engine"] == "storage.sqlite_inline"
    await init_db(sqlite_url)
    try:
        alice = await Customer.create(display_name="Alice", attributes={"plan": "gold"})
        assert (await Customer.get(id=alice.id)).attributes == {"plan": "gold"}
    finally:
        await close_db()


async def test_a_locked_write_waits_without_blocking_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder, waiter = await _client(path), await _client(path)
    try:
        await holder.execute_script("PRAGMA journal_mode=WAL; CREATE TABLE t (n INTEGER)")
        await holder.execute_query("BEGIN IMMEDIATE")  # holds the write lock until the commit below
        await holder.execute_query("INSERT INTO t VALUES (1)")

        write = asyncio.create_task(waiter.execute_query("INSERT INTO t VALUES (2)"))
        ticks = 0
        while ticks < 20:  # the loop keeps running while the second writer waits
            await asyncio.sleep(0.005)
            ticks += 1
        assert not write.done()
        await holder.execute_query("COMMIT")
        # the holder committed (possible only because the loop ran): the waiting write goes through
        await asyncio.wait_for(write, timeout=5)
        _count, rows = await holder.execute_query("SELECT n FROM t ORDER BY n")
        assert [row[0] for row in rows] == [1, 2]
    finally:
        await holder.close()
        await waiter.close()


async def test_a_lock_held_too_long_gives_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_inline, "BUSY_TIMEOUT", 0.05)
    path = tmp_path / "stuck.db"
    holder, waiter = await _client(path), await _client(path)
    try:
        await holder.execute_script("PRAGMA journal_mode=WAL; CREATE TABLE t (n INTEGER)")
        await holder.execute_query("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError, match="locked"):
            await waiter.execute_query("INSERT INTO t VALUES (2)")
        await holder.execute_query("ROLLBACK")
    finally:
        await holder.close()
        await waiter.close()


async def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_checkpoints_run_on_their_own_thread_once_writes_pause(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    client = await _client(path)
    try:
        conn = client._connection._conn  # type: ignore[union-attr]
        # the loop's connection checkpoints only as a backstop
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == sqlite_inline.BACKSTOP_PAGES
        checkpointer = client._connection.checkpointer  # type: ignore[union-attr]
        assert checkpointer is not None
        await client.execute_script("CREATE TABLE t (n INTEGER)")
        for n in range(sqlite_inline.CHECKPOINT_EVERY * 3):
            await client.execute_query("INSERT INTO t VALUES (?)", [n])
        await _wait_until(lambda: checkpointer.checkpoints >= 1)
        # every frame of the log is in the database file now: a new checkpoint has nothing left to copy
        with sqlite3.connect(path) as other:
            _busy, frames, copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert frames == copied
        thread = checkpointer._thread
    finally:
        await client.close()
    assert not thread.is_alive()


def _voluntary_switches(thread_id: int) -> int:
    with open(f"/proc/self/task/{thread_id}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches line")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts thread switches in Linux's /proc")
async def test_the_checkpointer_is_not_woken_by_every_request_while_writes_go_on(tmp_path: Path) -> None:
    # Every wake-up is a thread switch and a GIL hand-over that the loop (and a homeserver sharing the
    # CPUs) pays for: while writes go on, the thread looks for a pause a few times a second instead.
    checkpointer = sqlite_inline.WalCheckpointer(str(tmp_path / "quiet.db"))
    try:
        assert checkpointer._thread.native_id is not None
        before = _voluntary_switches(checkpointer._thread.native_id)
        for _ in range(100):  # a write every millisecond: no pause the checkpointer would wait for
            checkpointer.request()
            await asyncio.sleep(0.001)
        await _wait_until(lambda: checkpointer.checkpoints == 1)
        woken = _voluntary_switches(checkpointer._thread.native_id) - before
    finally:
        await checkpointer.stop()
    assert woken < 20, f"the checkpointer thread was woken {woken} times by 100 requests"


async def test_an_in_memory_database_has_no_checkpointer() -> None:
    client = InlineSqliteClient(":memory:", connection_name="memory")
    await client.create_connection(with_db=True)
    try:
        assert client._connection.checkpointer is None  # type: ignore[union-attr]
    finally:
        await client.close()


async def test_statements_run_at_once_as_one_transaction_or_not_at_all(tmp_path: Path) -> None:
    from tortoise.exceptions import IntegrityError

    path = tmp_path / "batch.db"
    (client, inline), other = await _table_client(path), await _client(path)
    try:
        done = inline.try_all([("INSERT INTO t VALUES (?)", [1]), ("SELECT n FROM t", [])])
        assert done is not None and done[0][0] == 1 and [row[0] for row in done[1][1]] == [1]

        # an error undoes the statements before it
        with pytest.raises(IntegrityError):
            inline.try_all([("INSERT INTO t VALUES (?)", [2]), ("INSERT INTO t VALUES (?)", [1])])
        _count, rows = await client.execute_query("SELECT n FROM t ORDER BY n")
        assert [row[0] for row in rows] == [1]

        # another connection holds the write lock: nothing runs, the caller takes the waiting path
        await other.execute_query("BEGIN IMMEDIATE")
        assert inline.try_all([("INSERT INTO t VALUES (?)", [3])]) is None
        await other.execute_query("COMMIT")
        _count, rows = await client.execute_query("SELECT n FROM t ORDER BY n")
        assert [row[0] for row in rows] == [1]
        assert not inline._conn.in_transaction
    finally:
        await client.close()
        await other.close()


def _count_rows(path: Path) -> int:
    """Rows of ``t`` as another process would see them (a connection of its own, committed data only)."""
    with sqlite3.connect(path) as reader:
        return int(reader.execute("SELECT COUNT(*) FROM t").fetchone()[0])


async def _table_client(path: Path) -> tuple[InlineSqliteClient, sqlite_inline.InlineConnection]:
    client = await _client(path)
    await client.execute_script("PRAGMA journal_mode=WAL; CREATE TABLE t (n INTEGER UNIQUE)")
    inline = client._connection
    assert isinstance(inline, sqlite_inline.InlineConnection)
    return client, inline


async def test_the_writes_of_one_loop_turn_share_one_commit(tmp_path: Path) -> None:
    path = tmp_path / "group.db"
    client, inline = await _table_client(path)
    try:
        commits = inline.group_commits
        for n in range(10):  # ten tasks' statements in one turn of the loop
            assert inline.try_now("INSERT INTO t VALUES (?)", [n]) is not None
        counted = inline.try_now("SELECT COUNT(*) FROM t", [])
        assert counted is not None and counted[1][0][0] == 10  # this connection reads the turn's writes
        assert _count_rows(path) == 0  # not committed before the turn ends
        await inline.durable()
        assert _count_rows(path) == 10
        assert inline.group_commits == commits + 1
        await inline.durable()  # nothing open: returns at once
    finally:
        await client.close()


async def test_a_failed_statement_leaves_the_rest_of_the_group_alone(tmp_path: Path) -> None:
    from tortoise.exceptions import IntegrityError

    path = tmp_path / "failed.db"
    client, inline = await _table_client(path)
    try:
        inline.try_now("INSERT INTO t VALUES (?)", [1])
        with pytest.raises(IntegrityError):
            inline.try_now("INSERT INTO t VALUES (?)", [1])  # a replayed event's duplicate, say
        inline.try_now("INSERT INTO t VALUES (?)", [2])
        await inline.durable()
        assert _count_rows(path) == 2
    finally:
        await client.close()


async def test_an_awaited_write_is_committed_when_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "orm.db"
    client, inline = await _table_client(path)
    try:
        inline.try_now("INSERT INTO t VALUES (?)", [1])  # someone else's write in the same turn
        await client.execute_query("INSERT INTO t VALUES (?)", [2])  # what tortoise's ORM runs
        assert _count_rows(path) == 2  # both committed, without any further wait
    finally:
        await client.close()


async def test_a_transaction_commits_the_group_first_and_rolls_back_only_itself(sqlite_url: str) -> None:
    await init_db(sqlite_url)
    try:
        alice = await Customer.create(display_name="Alice")
        inline = connections.get("default")._connection
        assert isinstance(inline, sqlite_inline.InlineConnection)
        # a hot statement of this turn, then another task's ORM transaction that fails
        inline.try_now('UPDATE "customer" SET "display_name"=? WHERE "id"=?', ["Alice B.", alice.id])
        with pytest.raises(RuntimeError):
            async with in_transaction():
                await Customer.create(display_name="Rolled back")
                raise RuntimeError("the transaction fails")
        async with in_transaction():
            await Customer.create(display_name="Bob")
        assert not inline._conn.in_transaction
        with sqlite3.connect(sqlite_url.removeprefix("sqlite://")) as reader:
            names = [row[0] for row in reader.execute('SELECT "display_name" FROM "customer" ORDER BY "id"')]
        assert names == ["Alice B.", "Bob"]
    finally:
        await close_db()


async def test_closing_commits_the_group(tmp_path: Path) -> None:
    path = tmp_path / "close.db"
    client, inline = await _table_client(path)
    inline.try_now("INSERT INTO t VALUES (?)", [1])
    await client.close()
    assert _count_rows(path) == 1
