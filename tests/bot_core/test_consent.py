"""Consent: marketing outreach needs an opt-in, an opt-out (STOP, an agent's !consent) stops it again,
and service replies in a conversation the customer started need no record."""

from __future__ import annotations

import itertools

from bot_core import Plugin, on_schedule
from bot_core.context import Context
from bot_core.desk import Desk
from bot_core.events import ScheduledFire, dump_event
from storage.models import Consent, Identity
from tests.bot_core.test_relay_loop import doubles
from tests.conftest import DOUBLES_YAML, DeskFactory

PROMO_YAML = DOUBLES_YAML + '  - promo: {use: "tests.bot_core.test_consent:Promo"}\n'
OFFER = "Spring sale: 20% off this week."
_slots = itertools.count()


class Promo(Plugin):
    """A global job writing a marketing message to one customer (outreach nobody asked for)."""

    name = "promo"
    seen: list[object] = []

    @on_schedule("promo")
    async def promo(self, ctx: Context, fire: ScheduledFire) -> None:
        out = await ctx.for_customer(int(fire.data["customer"]), topic="marketing")
        type(self).seen.append(await out.consent("marketing"))
        await out.reply(OFFER)


async def _promo(desk: Desk, customer_id: int) -> None:
    """Fire the promo job for ``customer_id`` (a new slot each time) and wait until it is all handled."""
    fire = ScheduledFire(plugin="promo", job="promo", data={"customer": customer_id, "slot": next(_slots)})
    await desk.bus.publish(fire.conversation_key(), dump_event(fire))
    assert await desk.wait_settled(10)


async def test_marketing_needs_an_opt_in_and_an_opt_out_stops_it_again(
    database_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(database_url, PROMO_YAML)
    channel, workspace = doubles(desk)
    await channel.customer_writes("m1", "hello")
    assert await desk.wait_settled(10)
    customer_id = (await Identity.get(channel="customers", external_id="m1")).customer_id
    room = workspace.room_of("m1").room_id

    await _promo(desk, customer_id)  # never opted in: refused, and the room says why
    assert OFFER not in channel.texts_to("m1")
    refusals = [t for t in workspace.texts(room, "notice") if "did not get" in t]
    assert len(refusals) == 1 and "no consent for marketing" in refusals[0], refusals

    await workspace.agent_writes(room, "!consent marketing on", agent="@erin")
    assert await desk.wait_settled(10)
    assert any("opted in to marketing" in t for t in workspace.texts(room, "notice"))
    await _promo(desk, customer_id)
    assert channel.texts_to("m1").count(OFFER) == 1
    seen = Promo.seen[-1]
    assert getattr(seen, "granted", None) is True and "agent @erin" in getattr(seen, "source", "")

    await channel.customer_writes("m1", "STOP")  # the customer opts out
    assert await desk.wait_settled(10)
    assert any("wrote STOP" in t for t in workspace.texts(room, "notice"))
    await _promo(desk, customer_id)
    assert channel.texts_to("m1").count(OFFER) == 1  # not sent again
    refusals = [t for t in workspace.texts(room, "notice") if "did not get" in t]
    assert len(refusals) == 2 and "opted out: customer wrote STOP" in refusals[1], refusals

    # an agent's opt-out is a record too
    await workspace.agent_writes(room, "!consent marketing on", agent="@erin")
    assert await desk.wait_settled(10)
    await _promo(desk, customer_id)
    assert channel.texts_to("m1").count(OFFER) == 2
    await workspace.agent_writes(room, "!consent marketing off", agent="@erin")
    assert await desk.wait_settled(10)
    await _promo(desk, customer_id)
    assert channel.texts_to("m1").count(OFFER) == 2
    row = await Consent.get(customer_id=customer_id, topic="marketing")
    assert (row.granted, row.source) == (False, "agent @erin !consent")


async def test_service_replies_need_no_record_and_writing_again_consents_after_an_opt_out(
    database_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(database_url)
    channel, workspace = doubles(desk)
    await channel.customer_writes("s1", "Where is my order?")
    assert await desk.wait_settled(10)
    room = workspace.room_of("s1").room_id
    await workspace.agent_writes(room, "It ships today.", agent="@erin")
    assert await desk.wait_settled(10)
    assert channel.texts_to("s1") == ["It ships today."]
    assert not await Consent.all().exists()

    await workspace.agent_writes(room, "!consent service off", agent="@erin")
    assert await desk.wait_settled(10)
    await workspace.agent_writes(room, "Anything else?", agent="@erin")
    assert await desk.wait_settled(10)
    assert channel.texts_to("s1") == ["It ships today."]
    assert any("no consent for service" in t for t in workspace.texts(room, "notice"))

    await channel.customer_writes("s1", "Yes, one more question")  # their writing asks for an answer
    assert await desk.wait_settled(10)
    await workspace.agent_writes(room, "Sure, go ahead.", agent="@erin")
    assert await desk.wait_settled(10)
    assert channel.texts_to("s1") == ["It ships today.", "Sure, go ahead."]
