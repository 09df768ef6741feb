"""The supervisor plugin on a real desk: alerts post once when crossed and once when cleared (restarts
included), and the daily digest posts once a day at the team's local time across a daylight-saving change,
with its figures and a PNG chart of the right size."""

from __future__ import annotations

import asyncio
import struct
from datetime import UTC, datetime, timedelta
from typing import cast

from bot_core.api import HANDLED, Context, CustomerMessage, Handled, LiveFigures, Plugin, on_customer_message
from bot_core.desk import Desk
from bot_core.events import utcnow
from bot_core.receiving import ReceiveSettings
from bot_core.testing import MemoryWorkspace
from plugins.supervisor import SupervisorPlugin
from plugins.supervisor.alerts import checks
from plugins.supervisor.config import AlertSettings
from plugins.supervisor.digest import CHART_SIZE
from storage.bus.redis_streams import RedisStreamsBus
from storage.db import close_db, init_db
from tests.bot_core.test_analytics import scripted_day
from tests.bot_core.test_receiving import YAML as RECEIVING_YAML
from tests.bot_core.test_receiving import FakeClock, PullingChannel
from tests.bot_core.test_relay_loop import doubles
from tests.bot_core.test_scheduler import Clock
from tests.conftest import DOUBLES_YAML, DeskFactory


class Hands(Plugin):
    """``help`` puts the conversation in the support queue (as the FAQ's hand-over does)."""

    name = "hands"

    @on_customer_message(matches=r"^help")
    async def hand_over(self, ctx: Context, msg: CustomerMessage) -> Handled:
        await ctx.queue(team="support")
        return HANDLED


ALERTS_YAML = (
    DOUBLES_YAML
    + '  - hands: {use: "tests.plugins.supervisor.test_supervisor:Hands"}\n'
    + """  - supervisor:
      use: "plugins.supervisor:SupervisorPlugin"
      config:
        teams: {support: {timezone: Europe/Berlin}}
        alerts: {queue_length: 2, oldest_wait: 1h, first_response_breaches: null, delivery_failures: null}
        digest: {enabled: false}
"""
)


def digest_yaml(teams: str) -> str:
    """Doubles and a supervisor posting digests at 08:00 local, no alerts."""
    return DOUBLES_YAML + (
        "  - supervisor:\n"
        '      use: "plugins.supervisor:SupervisorPlugin"\n'
        "      config:\n"
        f"        teams: {teams}\n"
        "        alerts: {queue_length: null, oldest_wait: null, first_response_breaches: null,"
        " delivery_failures: null, adapter_down: false}\n"
        '        digest: {at: "08:00"}\n'
    )


async def _start(make_desk: DeskFactory, url: str, yaml_text: str, clock: Clock) -> Desk:
    desk = await make_desk(url, yaml_text, scheduler_clock=clock, scheduler_poll=3600)
    await asyncio.wait_for(desk.scheduler.first_scan_done.wait(), 10)
    assert await desk.wait_settled(10)
    return desk


async def _tick(desk: Desk, clock: Clock, at: datetime) -> None:
    clock.at = at
    await desk.scheduler.tick()
    assert await desk.wait_settled(10)


def _ops(desk: Desk, channel: str) -> list[str]:
    return doubles(desk)[1].channels.get(channel, [])


async def test_a_queue_alert_is_posted_once_when_crossed_and_once_when_cleared(
    database_url: str, make_desk: DeskFactory
) -> None:
    t0 = utcnow()
    clock = Clock(t0)
    desk = await _start(make_desk, database_url, ALERTS_YAML, clock)
    channel, workspace = doubles(desk)
    for user in ("u1", "u2"):
        await channel.customer_writes(user, "help, my order is late")
    assert await desk.wait_settled(10)

    await _tick(desk, clock, t0 + timedelta(seconds=61))
    posts = _ops(desk, "ops-support")
    assert len(posts) == 1
    assert posts[0].startswith("🔴 support: 2 conversations waiting in the queue (threshold 2).")
    rooms = sorted(r.room_id for r in workspace.rooms.values())
    assert sorted(line.removeprefix("• https://matrix.to/#/") for line in posts[0].splitlines()[1:]) == rooms

    await _tick(desk, clock, t0 + timedelta(seconds=121))
    assert len(_ops(desk, "ops-support")) == 1  # still crossed: nothing more
    await desk.stop()

    desk = await _start(make_desk, database_url, ALERTS_YAML, clock)  # a restart remembers it was said
    await _tick(desk, clock, t0 + timedelta(seconds=181))
    assert _ops(desk, "ops-support") == []
    channel, workspace = doubles(desk)
    await workspace.agent_writes(rooms[0], "Hello, I am on it", agent="@alice")
    assert await desk.wait_settled(10)

    await _tick(desk, clock, t0 + timedelta(seconds=241))
    assert _ops(desk, "ops-support") == ["✅ support: the queue is down to 1 (threshold 2)."]
    await _tick(desk, clock, t0 + timedelta(seconds=301))
    assert len(_ops(desk, "ops-support")) == 1

    await channel.customer_writes("u3", "help please")  # crossed again: a new alert, posted once
    assert await desk.wait_settled(10)
    await _tick(desk, clock, t0 + timedelta(seconds=361))
    await _tick(desk, clock, t0 + timedelta(seconds=421))
    posts = _ops(desk, "ops-support")
    assert [p.splitlines()[0] for p in posts][1:] == [
        "🔴 support: 2 conversations waiting in the queue (threshold 2)."
    ]


def test_an_adapter_down_and_back() -> None:
    settings = AlertSettings(
        queue_length=None, oldest_wait=None, first_response_breaches=None, delivery_failures=None
    )
    down = checks("support", LiveFigures(), {"telegram": "down", "matrix": "ok"}, settings)
    assert [(c.name, c.on) for c in down] == [("adapter_down:matrix", False), ("adapter_down:telegram", True)]
    assert down[1].crossed == "🔴 telegram is down: relaydesk cannot receive from it (see /healthz)."
    back = checks("support", LiveFigures(), {"telegram": "degraded"}, settings)
    assert (back[0].on, back[0].cleared) == (False, "✅ telegram is receiving again (degraded).")


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_the_digest_posts_once_a_day_at_eight_local_across_daylight_saving(
    database_url: str, make_desk: DeskFactory
) -> None:
    yaml_text = digest_yaml("{support: {timezone: Europe/Berlin}}")
    clock = Clock(datetime(2026, 3, 28, 5, 0, tzinfo=UTC))  # Saturday 06:00 in Berlin (winter time)
    desk = await _start(make_desk, database_url, yaml_text, clock)
    await _tick(desk, clock, datetime(2026, 3, 28, 6, 59, tzinfo=UTC))  # 07:59 local
    assert _ops(desk, "ops-support") == []
    await _tick(desk, clock, datetime(2026, 3, 28, 7, 0, tzinfo=UTC))  # 08:00 local
    await _tick(desk, clock, datetime(2026, 3, 28, 7, 15, tzinfo=UTC))
    await _tick(desk, clock, datetime(2026, 3, 28, 22, 0, tzinfo=UTC))
    assert [p.splitlines()[0] for p in _ops(desk, "ops-support")] == [
        "Daily digest, support: Friday 27 March 2026 (Europe/Berlin), against Friday 20 March"
    ]
    # Sunday: summer time since 02:00, so 08:00 local is 06:00 UTC
    await _tick(desk, clock, datetime(2026, 3, 29, 5, 59, tzinfo=UTC))
    assert len(_ops(desk, "ops-support")) == 1
    await _tick(desk, clock, datetime(2026, 3, 29, 6, 0, tzinfo=UTC))
    assert len(_ops(desk, "ops-support")) == 2
    assert _ops(desk, "ops-support")[1].startswith("Daily digest, support: Saturday 28 March 2026")
    images = doubles(desk)[1].images["ops-support"]
    assert [name for name, _ in images] == ["digest-2026-03-27.png", "digest-2026-03-28.png"]
    assert all(_png_size(png) == CHART_SIZE for _, png in images)
    await desk.stop()

    clock.at = datetime(2026, 3, 29, 9, 0, tzinfo=UTC)  # restarted later that day: its slot fires at start
    desk = await _start(make_desk, database_url, yaml_text, clock)
    await _tick(desk, clock, datetime(2026, 3, 30, 5, 45, tzinfo=UTC))  # Monday 07:45 local
    assert _ops(desk, "ops-support") == []
    await _tick(desk, clock, datetime(2026, 3, 30, 6, 0, tzinfo=UTC))
    assert [p.splitlines()[0] for p in _ops(desk, "ops-support")] == [
        "Daily digest, support: Sunday 29 March 2026 (Europe/Berlin), against Sunday 22 March"
    ]


async def test_the_digest_shows_yesterday_against_a_week_before(
    database_url: str, make_desk: DeskFactory
) -> None:
    await init_db(database_url)
    try:
        await scripted_day()  # Tuesday 1 December 2026 (UTC); nothing a week before
    finally:
        await close_db()
    clock = Clock(datetime(2026, 12, 2, 7, 0, tzinfo=UTC))
    desk = await _start(make_desk, database_url, digest_yaml("{}"), clock)
    plugin = cast(SupervisorPlugin, desk.plugins["supervisor"])
    assert await plugin.digests_now(datetime(2026, 12, 2, 8, 0, tzinfo=UTC)) == ["*"]
    assert await plugin.digests_now(datetime(2026, 12, 2, 9, 0, tzinfo=UTC)) == []  # once a day
    assert await desk.wait_settled(10)
    (text,) = _ops(desk, "ops")
    lines = text.splitlines()
    assert lines[0] == "Daily digest, all teams: Tuesday 01 December 2026 (UTC), against Tuesday 24 November"
    figures = {line.split(":")[0]: line.split(":", 1)[1].split() for line in lines[2:15]}
    assert figures["Conversations"] == ["5", "(0,", "↑)"]
    assert figures["Resolved by the bot"] == ["20%", "(n/a)"]
    assert figures["Queue wait (median)"] == ["3m", "00s", "(n/a)"]
    assert figures["CSAT"] == ["3.0/5", "(n/a)"]
    assert figures["FAQ answered"] == ["50%", "(n/a)"]
    assert lines[-1] == "  2 x Can I pay by invoice?"
    ((name, png),) = doubles(desk)[1].images["ops"]
    assert name == "digest-2026-12-01.png"
    assert _png_size(png) == CHART_SIZE


async def test_two_workers_post_the_digest_once(
    postgres_url: str, redis_prefix: tuple[str, str], make_desk: DeskFactory
) -> None:
    redis_url, prefix = redis_prefix
    yaml_text = digest_yaml("{support: {timezone: Europe/Berlin}}")
    clock = Clock(datetime(2026, 3, 28, 5, 0, tzinfo=UTC))
    desks = []
    for _ in range(2):
        desk = await make_desk(
            postgres_url,
            yaml_text,
            scheduler_clock=clock,
            scheduler_poll=3600,
            redis=redis_url,
            bus=RedisStreamsBus(redis_url, prefix=prefix),
        )
        await asyncio.wait_for(desk.scheduler.first_scan_done.wait(), 10)
        desks.append(desk)
    clock.at = datetime(2026, 3, 28, 7, 0, tzinfo=UTC)  # 08:00 in Berlin: both workers scan at once
    await asyncio.gather(*(d.scheduler.tick() for d in desks for _ in range(2)))
    for desk in desks:
        assert await desk.wait_settled(20)
    # and each worker, asked directly afterwards, finds the day done
    for desk in desks:
        assert await cast(SupervisorPlugin, desk.plugins["supervisor"]).digests_now(clock.at) == []
    for desk in desks:
        assert await desk.wait_settled(20)
    posts = [p for desk in desks for p in _ops(desk, "ops-support")]
    assert [p.splitlines()[0] for p in posts] == [
        "Daily digest, support: Friday 27 March 2026 (Europe/Berlin), against Friday 20 March"
    ]
    assert sum(len(doubles(d)[1].images.get("ops-support", [])) for d in desks) == 1


async def test_an_adapter_down_is_said_once_and_its_return_once(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    clock = FakeClock()
    settings = ReceiveSettings(
        degraded_after=60, down_after=300, backoff_first=0.01, backoff_max=0.05, clock=clock
    )
    yaml_text = RECEIVING_YAML + (
        "  - supervisor:\n"
        '      use: "plugins.supervisor:SupervisorPlugin"\n'
        "      config:\n"
        "        alerts: {queue_length: null, oldest_wait: null, first_response_breaches: null,"
        " delivery_failures: null}\n"
        "        digest: {enabled: false}\n"
    )
    desk = await make_desk(sqlite_url, yaml_text, receive_settings=settings)
    plugin = cast(SupervisorPlugin, desk.plugins["supervisor"])
    workspace = cast(MemoryWorkspace, desk.plugins["desk"])
    channel = cast(PullingChannel, desk.plugins["pulling"])
    # (a round handed in may wait until the next one is: every step plays two)
    await channel.play("ok")
    assert await plugin.alerts_now(utcnow()) == 0
    for _ in range(2):
        await channel.play("fail")
    clock.now += 301
    for _ in range(2):
        await channel.play("fail")  # failing for 301 s: down
    assert desk.receiving_states() == {"pulling": "down"}
    assert await plugin.alerts_now(utcnow()) == 1
    assert await plugin.alerts_now(utcnow()) == 0
    for _ in range(2):
        await channel.play("ok")
    assert await plugin.alerts_now(utcnow()) == 1
    assert await plugin.alerts_now(utcnow()) == 0
    assert await desk.wait_settled(10)
    assert workspace.channels["ops"] == [
        "🔴 pulling is down: relaydesk cannot receive from it (see /healthz).",
        "✅ pulling is receiving again (ok).",
    ]


async def test_an_adapter_down_on_another_worker_is_said_once_and_its_return_once(
    postgres_url: str, redis_prefix: tuple[str, str], make_desk: DeskFactory
) -> None:
    redis_url, prefix = redis_prefix
    clock = FakeClock()
    failing = ReceiveSettings(
        degraded_after=60, down_after=300, backoff_first=0.01, backoff_max=0.05, clock=clock
    )
    supervisor = (
        "  - supervisor:\n"
        '      use: "plugins.supervisor:SupervisorPlugin"\n'
        "      config:\n"
        "        alerts: {queue_length: null, oldest_wait: null, first_response_breaches: null,"
        " delivery_failures: null}\n"
        "        digest: {enabled: false}\n"
    )
    yaml_text = RECEIVING_YAML + supervisor  # both workers run the same plugins
    workers = [
        await make_desk(
            postgres_url,
            yaml_text,
            redis=redis_url,
            bus=RedisStreamsBus(redis_url, prefix=prefix),
            receive_settings=settings,
        )
        for settings in (failing, ReceiveSettings())
    ]
    a, b = workers
    pulling = cast(PullingChannel, a.plugins["pulling"])
    checker = cast(SupervisorPlugin, b.plugins["supervisor"])  # the check runs on the worker that is fine
    await pulling.play("ok")
    await a.adapter_health.report()
    assert await b.adapter_health.workers() == {
        "pulling": {a.adapter_health.worker: "ok", b.adapter_health.worker: "ok"}
    }
    assert await checker.alerts_now(utcnow()) == 0
    for _ in range(2):
        await pulling.play("fail")
    clock.now += 301
    for _ in range(2):
        await pulling.play("fail")  # failing for 301 s on worker a: down there
    await a.adapter_health.report()
    assert (a.receiving_states(), b.receiving_states()) == ({"pulling": "down"}, {"pulling": "ok"})
    assert await b.adapter_health.states() == {"pulling": "down"}  # b sees a's trouble
    assert await checker.alerts_now(utcnow()) == 1
    assert await checker.alerts_now(utcnow()) == 0
    assert (
        await cast(SupervisorPlugin, a.plugins["supervisor"]).alerts_now(utcnow()) == 0
    )  # said once, whoever checks
    for _ in range(2):
        await pulling.play("ok")
    await a.adapter_health.report()
    assert await checker.alerts_now(utcnow()) == 1
    assert await checker.alerts_now(utcnow()) == 0
    for desk in workers:
        assert await desk.wait_settled(20)
    posts = [
        p for desk in workers for p in cast(MemoryWorkspace, desk.plugins["desk"]).channels.get("ops", [])
    ]
    assert sorted(posts) == [
        "✅ pulling is receiving again (ok).",
        "🔴 pulling is down: relaydesk cannot receive from it (see /healthz).",
    ]
    # a worker that stops takes its reports with it: a worker shut down is not an adapter down
    # (what Desk.stop does first; the whole desk is not stopped here: both share this process's database)
    await a.adapter_health.stop()
    assert await b.adapter_health.workers() == {"pulling": {b.adapter_health.worker: "ok"}}
