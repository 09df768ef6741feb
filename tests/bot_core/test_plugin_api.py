"""The plugin API: a complete useful plugin in under 40 lines, propagation, isolation, state, schedule."""

from __future__ import annotations

import inspect

from pydantic import BaseModel

from bot_core.api import (
    HANDLED,
    AgentCommand,
    Context,
    CustomerMessage,
    Plugin,
    on_command,
    on_customer_message,
    on_schedule,
)
from bot_core.events import ScheduledFire
from tests.bot_core.test_relay_loop import doubles
from tests.conftest import DOUBLES_YAML, DeskFactory


class OpeningHours(Plugin["OpeningHours.Config"]):
    """Answers 'when are you open', lets agents change the hours, and follows up after a reply."""

    name = "opening_hours"

    class Config(BaseModel):
        hours: str = "Mon-Fri 9:00-17:00"
        follow_up_after: float = 0.2

    @on_customer_message(matches=r"(?i)\bopen\b|hours|营业时间")
    async def answer(self, ctx: Context, msg: CustomerMessage) -> object:
        hours = await ctx.global_state.get("hours", self.config.hours)
        await ctx.reply(f"We are open {hours}.")
        await ctx.tag("hours")
        await ctx.schedule("follow_up", delay=self.config.follow_up_after)
        return HANDLED

    @on_command("hours", usage="<text>", help="set the opening hours")
    async def set_hours(self, ctx: Context, cmd: AgentCommand) -> object:
        await ctx.global_state.set("hours", cmd.raw)
        await ctx.notice(f"Opening hours are now: {cmd.raw}")
        return HANDLED

    @on_schedule("follow_up")
    async def follow_up(self, ctx: Context, fire: ScheduledFire) -> None:
        await ctx.reply("Did that answer your question?")


class SeesEverything(Plugin):
    """Records the customer messages that reach it (to check propagation)."""

    name = "sees_everything"
    seen: list[str] = []

    @on_customer_message()
    async def record(self, ctx: Context, msg: CustomerMessage) -> None:
        type(self).seen.append(msg.text)


class Broken(Plugin):
    """A plugin whose handler always raises."""

    name = "broken"

    @on_customer_message()
    async def explode(self, ctx: Context, msg: CustomerMessage) -> None:
        raise ValueError("bug in a third-party plugin")


YAML = (
    DOUBLES_YAML
    + """\
  - broken: {use: "tests.bot_core.test_plugin_api:Broken"}
  - hours: {use: "tests.bot_core.test_plugin_api:OpeningHours", config: {follow_up_after: 0.2}}
  - spy: {use: "tests.bot_core.test_plugin_api:SeesEverything"}
"""
)


def test_a_complete_plugin_fits_in_40_lines() -> None:
    lines = [line for line in inspect.getsource(OpeningHours).splitlines() if line.strip()]
    assert len(lines) < 40


async def test_plugin_answers_stops_propagation_and_follows_up(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    SeesEverything.seen = []
    desk = await make_desk(sqlite_url, YAML)
    channel, workspace = doubles(desk)

    await channel.customer_writes("u1", "When are you open?")
    await channel.sent.wait_for(lambda items: len(items) == 2)  # the answer, then the scheduled follow-up
    assert channel.texts_to("u1") == ["We are open Mon-Fri 9:00-17:00.", "Did that answer your question?"]
    room = workspace.room_of("u1")
    # the room shows the question, then what the bot answered; the broken plugin did not stop anything
    assert workspace.texts(room.room_id, "customer_message") == ["When are you open?"]
    assert any("answered: We are open" in t for t in workspace.texts(room.room_id, "notice"))
    assert desk.metrics.handler_errors.labels("broken", "customer_message")._value.get() == 1

    await channel.customer_writes("u1", "I need a refund")
    await workspace.posts.wait_for(lambda _: "I need a refund" in workspace.texts(room.room_id))
    assert await desk.bus.wait_idle(10)
    assert SeesEverything.seen == ["I need a refund"]  # HANDLED kept the first message from later plugins

    await workspace.agent_writes(room.room_id, "!hours Mon-Sat 8:00-20:00")
    await workspace.posts.wait_for(lambda _: any("now: Mon-Sat" in t for t in workspace.texts(room.room_id)))
    await channel.customer_writes("u2", "opening hours?")
    await channel.sent.wait_for(lambda items: "We are open Mon-Sat 8:00-20:00." in [d.text for d in items])

    def u2_card_tags() -> tuple[str, ...]:
        room = next((r for r in workspace.rooms.values() if r.conversation.external_user_id == "u2"), None)
        return room.card.tags if room and room.card else ()

    await workspace.posts.wait_for(lambda _: "hours" in u2_card_tags())
