"""Adapters' receiving states across workers: each worker reports its own, anyone reads them all.

A worker knows only its own receiving loops (:mod:`bot_core.receiving`); with several workers, the one
that runs the supervisor's check would miss an adapter down on another. So every worker writes its
adapters' states to the database every :data:`REPORT_EVERY` seconds (one row per worker and adapter,
in the engine's own state scope, ``plugin_state`` with plugin ``relaydesk`` and scope ``adapters``), and
:meth:`AdapterHealth.states` reads every report younger than :data:`STALE_AFTER`: an adapter's state is
the worst any live worker reports (one worker that cannot receive from Telegram is a problem even if
another can). A worker that stops deletes its rows; the rows of a worker that died stop counting once
stale and are deleted after :data:`FORGET_AFTER`. This worker's own states are read live, never stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bot_core.context import StateStore
from bot_core.receiving import ReceiveState
from storage.models import PluginState

log = logging.getLogger("relaydesk.health")

OWNER, SCOPE = "relaydesk", "adapters"
REPORT_EVERY = 15.0
"""Seconds between two reports of a worker."""
STALE_AFTER = 60.0
"""A report older than this (seconds) is from a worker that is gone or stuck: it no longer counts."""
FORGET_AFTER = 3600.0
"""Reports older than this (seconds) are deleted."""


class AdapterHealth:
    """This worker's reports of its adapters' receiving states, and everyone's read back."""

    def __init__(
        self,
        local: Callable[[], dict[str, str]],
        *,
        every: float = REPORT_EVERY,
        stale_after: float = STALE_AFTER,
        worker: str | None = None,
    ) -> None:
        self._local = local
        self.every = every
        self.stale_after = stale_after
        self.worker = worker or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._store = StateStore(OWNER, SCOPE)
        self._reported: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def _key(self, adapter: str) -> str:
        return f"{adapter}|{self.worker}"

    async def report(self) -> None:
        """Write this worker's states now (and forget adapters it no longer has, and very old reports)."""
        states = self._local()
        for adapter, state in states.items():
            await self._store.set(
                self._key(adapter), {"adapter": adapter, "worker": self.worker, "state": state}
            )
        for gone in self._reported - set(states):
            await self._store.delete(self._key(gone))
        self._reported = set(states)
        old = datetime.now(UTC) - timedelta(seconds=FORGET_AFTER)
        await PluginState.filter(plugin=OWNER, scope=SCOPE, updated_at__lt=old).delete()

    async def states(self) -> dict[str, str]:
        """Each adapter any live worker runs: the worst state reported for it (``ok``, ``degraded``, ``down``)."""
        since = datetime.now(UTC) - timedelta(seconds=self.stale_after)
        worst: dict[str, ReceiveState] = {}

        def note(adapter: str, state: str) -> None:
            try:
                value = ReceiveState(state)
            except ValueError:
                return
            if adapter not in worst or value.severity > worst[adapter].severity:
                worst[adapter] = value

        for row in (await self._store.items(changed_since=since)).values():
            if isinstance(row, dict) and row.get("worker") != self.worker:
                note(str(row.get("adapter", "")), str(row.get("state", "")))
        for adapter, state in self._local().items():
            note(adapter, state)
        return {adapter: state.value for adapter, state in sorted(worst.items())}

    async def workers(self) -> dict[str, dict[str, str]]:
        """Per adapter, each live worker's state (for a look at who cannot receive)."""
        since = datetime.now(UTC) - timedelta(seconds=self.stale_after)
        found: dict[str, dict[str, str]] = {}
        for row in (await self._store.items(changed_since=since)).values():
            if isinstance(row, dict) and row.get("worker") != self.worker:
                found.setdefault(str(row.get("adapter")), {})[str(row.get("worker"))] = str(row.get("state"))
        for adapter, state in self._local().items():
            found.setdefault(adapter, {})[self.worker] = state
        return found

    def start(self) -> None:
        """Report now and then every ``every`` seconds, until :meth:`stop`."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="adapter-health")

    async def _run(self) -> None:
        while True:
            try:
                await self.report()
            except Exception:  # the database is away: the next round tries again
                log.warning("adapter health could not be reported", exc_info=True)
            await asyncio.sleep(self.every)

    async def stop(self) -> None:
        """Stop reporting and delete this worker's reports (a worker shut down is not a worker down)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await PluginState.filter(plugin=OWNER, scope=SCOPE, key__endswith=f"|{self.worker}").delete()
        except Exception:
            log.warning("adapter health reports could not be removed", exc_info=True)
        self._reported.clear()
