"""Scheduled jobs: one-off tasks from ``ctx.schedule`` (stored rows) and periodic ``@on_schedule(every=|cron=)``.

Both become :class:`ScheduledFire` events on the bus, so they run in order with the conversation's
other events. One poll loop does both, against the clock :attr:`Scheduler.now` (a hook tests set):

* a one-off task is published once it is due, then marked fired. Its receipt (task id and revision)
  drops a copy published by a second worker; a task moved or cancelled after it was published is
  dropped when its fire is handled (:func:`claim_fire`).
* a periodic job's slots come from :mod:`bot_core.periodic`. Its last fired slot is stored in
  ``periodic_run``; a worker fires a slot only if it moves that row forward (a conditional update), so
  each slot fires once across workers, and restarts keep the clock. Slots missed while relaydesk was
  down fire once, at start (the latest of them). A job seen for the first time starts its clock then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from tortoise.exceptions import IntegrityError

from bot_core.events import ScheduledFire, utcnow
from bot_core.periodic import PeriodicSpec
from storage.db import fresh_context
from storage.models import PeriodicRun, ScheduledTask

log = logging.getLogger("relaydesk.scheduler")

Publish = Callable[[ScheduledFire], Awaitable[None]]
Clock = Callable[[], datetime]


@dataclass
class _Periodic:
    plugin: str
    job: str
    spec: PeriodicSpec
    last: datetime | None = None  # the last slot fired (by any worker), as last read or written here
    next_at: datetime | None = None


class Scheduler:
    """Publishes due scheduled tasks and periodic jobs to the bus."""

    def __init__(self, publish: Publish, *, poll_interval: float = 1.0, now: Clock = utcnow) -> None:
        self._publish = publish
        self._poll = poll_interval
        self.now: Clock = now
        """The scheduler's clock (an aware datetime); tests replace it to move time without waiting."""
        self.first_scan_done = asyncio.Event()  # set once the loop's scan at start is over (for tests)
        self._periodic: dict[tuple[str, str], _Periodic] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Start firing due tasks (including those that came due while relaydesk was down)."""
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        """Stop firing."""
        self._stopping.set()
        if self._task:
            await self._task
            self._task = None

    def set_periodic(self, jobs: list[tuple[str, str, PeriodicSpec]]) -> None:
        """Make the periodic jobs exactly ``jobs`` (plugin, job, when): called at start and reload."""
        wanted = {(plugin, job): spec for plugin, job, spec in jobs}
        for ident in list(self._periodic):
            if ident not in wanted or self._periodic[ident].spec != wanted[ident]:
                del self._periodic[ident]
        for (plugin, job), spec in wanted.items():
            if (plugin, job) not in self._periodic:
                self._periodic[(plugin, job)] = _Periodic(plugin, job, spec)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                # a task of its own each time: see storage.db.fresh_context (a database restart mid-scan)
                await asyncio.create_task(self.tick(), context=fresh_context())
            except Exception:
                log.exception("scheduler scan failed")
            self.first_scan_done.set()
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=self._poll)
            except TimeoutError:
                pass

    async def tick(self) -> int:
        """One scan: publish every due task and every due periodic slot; returns how many."""
        return await self.fire_due() + await self.fire_periodic()

    async def fire_due(self) -> int:
        """Publish every task that is due and neither fired nor cancelled; returns how many."""
        due = (
            await ScheduledTask.filter(fired_at=None, cancelled_at=None, due_at__lte=self.now())
            .order_by("due_at")
            .limit(200)
        )
        for task in due:
            await self._publish(
                ScheduledFire(
                    plugin=task.plugin,
                    job=task.job,
                    task_id=task.id,
                    revision=task.revision,
                    conversation_id=task.conversation_id,
                    data=dict(task.data),
                )
            )
            # marked after publishing: a crash in between publishes again, and the receipt drops the
            # copy. Only this revision: a task moved meanwhile stays pending for its new time.
            await ScheduledTask.filter(id=task.id, revision=task.revision).update(fired_at=utcnow())
        return len(due)

    async def fire_periodic(self) -> int:
        """Publish the due slot of every periodic job this worker wins; returns how many."""
        fired = 0
        for job in list(self._periodic.values()):
            try:
                fired += await self._fire_job(job)
            except Exception:
                log.exception("periodic job scan failed", extra={"plugin": job.plugin, "job": job.job})
        return fired

    async def _fire_job(self, job: _Periodic) -> int:
        now = self.now()
        if job.last is None:
            job.last = await self._load_last(job, now)
            job.next_at = job.spec.next_after(job.last)
        assert job.next_at is not None
        if now < job.next_at:
            return 0
        slot = job.spec.latest_due(job.last, now)
        if slot is None:
            job.next_at = job.spec.next_after(job.last)
            return 0
        won = await PeriodicRun.filter(plugin=job.plugin, job=job.job, last_slot_at__lt=slot).update(
            last_slot_at=slot
        )
        if not won:  # another worker fired it (or a later slot): take its clock
            row = await PeriodicRun.get(plugin=job.plugin, job=job.job)
            job.last = row.last_slot_at
            job.next_at = job.spec.next_after(job.last)
            return 0
        previous = job.last
        try:
            await self._publish(
                ScheduledFire(plugin=job.plugin, job=job.job, data={"slot": slot.isoformat()})
            )
        except Exception:
            # give the slot back so this or another worker fires it on a later scan
            await PeriodicRun.filter(plugin=job.plugin, job=job.job, last_slot_at=slot).update(
                last_slot_at=previous
            )
            raise
        job.last = slot
        job.next_at = job.spec.next_after(slot)
        log.debug(
            "periodic job fired",
            extra={
                "plugin": job.plugin,
                "job": job.job,
                "slot": slot.isoformat(),
                "when": job.spec.describe(),
            },
        )
        return 1

    @staticmethod
    async def _load_last(job: _Periodic, now: datetime) -> datetime:
        """The job's stored last slot; a job seen for the first time starts its clock at ``now``."""
        row = await PeriodicRun.get_or_none(plugin=job.plugin, job=job.job)
        if row is None:
            try:
                row = await PeriodicRun.create(plugin=job.plugin, job=job.job, last_slot_at=now)
            except IntegrityError:  # another worker saw it first
                row = await PeriodicRun.get(plugin=job.plugin, job=job.job)
        return row.last_slot_at


async def claim_fire(fire: ScheduledFire) -> bool:
    """Whether a fire should run now; for a one-off task, records that its handler starts (``ran_at``).

    False when the task was cancelled or moved since the fire was published: a fire can wait on the bus
    behind its conversation's earlier events, and one of them may cancel or reschedule the task. The
    conditional update pairs with :meth:`Context.cancel`'s, so a task either runs or is cancelled, never
    both. Periodic fires always run (their slot was claimed when published).
    """
    if fire.task_id is None:
        return True
    claimed = await ScheduledTask.filter(id=fire.task_id, revision=fire.revision, cancelled_at=None).update(
        ran_at=utcnow()
    )
    return bool(claimed)


def fire_receipt_id(fire: ScheduledFire) -> str:
    """The receipt a fire is handled under: the same task revision or periodic slot fires once."""
    if fire.task_id is None:
        return f"{fire.plugin}:{fire.job}:{fire.data.get('slot')}"
    # revision 0 keeps the receipt of fires published before tasks had revisions
    return f"task:{fire.task_id}" if not fire.revision else f"task:{fire.task_id}:r{fire.revision}"
