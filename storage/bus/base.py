"""The event-bus interface shared by the in-process and the Redis Streams implementations.

Contract (checked by tests/storage/test_bus_contract.py against every implementation):

* ``publish(key, payload)`` returns only once the entry is durable for that implementation
  (journaled, or appended to the Redis stream): adapters acknowledge webhooks after it returns.
* Entries with the same key are handled one at a time, in publish order. Keys are spread over
  ``partitions`` partitions by a stable hash; different partitions are handled in parallel.
* An entry is acknowledged only after the handler returned. If the handler raises, the entry is
  handled again (``BusEntry.attempt`` counts up) after a short backoff, up to ``max_attempts``;
  then it is passed to ``on_dead_letter`` and acknowledged, so one poison entry cannot stall its
  partition forever.
* Entries published but never acknowledged (the process died) are handled again when a bus is
  started on the same store (the journal, or the Redis stream and its consumer group).
* ``stop()`` stops taking new entries, lets the handlers in flight finish, and returns.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BusEntry:
    """One event on the bus as a handler sees it."""

    id: str
    key: str
    payload: dict[str, Any]
    attempt: int = 1


BusHandler = Callable[[BusEntry], Awaitable[None]]
DeadLetterHandler = Callable[[BusEntry, BaseException], Awaitable[None]]


def partition_of(key: str, partitions: int) -> int:
    """The partition a key belongs to: a stable hash, the same in every process."""
    return zlib.crc32(key.encode("utf-8")) % partitions


class EventBus(ABC):
    """Ordered-per-key, parallel-across-keys delivery of JSON payloads to one handler."""

    partitions: int

    @abstractmethod
    async def publish(self, key: str, payload: dict[str, Any]) -> str:
        """Append an entry; returns its id once it is durable."""

    @abstractmethod
    async def start(self, handler: BusHandler, on_dead_letter: DeadLetterHandler | None = None) -> None:
        """Start handling entries (including any left unacknowledged by an earlier run)."""

    @abstractmethod
    async def stop(self, timeout: float = 30.0) -> None:
        """Stop taking entries, wait up to ``timeout`` s for handlers in flight, then release resources."""

    @abstractmethod
    async def pending(self) -> int:
        """How many entries are published but not yet acknowledged."""

    @abstractmethod
    async def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every published entry is acknowledged; False if ``timeout`` passed first."""
