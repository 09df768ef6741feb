"""The event bus: one interface, an in-process implementation and a Redis Streams one."""

from storage.bus.base import BusEntry, BusHandler, DeadLetterHandler, EventBus, partition_of
from storage.bus.journal import DbJournal, Journal, JournalRecord
from storage.bus.memory import MemoryBus, RetryPolicy
from storage.bus.redis_streams import RedisStreamsBus

__all__ = [
    "BusEntry",
    "BusHandler",
    "DbJournal",
    "DeadLetterHandler",
    "EventBus",
    "Journal",
    "JournalRecord",
    "MemoryBus",
    "RedisStreamsBus",
    "RetryPolicy",
    "partition_of",
]
