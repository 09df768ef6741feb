"""Keyed scheduling on a real desk: idempotent ``ctx.schedule``, ``ctx.cancel``, and periodic jobs whose
slots fire once across workers and keep their clock across restarts.

The desks run on a clock the test moves (``scheduler_clock``) and poll only once at start
(``scheduler_poll`` of an hour): each scan is the test's own ``desk.scheduler.tick()``, so nothing
waits for real time.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from bot_core import (
    HANDLED,
    AgentMessage,
    CustomerMessage,
    Plugin,
    on_agent_message,
    on_customer_message,
    on_schedule,
)
from bot_core.context import Context
from bot_core.desk import Desk
from bot_core.events import ScheduledFire, dump_event, utcnow
from bot_core.scheduler import Scheduler
from storage.bus.redis_streams import RedisStreamsBus
from storage.models import InboundReceipt, PeriodicRun, ScheduledTask
from tests.bot_core.test_relay_loop import doubles
from tests.conftest import DOUBLES_YAML, DeskFactory

# 2026-03-28 is the last Saturday before Berlin moves to summer time (Sunday 29 March, 02:00)
T0 = datetime(2026, 3, 28, 10, 0, tzinfo=UTC)


class Clock:
    """The time the test says it is."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


class Reminders(Plugin):
    """``remind <key|-> <seconds>`` schedules a reminder (``-``: no key), ``cancel <key>`` cancels one;
    two periodic jobs record their slots."""

    name = "reminders"
    ran: ClassVar[list[tuple[str, str]]] = []

    @on_customer_message(matches=r"^remind ")
    async def remind(self, ctx: Context, msg: CustomerMessage) -> object:
        _, key, seconds = msg.text.split()
        at = T0 + timedelta(seconds=float(seconds))
        await ctx.schedule("remind", key=None if key == "-" else key, at=at, data={"what": msg.text})
        return HANDLED

    @on_customer_message(matches=r"^cancel ")
    async def cancel(self, ctx: Context, msg: CustomerMessage) -> object:
        await ctx.reply(f"cancelled: {await ctx.cancel(msg.text.split()[1])}")
        return HANDLED

    @on_schedule("remind")
    async def reminder(self, ctx: Context, fire: ScheduledFire) -> None:
        await ctx.reply(f"reminder: {fire.data['what']}")

    @on_schedule("morning", cron="0 9 * * *", timezone="Europe/Berlin")
    async def morning(self, ctx: Context, fire: ScheduledFire) -> None:
        type(self).ran.append(("morning", fire.data["slot"]))

    @on_schedule("hourly", every=3600)
    async def hourly(self, ctx: Context, fire: ScheduledFire) -> None:
        type(self).ran.append(("hourly", fire.data["slot"]))


class FollowUp(Plugin):
    """The README's example: asks whether everything is solved when nobody answered for 10 minutes."""

    name = "follow_up"

    @on_customer_message()
    async def remember(self, ctx: Context, msg: CustomerMessage) -> None:
        await ctx.schedule("follow_up", key="follow_up", delay=600, data={"text": msg.text})

    @on_agent_message()
    async def answered(self, ctx: Context, msg: AgentMessage) -> None:
        await ctx.cancel("follow_up")

    @on_schedule("follow_up")
    async def follow_up(self, ctx: Context, fire: ScheduledFire) -> None:
        await ctx.reply("Is there anything else we can do for you?")


YAML = DOUBLES_YAML + '  - reminders: {use: "tests.bot_core.test_scheduler:Reminders"}\n'


async def _desk(make_desk: DeskFactory, url: str, clock: Clock, **kwargs: object) -> Desk:
    desk = await make_desk(url, YAML, scheduler_clock=clock, scheduler_poll=3600, **kwargs)
    await _start_scan_done(desk)
    return desk


async def _start_scan_done(desk: Desk) -> None:
    """Wait for the scan the desk makes at start, so it cannot run on a clock the test moved since."""
    await asyncio.wait_for(desk.scheduler.first_scan_done.wait(), 10)


async def _writes(desk: Desk, text: str, message_id: str) -> None:
    channel, _ = doubles(desk)
    await channel.customer_writes("u1", text, message_id=message_id)
    assert await desk.bus.wait_idle(10)


async def _scan(desk: Desk, clock: Clock, at: datetime) -> int:
    clock.at = at
    fired = await desk.scheduler.tick()
    assert await desk.bus.wait_idle(10)
    return fired


async def _replay(desk: Desk, text: str, message_id: str) -> None:
    """The event handled again, as after a crash before its receipt was marked processed."""
    await InboundReceipt.filter(source="customers", external_id=message_id).update(processed=False)
    await _writes(desk, text, message_id)


def _reminders(desk: Desk) -> list[str]:
    channel, _ = doubles(desk)
    return [t for t in channel.texts_to("u1") if t.startswith("reminder:")]


async def _delivered(desk: Desk, count: int) -> list[str]:
    """What the customer received, once ``count`` deliveries reached them (replies go through the outbox)."""
    channel, _ = doubles(desk)
    await channel.sent.wait_for(lambda _: len(channel.texts_to("u1")) >= count)
    return channel.texts_to("u1")


async def test_a_replayed_event_schedules_once(database_url: str, make_desk: DeskFactory) -> None:
    clock = Clock(T0)
    desk = await _desk(make_desk, database_url, clock)
    await _writes(desk, "remind - 60", "m1")  # no key: derived from the event
    await _writes(desk, "remind k 120", "m2")
    await _replay(desk, "remind - 60", "m1")
    await _replay(desk, "remind k 120", "m2")
    assert await ScheduledTask.all().count() == 2
    assert await _scan(desk, clock, T0 + timedelta(seconds=121)) == 2
    assert sorted(await _delivered(desk, 2)) == ["reminder: remind - 60", "reminder: remind k 120"]
    # replayed once more after both fired: still nothing new
    await _replay(desk, "remind - 60", "m1")
    await _replay(desk, "remind k 120", "m2")
    assert await _scan(desk, clock, T0 + timedelta(seconds=500)) == 0
    assert await ScheduledTask.filter(fired_at=None).count() == 0


async def test_scheduling_a_key_again_moves_its_one_task(database_url: str, make_desk: DeskFactory) -> None:
    clock = Clock(T0)
    desk = await _desk(make_desk, database_url, clock)
    await _writes(desk, "remind k 60", "m1")
    await _writes(desk, "remind k 600", "m2")
    assert await ScheduledTask.filter(key="k").count() == 1
    assert await _scan(desk, clock, T0 + timedelta(seconds=61)) == 0  # moved: not due at the first time
    assert await _scan(desk, clock, T0 + timedelta(seconds=601)) == 1
    assert await _delivered(desk, 1) == ["reminder: remind k 600"]
    # the same key after it ran arms it again
    await _writes(desk, "remind k 900", "m3")
    assert await _scan(desk, clock, T0 + timedelta(seconds=901)) == 1
    assert await _delivered(desk, 2) == ["reminder: remind k 600", "reminder: remind k 900"]


async def test_a_cancelled_task_never_fires(database_url: str, make_desk: DeskFactory) -> None:
    clock = Clock(T0)
    desk = await _desk(make_desk, database_url, clock)
    await _writes(desk, "remind a 60", "m1")
    await _writes(desk, "cancel a", "m2")
    await _writes(desk, "cancel a", "m3")
    assert await _delivered(desk, 2) == ["cancelled: True", "cancelled: False"]
    assert await _scan(desk, clock, T0 + timedelta(seconds=61)) == 0

    # cancelled while its fire waits on the bus (published by a scan, not handled yet)
    await _writes(desk, "remind b 120", "m4")
    published: list[ScheduledFire] = []

    async def hold(fire: ScheduledFire) -> None:
        published.append(fire)

    assert await Scheduler(hold, now=lambda: T0 + timedelta(seconds=121)).fire_due() == 1
    await _writes(desk, "cancel b", "m5")
    for fire in published:
        await desk.bus.publish(fire.conversation_key(), dump_event(fire))
    assert await desk.bus.wait_idle(10)
    await _writes(desk, "cancel b", "m6")  # its answer comes after anything the dropped fire could send
    assert await _delivered(desk, 4) == [
        "cancelled: True",
        "cancelled: False",
        "cancelled: True",
        "cancelled: False",
    ]
    assert _reminders(desk) == []


async def test_a_cron_job_fires_at_its_local_time_across_daylight_saving(
    database_url: str, make_desk: DeskFactory
) -> None:
    Reminders.ran = []
    clock = Clock(T0)  # Saturday 11:00 in Berlin: today's 09:00 has passed
    desk = await _desk(make_desk, database_url, clock)
    await _scan(desk, clock, datetime(2026, 3, 29, 6, 59, 59, tzinfo=UTC))
    assert [r for r in Reminders.ran if r[0] == "morning"] == []
    # Sunday 09:00 in Berlin is 07:00 UTC: summer time began at 02:00
    await _scan(desk, clock, datetime(2026, 3, 29, 7, 0, tzinfo=UTC))
    await _scan(desk, clock, datetime(2026, 3, 30, 6, 59, tzinfo=UTC))
    await _scan(desk, clock, datetime(2026, 3, 30, 7, 0, 1, tzinfo=UTC))
    assert [r for r in Reminders.ran if r[0] == "morning"] == [
        ("morning", "2026-03-29T07:00:00+00:00"),
        ("morning", "2026-03-30T07:00:00+00:00"),
    ]


async def test_two_desks_on_one_database_fire_a_slot_once(
    postgres_url: str, redis_prefix: tuple[str, str], make_desk: DeskFactory
) -> None:
    Reminders.ran = []
    redis_url, prefix = redis_prefix
    clock = Clock(T0)
    desks = [
        await _desk(
            make_desk, postgres_url, clock, redis=redis_url, bus=RedisStreamsBus(redis_url, prefix=prefix)
        )
        for _ in range(2)
    ]
    for step in range(1, 4):
        clock.at = T0 + timedelta(hours=step, seconds=1)
        published = await asyncio.gather(*(d.scheduler.tick() for d in desks for _ in range(3)))
        assert sum(published) == 1  # one scan of one desk won the slot; the others saw it taken
        for desk in desks:
            assert await desk.bus.wait_idle(10)
    slots = [(T0 + timedelta(hours=h)).isoformat() for h in range(1, 4)]
    assert Reminders.ran == [("hourly", slot) for slot in slots]


async def test_a_restart_keeps_the_clock_and_fires_missed_slots_once(
    database_url: str, make_desk: DeskFactory
) -> None:
    Reminders.ran = []
    clock = Clock(T0)
    desk = await _desk(make_desk, database_url, clock)  # the hourly job is first seen at T0
    assert await _scan(desk, clock, T0 + timedelta(hours=1)) == 1
    await desk.stop()

    clock.at = T0 + timedelta(hours=1, minutes=30)  # restarted half-way to the next slot
    desk = await _desk(make_desk, database_url, clock)
    assert await _scan(desk, clock, T0 + timedelta(hours=2, seconds=-1)) == 0
    assert await _scan(desk, clock, T0 + timedelta(hours=2)) == 1  # from the stored run, not the restart
    await desk.stop()

    clock.at = T0 + timedelta(hours=5, minutes=10)  # down for three slots
    desk = await _desk(make_desk, database_url, clock)  # its start fires the latest missed slot once
    assert await desk.bus.wait_idle(10)
    assert await _scan(desk, clock, T0 + timedelta(hours=5, minutes=59)) == 0
    assert await _scan(desk, clock, T0 + timedelta(hours=6)) == 1
    hours = [(T0 + timedelta(hours=h)).isoformat() for h in (1, 2, 5, 6)]
    assert Reminders.ran == [("hourly", h) for h in hours]
    stored = await PeriodicRun.get(plugin="reminders", job="hourly")
    assert stored.last_slot_at == T0 + timedelta(hours=6)


async def test_the_readme_follow_up_waits_for_the_last_message_and_an_agent_answer_cancels_it(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    clock = Clock(utcnow())
    yaml_text = DOUBLES_YAML + '  - follow_up: {use: "tests.bot_core.test_scheduler:FollowUp"}\n'
    desk = await make_desk(sqlite_url, yaml_text, scheduler_clock=clock, scheduler_poll=3600)
    await _start_scan_done(desk)
    channel, workspace = doubles(desk)
    await _writes(desk, "hello", "m1")
    await _writes(desk, "anyone there?", "m2")
    assert await ScheduledTask.all().count() == 1  # the second message moved the one follow-up
    assert await _scan(desk, clock, utcnow() + timedelta(seconds=601)) == 1
    await channel.sent.wait_for(lambda items: len(items) == 1)
    assert channel.texts_to("u1") == ["Is there anything else we can do for you?"]

    await _writes(desk, "one more thing", "m3")
    await workspace.agent_writes(workspace.room_of("u1").room_id, "Sure, tell me.")
    await channel.sent.wait_for(lambda items: len(items) == 2)
    assert await desk.bus.wait_idle(10)
    assert await _scan(desk, clock, utcnow() + timedelta(seconds=1200)) == 0
    assert channel.texts_to("u1") == ["Is there anything else we can do for you?", "Sure, tell me."]
