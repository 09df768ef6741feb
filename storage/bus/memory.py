"""The in-process event bus: one asyncio queue and one worker task per partition.

Without a journal the bus is only as durable as the process (fine for tests and single-process
setups that can lose in-flight events); with a :class:`storage.bus.journal.Journal` (the database
table in production) every published entry survives a crash and is replayed on the next ``start``.

This module also holds the retry/dead-letter loop shared with the Redis Streams bus
(:class:`RetryPolicy`, :func:`deliver_with_retries`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from storage.bus.base import BusEntry, BusHandler, DeadLetterHandler, EventBus, partition_of
from storage.bus.journal import Journal, JournalRecord
from storage.fence import FenceLost

log = logging.getLogger(__name__)


WORKER_SLICE_SECONDS = 0.002
"""A partition's worker handling a burst lets other tasks run after this long (it drains a backlog in
slices: one entry per turn of the loop would cap each partition at a few hundred entries a second)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how fast a failing entry is retried before it is dead-lettered."""

    max_attempts: int = 5
    backoff: float = 0.05
    max_backoff: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff delays must not be negative")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based): exponential, capped."""
        return float(min(self.backoff * (2 ** (attempt - 1)), self.max_backoff))


async def deliver_with_retries(
    entry: BusEntry,
    handler: BusHandler,
    on_dead_letter: DeadLetterHandler | None,
    policy: RetryPolicy,
    abort: asyncio.Event,
) -> bool:
    """Run ``handler`` on ``entry`` until it returns, retrying with backoff up to ``policy.max_attempts``.

    Returns True when the entry may be acknowledged: the handler returned, or every attempt failed
    and the entry was passed to ``on_dead_letter`` (or logged, without one). Returns False, leaving
    the entry unacknowledged, if ``abort`` is set while waiting between attempts (the bus is stopping
    or lost the partition). Cancellation propagates, also leaving the entry unacknowledged.
    """
    attempt = entry.attempt
    while True:
        current = dataclasses.replace(entry, attempt=attempt) if attempt != entry.attempt else entry
        try:
            await handler(current)
            return True
        except FenceLost:
            return False  # the partition may be another worker's now: it handles the entry (storage.fence)
        except Exception as exc:
            if attempt >= policy.max_attempts:
                await _dead_letter(current, exc, on_dead_letter)
                return True
            delay = policy.delay(attempt)
            log.warning(
                "bus handler failed on entry %s (key %r), attempt %d of %d; retrying in %.2f s",
                current.id,
                current.key,
                attempt,
                policy.max_attempts,
                delay,
                exc_info=exc,
            )
            if await wait_event(abort, delay):
                return False
            attempt += 1


async def _dead_letter(entry: BusEntry, exc: BaseException, on_dead_letter: DeadLetterHandler | None) -> None:
    if on_dead_letter is None:
        log.error(
            "bus entry %s (key %r) failed %d times; dropping it: %r", entry.id, entry.key, entry.attempt, exc
        )
        return
    try:
        await on_dead_letter(entry, exc)
    except Exception:
        log.exception("on_dead_letter failed for bus entry %s (key %r); dropping it", entry.id, entry.key)


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``event``; True if it was set."""
    if event.is_set():
        return True
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


async def finish_tasks(tasks: Iterable[asyncio.Task[None]], timeout: float) -> None:
    """Give ``tasks`` up to ``timeout`` s to end on their own, cancel the rest and wait for all of them."""
    tasks = list(tasks)
    live = [task for task in tasks if not task.done()]
    late: set[asyncio.Task[None]] = set()
    if live:
        _, late = await asyncio.wait(live, timeout=max(timeout, 0.0))
    await cancel_and_wait(late, tasks)


_RECANCEL_INTERVAL = 0.2


async def cancel_and_wait(
    to_cancel: Iterable[asyncio.Task[None]], tasks: Iterable[asyncio.Task[None]]
) -> None:
    """Cancel ``to_cancel``, then wait for every task in ``tasks``, logging unexpected failures.

    A task still running ``_RECANCEL_INTERVAL`` s after its cancellation is cancelled again: on
    Python 3.11, ``asyncio.wait_for`` (which redis-py uses around every socket write) can swallow a
    cancellation that arrives just as the inner operation completes.
    """
    stubborn = {task for task in to_cancel if not task.done()}
    while stubborn:
        for task in stubborn:
            task.cancel()
        _, stubborn = await asyncio.wait(stubborn, timeout=_RECANCEL_INTERVAL)
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not task.cancelled() or (current is not None and current.cancelling()):
                raise  # the caller itself is being cancelled
        except Exception:
            log.exception("bus task %s failed", task.get_name())


def _json_copy(payload: dict[str, Any]) -> dict[str, Any]:
    """A detached copy of ``payload`` (and a check that it is JSON, as the other buses require)."""
    copied = json.loads(json.dumps(payload))
    if not isinstance(copied, dict):
        raise TypeError("bus payloads must be JSON objects")
    return copied


@dataclass(frozen=True, slots=True)
class _Item:
    id: str
    key: str
    payload: dict[str, Any]


class MemoryBus(EventBus):
    """The in-process :class:`EventBus`: ``partitions`` queues, one worker task each.

    ``journal`` (optional) makes entries durable: ``publish`` appends to it before returning, the
    acknowledgement removes the entry, and ``start`` first replays what it still holds (in append
    order, ahead of anything published since). One journal store must serve one running bus only.

    A failing handler is retried after ``retry_backoff * 2**(attempt-1)`` s (at most ``max_backoff``)
    up to ``max_attempts`` attempts, then the entry goes to ``on_dead_letter`` and is acknowledged.

    Payloads are copied through JSON on publish, so handlers never share the publisher's dict and
    non-JSON payloads fail at ``publish`` just as with the other buses. A bus is started once;
    ``publish`` works before ``start`` (entries wait) but raises after ``stop``.
    """

    def __init__(
        self,
        partitions: int = 16,
        *,
        journal: Journal | None = None,
        max_attempts: int = 5,
        retry_backoff: float = 0.05,
        max_backoff: float = 2.0,
    ) -> None:
        """Create a stopped bus; call :meth:`start` to begin handling."""
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.partitions = partitions
        self.journal = journal
        self.policy = RetryPolicy(max_attempts=max_attempts, backoff=retry_backoff, max_backoff=max_backoff)
        self._queues: list[asyncio.Queue[_Item]] = [asyncio.Queue() for _ in range(partitions)]
        self._busy = [False] * partitions
        self._unacked: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._ids = itertools.count(1)
        self._state = "new"  # new -> starting -> running -> stopping -> stopped
        self._handler: BusHandler | None = None
        self._on_dead_letter: DeadLetterHandler | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        # While start() loads the journal, new appends wait at the gate and appends in flight are
        # drained first, so an entry is either in the loaded records or published after them.
        self._gate = asyncio.Event()
        self._gate.set()
        self._appending = 0
        self._appends_done = asyncio.Event()
        self._appends_done.set()

    async def publish(self, key: str, payload: dict[str, Any]) -> str:
        """Queue an entry (journaling it first, if there is a journal); returns its id."""
        self._check_open()
        payload = _json_copy(payload)
        if self.journal is None:
            entry_id = str(next(self._ids))
        else:
            while not self._gate.is_set():
                await self._gate.wait()
            self._check_open()
            self._appending += 1
            self._appends_done.clear()
            try:
                entry_id = await self.journal.append(key, payload)
            finally:
                self._appending -= 1
                if self._appending == 0:
                    self._appends_done.set()
        self._enqueue(_Item(entry_id, key, payload))
        return entry_id

    async def start(self, handler: BusHandler, on_dead_letter: DeadLetterHandler | None = None) -> None:
        """Replay the journal (if any), then start one worker per partition."""
        if self._state != "new":
            raise RuntimeError(f"MemoryBus.start() called on a {self._state} bus (a bus starts once)")
        self._state = "starting"
        self._handler = handler
        self._on_dead_letter = on_dead_letter
        if self.journal is not None:
            self._gate.clear()
            try:
                while self._appending:
                    await self._appends_done.wait()
                records = await self.journal.load()
            except BaseException:
                self._state = "new"
                raise
            finally:
                self._gate.set()
            self._replay(records)
        if self._state != "starting":  # stop() was called while the journal loaded
            return
        self._state = "running"
        self._workers = [
            asyncio.create_task(self._work(p), name=f"memory-bus-p{p}") for p in range(self.partitions)
        ]

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop taking entries, give handlers in flight ``timeout`` s to finish, then cancel the workers.

        Entries not acknowledged by then stay in the journal (without one they are lost).
        """
        if self._state in ("stopping", "stopped"):
            return
        self._state = "stopping"
        self._stopping.set()
        for p, task in enumerate(self._workers):
            if not self._busy[p]:
                task.cancel()  # idle in queue.get(): cancelling leaves the queue untouched
        await finish_tasks(self._workers, timeout)
        self._state = "stopped"

    async def abort(self) -> None:
        """Cancel every worker at once without waiting for handlers, as if the process died.

        Nothing more is acknowledged; with a journal, a new bus on it handles the rest again.
        """
        self._state = "stopped"
        self._stopping.set()
        await cancel_and_wait(self._workers, self._workers)

    async def pending(self) -> int:
        """Entries published (or replayed) but not yet acknowledged by this bus."""
        return len(self._unacked)

    async def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every entry is acknowledged; False if ``timeout`` s passed first."""
        return await wait_event(self._idle, timeout)

    def _check_open(self) -> None:
        if self._state in ("stopping", "stopped"):
            raise RuntimeError("the bus is stopped")

    def _enqueue(self, item: _Item) -> None:
        self._unacked.add(item.id)
        self._idle.clear()
        self._queues[partition_of(item.key, self.partitions)].put_nowait(item)

    def _replay(self, records: list[JournalRecord]) -> None:
        """Put journaled entries from an earlier run in front of each partition's queue."""
        replay: dict[int, list[_Item]] = {}
        for entry_id, key, payload in records:
            if entry_id in self._unacked:  # published by this bus before start(): already queued
                continue
            self._unacked.add(entry_id)
            replay.setdefault(partition_of(key, self.partitions), []).append(_Item(entry_id, key, payload))
        if replay:
            self._idle.clear()
            log.info("replaying %d journaled bus entries", sum(len(items) for items in replay.values()))
        for p, items in replay.items():
            queue = self._queues[p]
            queued: list[_Item] = []
            while not queue.empty():
                queued.append(queue.get_nowait())
            for item in itertools.chain(items, queued):
                queue.put_nowait(item)

    async def _work(self, p: int) -> None:
        assert self._handler is not None
        queue = self._queues[p]
        loop = asyncio.get_running_loop()
        slice_started = loop.time()
        while not self._stopping.is_set():
            if queue.empty():
                item = await queue.get()
                slice_started = loop.time()  # it waited: everything else had its turn
            else:
                item = queue.get_nowait()
            self._busy[p] = True
            try:
                entry = BusEntry(id=item.id, key=item.key, payload=item.payload)
                if not await deliver_with_retries(
                    entry, self._handler, self._on_dead_letter, self.policy, self._stopping
                ):
                    return  # stopping between two attempts: the entry stays unacknowledged
                await self._ack(item)
            finally:
                self._busy[p] = False
            # A handler may never suspend (SQLite runs in place): after a slice of a burst, let other
            # tasks run (the outbox sending what these entries queued) before the next entry.
            if loop.time() - slice_started >= WORKER_SLICE_SECONDS:
                await asyncio.sleep(0)
                slice_started = loop.time()

    async def _ack(self, item: _Item) -> None:
        if self.journal is not None:
            try:
                await self.journal.remove(item.id)
            except Exception:
                # The entry was handled; if the row stays it is handled again after a restart.
                log.exception("could not remove bus entry %s from the journal", item.id)
        self._unacked.discard(item.id)
        if not self._unacked:
            self._idle.set()
