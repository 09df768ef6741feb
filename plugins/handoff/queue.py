"""The waiting line of each team, kept in the plugin's store (it survives restarts and is shared by workers).

One entry per customer (keyed by the customer id: the same customer writing from another channel is the
same entry, and keeps its place); the line of a team is its entries ordered by priority (higher first),
then arrival. Nothing removes an entry but an agent taking the conversation, its transfer to another
team, or its close: a customer who steps away, or writes again, keeps the place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from bot_core.api import StateStore


@dataclass(frozen=True)
class Entry:
    """A waiting conversation."""

    customer: int
    conversation: int
    team: str
    priority: int
    arrived: str  # ISO time
    name: str = ""
    told_position: int | None = None
    told_wait: float | None = None
    hours_told: str | None = None  # the opening time the customer was told, while the team was away

    @property
    def arrived_at(self) -> datetime:
        """When the conversation joined the line."""
        return datetime.fromisoformat(self.arrived)

    def order(self) -> tuple[int, str, int]:
        """The sort key of the line: priority first (higher first), then arrival."""
        return (-self.priority, self.arrived, self.conversation)


class Queue:
    """Every team's line, in one scope of the plugin's store."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def get(self, customer: int) -> Entry | None:
        """The customer's entry, if they wait."""
        data = await self.store.get(str(customer))
        return _entry(data) if data else None

    async def put(self, entry: Entry) -> None:
        """Store (or replace) the customer's entry."""
        await self.store.set(str(entry.customer), asdict(entry))

    async def find(self, customer: int, conversation: int) -> Entry | None:
        """The entry of ``conversation``, normally under ``customer``.

        One found under another customer id is moved under this one: the two customers were linked into
        one (their conversations moved with them) and the place stays with the conversation; if this
        customer waited already too, the better of the two places is kept.
        """
        entry = await self.get(customer)
        if entry is not None and entry.conversation == conversation:
            return entry
        for key, data in (await self.store.items()).items():
            if data.get("conversation") != conversation or key == str(customer):
                continue
            found = _entry(data)
            await self.store.delete(key)
            best = found if entry is None or found.order() < entry.order() else entry
            moved = replace(best, customer=customer, conversation=conversation)
            await self.put(moved)
            return moved
        return None

    async def remove(self, customer: int, conversation: int) -> Entry | None:
        """Take ``conversation`` out of the line; the entry, if it waited."""
        entry = await self.find(customer, conversation)
        if entry is None:
            return None
        await self.store.delete(str(customer))
        return entry

    async def line(self, team: str) -> list[Entry]:
        """``team``'s waiting conversations in serving order."""
        entries = [_entry(v) for v in (await self.store.items()).values()]
        return sorted((e for e in entries if e.team == team), key=Entry.order)

    async def teams(self) -> set[str]:
        """The teams with someone waiting."""
        return {_entry(v).team for v in (await self.store.items()).values()}

    async def told(self, entry: Entry, position: int, wait: float | None) -> Entry:
        """Record what the customer was told last (so they are told again only when it changed enough)."""
        fresh = await self.get(entry.customer)
        if fresh is None or fresh.conversation != entry.conversation:
            return entry
        updated = replace(fresh, told_position=position, told_wait=wait)
        await self.put(updated)
        return updated


def _entry(data: dict[str, Any]) -> Entry:
    return Entry(**data)
