"""Adapters' receiving loops (long polling, ``/sync``): kept running through every error, and watched.

An adapter that pulls events from its platform in a loop runs it as a :class:`ReceiveLoop`, made by
``self.services.receivers.loop(name, body)``. The body loops by itself and reports every round:
:meth:`ReceiveLoop.ok` after a round that worked, ``await`` :meth:`ReceiveLoop.failed` after one that did
not (it logs, throttled, and waits a capped backoff). Should the body end or raise all the same, the
loop logs it and runs the body again after the backoff: a receiving loop never ends silently.

The desk reads every loop's :class:`LoopStatus` for ``/healthz`` and ``/metrics`` and classifies it with
the thresholds of :class:`ReceiveSettings` (:meth:`LoopStatus.state`):

- ``ok``: the last round worked, or it has been failing for less than ``degraded_after``;
- ``degraded``: failing for ``degraded_after`` or more (``/healthz`` still answers 200);
- ``down``: failing for ``down_after`` or more, or the loop's task is gone (``/healthz`` answers 503,
  so an orchestrator restarts the process).

"Failing for" is the time from the first failure of the current streak to its latest failure, not to
now: a long poll that was accepted after a failure keeps the state where it was until it answers (and
an answer ends the streak), so a recovered loop waiting in its long poll never turns ``down``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

LoopBody = Callable[["ReceiveLoop"], Awaitable[None]]
Describe = Callable[[BaseException], str]


class ReceiveState(enum.StrEnum):
    """How an adapter's receiving is doing, as ``/healthz`` reports it."""

    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"

    @property
    def severity(self) -> int:
        """0 ok, 1 degraded, 2 down (the Prometheus gauge's value; the worst state wins)."""
        return _SEVERITY[self]


_SEVERITY = {ReceiveState.OK: 0, ReceiveState.DEGRADED: 1, ReceiveState.DOWN: 2}


@dataclass(frozen=True)
class ReceiveSettings:
    """Health thresholds and backoff of the receiving loops (seconds)."""

    degraded_after: float = 60.0
    down_after: float = 300.0
    backoff_first: float = 0.5
    backoff_max: float = 30.0
    warn_every: float = 60.0  # while a streak lasts, at most one warning per this many seconds
    clock: Callable[[], float] = time.monotonic  # tests pass their own, to cross thresholds at once


@dataclass(frozen=True)
class LoopStatus:
    """What one receiving loop reports: whether its task runs and its current failure streak."""

    running: bool
    failures: int = 0  # failed rounds in the current streak (0: the last round worked)
    failing_since: float | None = None  # clock time of the streak's first failure
    last_failure: float | None = None  # clock time of the streak's latest failure
    last_error: str = ""

    @property
    def failing_for(self) -> float:
        """Seconds from the streak's first failure to its latest (0 when not failing)."""
        if self.failing_since is None or self.last_failure is None:
            return 0.0
        return self.last_failure - self.failing_since

    def state(self, settings: ReceiveSettings) -> ReceiveState:
        """ok / degraded / down under ``settings``' thresholds (see the module's docstring)."""
        if not self.running or self.failing_for >= settings.down_after:
            return ReceiveState.DOWN
        if self.failures and self.failing_for >= settings.degraded_after:
            return ReceiveState.DEGRADED
        return ReceiveState.OK


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


class ReceiveLoop:
    """One adapter's receiving loop, run under supervision (made by :meth:`Receivers.loop`)."""

    def __init__(
        self,
        name: str,
        body: LoopBody,
        log: logging.Logger,
        settings: ReceiveSettings,
        *,
        describe: Describe = _describe,
        on_stop: Callable[[ReceiveLoop], None] | None = None,
    ) -> None:
        self.name = name
        self._body = body
        self._log = log
        self._settings = settings
        self._describe = describe
        self._on_stop = on_stop
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._failing_since: float | None = None
        self._last_failure: float | None = None
        self._last_error = ""
        self._last_warned = 0.0

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop's task (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=self.name)
            self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task is self._task:  # not through stop(): cancelled by someone else; /healthz says down
            self._log.error(
                "receiving loop stopped from outside; the adapter is down", extra={"loop": self.name}
            )

    async def stop(self) -> None:
        """Cancel the loop and wait for it; the desk stops watching it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._on_stop is not None:
            self._on_stop(self)

    def status(self) -> LoopStatus:
        """The loop's state for ``/healthz`` (a loop not started, or whose task ended, is not running)."""
        return LoopStatus(
            running=self._task is not None and not self._task.done(),
            failures=self._failures,
            failing_since=self._failing_since,
            last_failure=self._last_failure,
            last_error=self._last_error,
        )

    # -- what the body reports -------------------------------------------------------------------

    def ok(self) -> None:
        """A round worked: the failure streak (if any) ends, and its end is logged."""
        if self._failures:
            self._log.info(
                "receiving again",
                extra={
                    "loop": self.name,
                    "failures": self._failures,
                    "failed_for_s": round(self._settings.clock() - (self._failing_since or 0.0), 2),
                },
            )
        self._failures = 0
        self._failing_since = self._last_failure = None
        self._last_error = ""

    async def failed(self, what: str, error: BaseException | str, *, wait: float | None = None) -> None:
        """A round failed: record it, warn (once per streak, then every ``warn_every`` s), then wait
        the backoff (or ``wait`` seconds, when the platform said how long)."""
        self._record(error)
        delay = self._backoff() if wait is None else wait
        self._warn(what, delay)
        await asyncio.sleep(delay)

    # -- internals -------------------------------------------------------------------------------

    def _record(self, error: BaseException | str) -> None:
        now = self._settings.clock()
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = now
        self._last_failure = now
        self._last_error = error if isinstance(error, str) else self._describe(error)

    def _backoff(self) -> float:
        s = self._settings
        exponent = min(self._failures - 1, 30)
        grown: float = s.backoff_first * 2**exponent * random.uniform(0.8, 1.2)
        return min(s.backoff_max, grown)

    def _warn(self, what: str, delay: float) -> None:
        now = self._settings.clock()
        first = self._failures == 1
        if not first and now - self._last_warned < self._settings.warn_every:
            self._log.debug(what, extra={"loop": self.name, "error": self._last_error})
            return
        self._last_warned = now
        self._log.warning(
            what if first else f"{what} (still failing)",
            extra={
                "loop": self.name,
                "error": self._last_error,
                "failures": self._failures,
                "failing_for_s": round(now - (self._failing_since or now), 2),
                "retry_in_s": round(delay, 2),
            },
        )

    async def _supervise(self) -> None:
        while True:
            try:
                await self._body(self)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._record(exc)
                self._log.error(
                    "receiving loop crashed; restarting it",
                    extra={
                        "loop": self.name,
                        "error": self._last_error,
                        # frames only: the exception's text (which may quote a URL with a token) is
                        # in ``error``, through the adapter's describe()
                        "traceback": "".join(traceback.format_tb(exc.__traceback__))[-3000:],
                        "failures": self._failures,
                    },
                )
            else:
                self._record("the receiving loop ended")
                self._log.error("receiving loop ended unexpectedly; restarting it", extra={"loop": self.name})
            await asyncio.sleep(self._backoff())


@dataclass
class Receivers:
    """The receiving loops of one adapter plugin (its ``services.receivers``), which the desk watches."""

    plugin: str = ""
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("relaydesk.receiving"))
    settings: ReceiveSettings = field(default_factory=ReceiveSettings)
    loops: dict[str, ReceiveLoop] = field(default_factory=dict)

    def loop(self, name: str, body: LoopBody, *, describe: Describe = _describe) -> ReceiveLoop:
        """A new loop running ``body`` (start it with :meth:`ReceiveLoop.start`); it is reported until stopped.

        ``describe`` turns an exception into the text that is logged and shown on ``/healthz``: an
        adapter whose errors may quote a secret (a token in a URL) passes its scrubbing describe.
        """
        made = ReceiveLoop(
            f"{self.plugin}-{name}" if self.plugin else name,
            body,
            self.log,
            self.settings,
            describe=describe,
            on_stop=lambda stopped: self._forget(name, stopped),
        )
        self.loops[name] = made
        return made

    def _forget(self, name: str, stopped: ReceiveLoop) -> None:
        if self.loops.get(name) is stopped:
            del self.loops[name]

    def report(self) -> tuple[ReceiveState, dict[str, dict[str, object]]]:
        """The adapter's state (its worst loop's) and each loop's state and streak, for ``/healthz``."""
        worst = ReceiveState.OK
        loops: dict[str, dict[str, object]] = {}
        for name, running in self.loops.items():
            status = running.status()
            state = status.state(self.settings)
            worst = max(worst, state, key=lambda s: s.severity)
            entry: dict[str, object] = {"state": state.value, "running": status.running}
            if status.failures:
                entry.update(
                    failures=status.failures,
                    failing_for_s=round(status.failing_for, 2),
                    last_error=status.last_error,
                )
            loops[name] = entry
        return worst, loops
