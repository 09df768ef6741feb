"""Journals for :class:`storage.bus.memory.MemoryBus`: where published entries wait until acknowledged.

A journal makes the in-process bus crash-safe: ``publish`` appends to it before returning, the
acknowledgement removes the entry, and ``start`` replays whatever is still there. One journal store
serves one running bus at a time (several processes sharing one journal would replay each other's
entries); deployments with several worker processes use the Redis Streams bus instead.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from storage import hot
from storage.models import BusJournalEntry

JournalRecord = tuple[str, str, dict[str, Any]]
"""One journaled entry as :meth:`Journal.load` returns it: ``(id, key, payload)``."""


@runtime_checkable
class Journal(Protocol):
    """Durable storage for bus entries that are published but not yet acknowledged."""

    async def append(self, key: str, payload: dict[str, Any]) -> str:
        """Store an entry durably and return its id; ids of later appends sort after earlier ones."""
        ...

    async def remove(self, entry_id: str) -> None:
        """Forget an acknowledged entry (a no-op if it is already gone)."""
        ...

    async def load(self) -> list[JournalRecord]:
        """Every entry still stored, in append order."""
        ...


class DbJournal:
    """A :class:`Journal` in the ``bus_journal`` table (:class:`storage.models.BusJournalEntry`).

    Tortoise must already be initialised by the caller (``storage.db.init_db``). Each append is one
    INSERT and each removal one DELETE by primary key, so the cost per entry stays at two small
    statements; on SQLite (WAL, ``synchronous=NORMAL``) neither waits for an fsync of the whole file.
    """

    MAX_KEY_LENGTH = 255

    async def append(self, key: str, payload: dict[str, Any]) -> str:
        """Insert one row; its auto-increment primary key (as a string) is the entry id."""
        if len(key) > self.MAX_KEY_LENGTH:
            raise ValueError(f"bus key longer than {self.MAX_KEY_LENGTH} characters: {key[:40]!r}...")
        return str(await hot.append_journal_entry(key, payload))

    async def remove(self, entry_id: str) -> None:
        """Delete the row of an acknowledged entry."""
        await hot.delete_journal_entry(int(entry_id))

    async def load(self) -> list[JournalRecord]:
        """Every row still in the table, ordered by id (the append order)."""
        rows = await BusJournalEntry.all().order_by("id").values_list("id", "key", "payload")
        return [(str(row[0]), str(row[1]), dict(row[2])) for row in rows]
