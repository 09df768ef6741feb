"""Receiving loops under supervision, and what ``/healthz`` and ``/metrics`` say about them.

A channel double pulls "rounds" the test hands it (ok, a failure, a crash, the body returning), on a
clock the test sets, so the degraded and down thresholds are crossed without waiting for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, cast

import aiohttp
import pytest

from bot_core.desk import Desk
from bot_core.receiving import LoopStatus, ReceiveLoop, ReceiveSettings, ReceiveState
from bot_core.testing import MemoryChannel
from bridge.workspaces.matrix.devserver import free_port
from tests.conftest import DeskFactory


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class PullingChannel(MemoryChannel):
    """A channel double with a receiving loop: each round does what the test put in ``rounds``."""

    name = "pulling"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rounds: asyncio.Queue[str] = asyncio.Queue()
        self.done = 0  # rounds handled (a crash or an end counts once the loop runs its body again)
        self.bodies = 0  # how often the loop's body was started
        self.changed = asyncio.Condition()
        self.pull: ReceiveLoop | None = None

    async def ready(self) -> None:
        """Start the receiving loop."""
        self.pull = self.services.receivers.loop("pull", self._pull)
        self.pull.start()

    async def stop(self) -> None:
        """Stop the receiving loop."""
        if self.pull is not None:
            await self.pull.stop()

    async def _pull(self, loop: ReceiveLoop) -> None:
        self.bodies += 1
        await self._tick()
        while True:
            outcome = await self.rounds.get()
            if outcome == "crash":
                raise RuntimeError("a bug in the loop")
            if outcome == "end":
                return
            if outcome == "fail":
                await loop.failed("pulling failed", ConnectionError("the platform answered garbage"))
                await self._tick()
            else:
                loop.ok()
                await self._tick()

    async def _tick(self) -> None:
        self.done += 1
        async with self.changed:
            self.changed.notify_all()

    async def play(self, outcome: str, *, bodies: int | None = None) -> None:
        """Hand the loop one round and wait until it was handled (or the body was started ``bodies`` times)."""
        target = self.done + 1
        await self.rounds.put(outcome)
        async with self.changed:
            await asyncio.wait_for(
                self.changed.wait_for(
                    lambda: self.bodies >= bodies if bodies is not None else self.done >= target
                ),
                10,
            )


YAML = """
plugins:
  - pulling: {use: "tests.bot_core.test_receiving:PullingChannel"}
  - desk: {use: "bot_core.testing:MemoryWorkspace"}
"""


def test_a_loop_status_is_ok_degraded_or_down_by_how_long_it_has_been_failing() -> None:
    settings = ReceiveSettings(degraded_after=60, down_after=300)
    assert LoopStatus(running=True).state(settings) is ReceiveState.OK

    def failing(last_failure: float) -> LoopStatus:
        return LoopStatus(running=True, failures=3, failing_since=0.0, last_failure=last_failure)

    assert failing(59.0).state(settings) is ReceiveState.OK  # a blip
    assert failing(60.0).state(settings) is ReceiveState.DEGRADED
    assert failing(299.0).state(settings) is ReceiveState.DEGRADED
    assert failing(300.0).state(settings) is ReceiveState.DOWN
    assert LoopStatus(running=False).state(settings) is ReceiveState.DOWN  # its task is gone


async def _health(http: aiohttp.ClientSession, desk: Desk) -> tuple[int, dict[str, Any]]:
    async with http.get(f"http://127.0.0.1:{desk.port}/healthz") as resp:
        return resp.status, await resp.json()


async def _gauge(http: aiohttp.ClientSession, desk: Desk) -> str:
    async with http.get(f"http://127.0.0.1:{desk.port}/metrics") as resp:
        text = await resp.text()
    return next(line for line in text.splitlines() if line.startswith("relaydesk_receiving_state{"))


async def test_healthz_says_ok_degraded_then_down_with_503_and_ok_again_once_the_loop_recovers(
    sqlite_url: str, make_desk: DeskFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    settings = ReceiveSettings(
        degraded_after=60, down_after=300, backoff_first=0.01, backoff_max=0.05, clock=clock
    )
    desk = await make_desk(
        sqlite_url, YAML, serve_http=True, http_port=free_port(), receive_settings=settings
    )
    channel = cast(PullingChannel, desk.plugins["pulling"])
    async with aiohttp.ClientSession() as http:
        status, health = await _health(http, desk)
        assert status == 200 and health["status"] == "ok"
        assert health["receiving"] == {
            "pulling": {"state": "ok", "loops": {"pull": {"state": "ok", "running": True}}}
        }

        for _ in range(3):  # a streak begins: one warning, not one per failure
            await channel.play("fail")
        clock.now += 61
        await channel.play("fail")  # failing for 61 s: degraded, still 200
        status, health = await _health(http, desk)
        assert status == 200 and health["status"] == "degraded"
        pull = health["receiving"]["pulling"]["loops"]["pull"]
        assert pull["state"] == "degraded" and pull["failures"] == 4 and pull["failing_for_s"] == 61
        assert pull["last_error"] == "ConnectionError: the platform answered garbage"
        assert await _gauge(http, desk) == 'relaydesk_receiving_state{adapter="pulling",loop="pull"} 1.0'

        clock.now += 240
        await channel.play("fail")  # failing for 301 s: down, 503 so that an orchestrator restarts us
        status, health = await _health(http, desk)
        assert status == 503 and health["status"] == "down"
        assert health["receiving"]["pulling"]["state"] == "down"
        assert await _gauge(http, desk) == 'relaydesk_receiving_state{adapter="pulling",loop="pull"} 2.0'

        await channel.play("ok")
        status, health = await _health(http, desk)
        assert status == 200 and health["status"] == "ok"
        assert await _gauge(http, desk) == 'relaydesk_receiving_state{adapter="pulling",loop="pull"} 0.0'

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name.endswith("pulling")]
    # one when the streak began, then at most one per warn_every (60 s of the clock)
    assert [r.getMessage() for r in warnings] == [
        "pulling failed",
        "pulling failed (still failing)",
        "pulling failed (still failing)",
    ]
    assert any(r.getMessage() == "receiving again" and r.__dict__["failures"] == 5 for r in caplog.records)


async def test_a_loop_that_crashes_or_ends_is_logged_and_started_again(
    sqlite_url: str, make_desk: DeskFactory, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ReceiveSettings(backoff_first=0.01, backoff_max=0.05)
    desk = await make_desk(sqlite_url, YAML, receive_settings=settings)
    channel = cast(PullingChannel, desk.plugins["pulling"])
    await channel.play("ok", bodies=1)

    await channel.play("crash", bodies=2)
    crash = next(r for r in caplog.records if r.getMessage() == "receiving loop crashed; restarting it")
    assert crash.levelno == logging.ERROR
    assert crash.__dict__["error"] == "RuntimeError: a bug in the loop"
    assert "in _pull" in crash.__dict__["traceback"]  # where it happened

    await channel.play("end", bodies=3)
    assert any(r.getMessage() == "receiving loop ended unexpectedly; restarting it" for r in caplog.records)

    await channel.play("ok")  # the restarted loop receives again, and is ok once a round worked
    health = await desk.health()
    assert health["status"] == "ok" and health["receiving"]["pulling"]["state"] == "ok"


async def test_a_stopped_adapter_is_no_longer_reported(sqlite_url: str, make_desk: DeskFactory) -> None:
    desk = await make_desk(sqlite_url, YAML)
    channel = cast(PullingChannel, desk.plugins["pulling"])
    assert list((await desk.health())["receiving"]) == ["pulling"]
    await channel.stop()
    assert (await desk.health())["receiving"] == {}


async def test_a_loop_task_cancelled_from_outside_is_logged_and_reported_down(
    sqlite_url: str, make_desk: DeskFactory, caplog: pytest.LogCaptureFixture
) -> None:
    desk = await make_desk(sqlite_url, YAML)
    channel = cast(PullingChannel, desk.plugins["pulling"])
    await channel.play("ok", bodies=1)
    task = next(t for t in asyncio.all_tasks() if t.get_name() == "pulling-pull")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    health = await desk.health()
    assert health["status"] == "down"
    assert health["receiving"]["pulling"]["loops"]["pull"] == {"state": "down", "running": False}
    assert any(r.getMessage().startswith("receiving loop stopped from outside") for r in caplog.records)
