"""Scheduled jobs: one-off tasks from ``ctx.schedule`` (stored rows) and periodic ``@on_schedule(every=N)``.

Both become :class:`ScheduledFire` events on the bus, so they run in order with the conversation's
other events. A fire is deduplicated by its receipt (the task id, or the job's time slot for periodic
jobs), which is what makes it fire once even when several workers see it due.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot_core.events import ScheduledFire, utcnow
from storage.models import ScheduledTask

log = logging.getLogger("relaydesk.scheduler")

Publish = Callable[[ScheduledFire], Awaitable[None]]


class Scheduler:
    """Publishes due scheduled tasks and periodic jobs to the bus."""

    def __init__(self, publish: Publish, *, poll_interval: float = 1.0) -> None:
        self._publish = publish
        self._poll = poll_interval
        self._aps = AsyncIOScheduler(timezone="UTC")
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Start firing due tasks (including those that came due while relaydesk was down)."""
        self._stopping.clear()
        self._aps.start()
        self._task = asyncio.create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        """Stop firing."""
        self._stopping.set()
        if self._aps.running:
            self._aps.shutdown(wait=False)
        if self._task:
            await self._task
            self._task = None

    def set_periodic(self, jobs: list[tuple[str, str, float]]) -> None:
        """Make the periodic jobs exactly ``jobs`` (plugin, job, every seconds): called at start and reload."""
        wanted = {f"{plugin}:{job}": (plugin, job, every) for plugin, job, every in jobs}
        for existing in self._aps.get_jobs():
            if existing.id not in wanted:
                existing.remove()
        for job_id, (plugin, job, every) in wanted.items():
            self._aps.add_job(
                self._fire_periodic,
                IntervalTrigger(seconds=every),
                args=(plugin, job, every),
                id=job_id,
                replace_existing=True,
                coalesce=True,
            )

    async def _fire_periodic(self, plugin: str, job: str, every: float) -> None:
        slot = int(time.time() // every)
        await self._publish(ScheduledFire(plugin=plugin, job=job, data={"slot": slot}))

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.fire_due()
            except Exception:
                log.exception("scheduler scan failed")
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=self._poll)
            except TimeoutError:
                pass

    async def fire_due(self) -> int:
        """Publish every task that is due and not fired yet; returns how many."""
        due = await ScheduledTask.filter(fired_at=None, due_at__lte=utcnow()).order_by("due_at").limit(200)
        for task in due:
            await self._publish(
                ScheduledFire(
                    plugin=task.plugin,
                    job=task.job,
                    task_id=task.id,
                    conversation_id=task.conversation_id,
                    data=dict(task.data),
                )
            )
            # marked after publishing: a crash in between publishes again, and the receipt drops the copy
            await ScheduledTask.filter(id=task.id).update(fired_at=utcnow())
        return len(due)
