"""The conversation service: compare-and-set changes, the transition table, the log, events on the bus,
times from the log, and writing to a customer whose conversation is closed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from bot_core import ConversationEvent, LifecycleKind, Plugin, on_conversation_event, on_schedule
from bot_core.context import ActionKeys, Context
from bot_core.conversation_service import TRANSITIONS, conversation_times, times_from_log
from bot_core.conversations import get_or_create_agent
from bot_core.desk import Desk
from bot_core.events import ScheduledFire, dump_event
from storage.bus.journal import DbJournal
from storage.db import close_db, init_db
from storage.models import (
    Conversation,
    ConversationLog,
    ConversationState,
    Customer,
    Identity,
    InboundReceipt,
)
from tests.bot_core.test_relay_loop import doubles
from tests.conftest import DOUBLES_YAML, DeskFactory

RECORDER_YAML = DOUBLES_YAML + '  - rec: {use: "tests.bot_core.test_conversation_service:Recorder"}\n'
NUDGE_YAML = DOUBLES_YAML + '  - nudge: {use: "tests.bot_core.test_conversation_service:Nudge"}\n'
SURVEY_YAML = DOUBLES_YAML + '  - survey: {use: "tests.bot_core.test_conversation_service:Survey"}\n'


class Recorder(Plugin):
    """Records every conversation event it is handed (through the bus), with the state it then reads."""

    name = "recorder"
    events: list[ConversationEvent] = []

    @on_conversation_event()
    async def record(self, ctx: Context, event: ConversationEvent) -> None:
        type(self).events.append(event)


class Survey(Plugin):
    """Asks the customer for a rating once their conversation is closed (outreach after close)."""

    name = "survey"
    reuse_closed = False

    @on_conversation_event(LifecycleKind.CLOSED)
    async def ask(self, ctx: Context, event: ConversationEvent) -> None:
        out = await ctx.for_customer(ctx.customer.id, reuse_closed=type(self).reuse_closed)
        await out.reply("How did we do? Answer 1 to 5.")


class Nudge(Plugin):
    """A global job (no conversation) that writes to one customer: outreach."""

    name = "nudge"

    @on_schedule("nudge")
    async def nudge(self, ctx: Context, fire: ScheduledFire) -> None:
        assert not ctx.has_conversation
        out = await ctx.for_customer(int(fire.data["customer"]))
        await out.reply("Your order has shipped.")


async def _opened(desk: Desk, user: str) -> Conversation:
    channel, workspace = doubles(desk)
    await channel.customer_writes(user, "hello")
    await workspace.posts.wait_for(
        lambda _: any(r.conversation.external_user_id == user for r in workspace.rooms.values())
    )
    assert await desk.wait_settled(10)
    identity = await Identity.get(channel="customers", external_id=user)
    return await Conversation.get(identity_id=identity.id)


async def _context(
    desk: Desk, conversation_id: int, key: str, *, plugin: str = "faq", agent: str | None = None
) -> Context:
    """A handler's context on the conversation as loaded now (each racer holds its own stale copy)."""
    conversation = await Conversation.get(id=conversation_id)
    return Context(
        desk.conversations,
        plugin,
        ActionKeys(key),
        conversation=conversation,
        customer=await Customer.get(id=conversation.customer_id),
        identity=await Identity.get(id=conversation.identity_id),
        agent=await get_or_create_agent("desk", agent, None) if agent else None,
    )


async def _log(conversation_id: int) -> list[tuple[str, str | None, str, str | None]]:
    rows = await ConversationLog.filter(conversation_id=conversation_id).order_by("id")
    return [(r.what, r.from_state, r.to_state, r.by) for r in rows]


async def test_a_hand_over_and_a_claim_at_the_same_moment_end_assigned_with_one_event_each(
    database_url: str, make_desk: DeskFactory
) -> None:
    Recorder.events = []
    desk = await make_desk(database_url, RECORDER_YAML)
    for order in ("hand-over first", "claim first"):
        conversation = await _opened(desk, f"race-{order[0]}")
        faq = await _context(desk, conversation.id, f"race:{order}:faq")
        agent = await _context(desk, conversation.id, f"race:{order}:claim", plugin="core", agent="@erin")
        # both loaded the conversation in "bot": each one's compare-and-set starts from that
        assert faq.conversation.state == agent.conversation.state == "bot"
        racers = [faq.queue("support"), agent.assign("@erin")]
        queued, claimed = await asyncio.gather(*(racers if order == "hand-over first" else racers[::-1]))
        if order == "claim first":
            queued, claimed = claimed, queued
        assert claimed is True
        row = await Conversation.get(id=conversation.id)
        erin = await get_or_create_agent("desk", "@erin", None)
        assert (row.state, row.assignee_id) == (ConversationState.ASSIGNED, erin.id), order
        log = await _log(conversation.id)
        expected: list[tuple[str, str | None, str, str | None]] = [
            ("opened", None, "bot", "customers:race-" + order[0])
        ]
        if queued:  # the hand-over came first: the claim then took it from the queue
            expected += [("queued", "bot", "queued", "faq"), ("assigned", "queued", "assigned", "@erin")]
        else:  # the claim came first: the hand-over was refused, it does not undo the claim
            expected += [("assigned", "bot", "assigned", "@erin")]
        assert log == expected, order
        assert agent.conversation.state == "assigned"  # the winner's copy follows the row
        assert await desk.wait_settled(10)
        handled = [
            (e.kind.value, e.from_state, e.to_state)
            for e in Recorder.events
            if e.conversation_id == conversation.id
        ]
        assert handled == [(what, frm, to) for what, frm, to, _by in log], order  # one event per change
    # which racer's compare-and-set lands first depends on the database's timing (on SQLite the first
    # started, on PostgreSQL often the claim both times): either way the claim holds


async def test_closed_is_final_and_the_customers_next_message_opens_a_new_conversation(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    # the table: nothing leads out of "closed"
    assert all(ConversationState.CLOSED not in t.from_states for t in TRANSITIONS.values())
    desk = await make_desk(sqlite_url)
    channel, workspace = doubles(desk)
    conversation = await _opened(desk, "u1")
    stale = await _context(desk, conversation.id, "t:stale")  # loaded while the conversation is open
    ctx = await _context(desk, conversation.id, "t:1", plugin="core", agent="@erin")
    assert await ctx.close() is True
    assert stale.conversation.state == "bot"
    for context in (ctx, stale):
        assert await context.queue("support") is False
        assert await context.assign("@erin") is False
        assert await context.transfer("billing") is False
        assert await context.close() is False
    assert stale.conversation.state == "closed"  # a refused change brings the copy up to date
    row = await Conversation.get(id=conversation.id)
    assert row.state is ConversationState.CLOSED and row.team_id is None and row.assignee_id is None
    assert [what for what, *_ in await _log(conversation.id)] == ["opened", "closed"]
    # an agent's command that changes nothing says so
    room = workspace.room_of("u1").room_id
    await workspace.agent_writes(room, "!claim", agent="@erin")
    assert await desk.wait_settled(10)
    assert workspace.texts(room, "notice")[-1] == "!claim changed nothing: this conversation is closed."
    # the customer writes again: a new conversation in the same room, the closed one stays closed
    await channel.customer_writes("u1", "one more thing")
    assert await desk.wait_settled(10)
    newest = await Conversation.filter(customer_id=row.customer_id).order_by("-id").first()
    assert newest is not None and newest.id != row.id and newest.state is ConversationState.BOT
    assert (await Conversation.get(id=row.id)).state is ConversationState.CLOSED
    assert len(workspace.rooms) == 1


async def test_the_log_records_every_change_and_times_come_from_it(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url)
    _, workspace = doubles(desk)
    conversation = await _opened(desk, "u2")
    faq = await _context(desk, conversation.id, "t:faq")
    assert await faq.queue("support") is True
    room = workspace.room_of("u2").room_id
    for agent, text in (
        ("@erin", "!claim"),
        ("@erin", "!transfer billing"),
        ("@bob", "hi, billing here"),
        ("@bob", "!close"),
    ):
        await workspace.agent_writes(room, text, agent=agent)
        assert await desk.wait_settled(10)
    assert await _log(conversation.id) == [
        ("opened", None, "bot", "customers:u2"),
        ("queued", "bot", "queued", "faq"),
        ("assigned", "queued", "assigned", "@erin"),
        ("transferred", "assigned", "queued", "@erin"),
        ("assigned", "queued", "assigned", "@bob"),  # the first agent to answer took it
        ("closed", "assigned", "closed", "@bob"),
    ]
    rows = await ConversationLog.filter(conversation_id=conversation.id).order_by("id")
    assert rows[3].team == "billing" and rows[4].agent_id == "@bob"
    assert [t for t in workspace.texts(room, "notice") if t[0] in "⏳👤➡✅"] == [
        "⏳ Waiting for an agent in support.",
        "👤 Assigned to Erin.",
        "➡ Transferred to billing, with the whole conversation.",
        "👤 Assigned to Bob.",
        "✅ Conversation closed. The customer's next message opens a new one here.",
    ]
    times = await conversation_times(conversation.id)
    assert times.first_response == rows[2].at - rows[0].at
    assert times.resolution == rows[5].at - rows[0].at
    assert times.transfers == 1


def test_times_from_a_log() -> None:
    t0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)

    def row(n: int, what: str, frm: str | None, to: str, minutes: float) -> ConversationLog:
        return ConversationLog(
            id=n,
            conversation_id=1,
            what=what,
            from_state=frm,
            to_state=to,
            at=t0 + timedelta(minutes=minutes),
        )

    log = [
        row(1, "opened", None, "bot", 0),
        row(2, "queued", "bot", "queued", 2),  # the bot handed over after 2 min
        row(3, "assigned", "queued", "assigned", 7),  # waited 5 min
        row(4, "transferred", "assigned", "queued", 17),  # handled 10 min
        row(5, "assigned", "queued", "assigned", 20),  # waited 3 min
        row(6, "closed", "assigned", "closed", 26),  # handled 6 min
    ]
    times = times_from_log(reversed(log))  # order does not matter
    assert times.first_response == timedelta(minutes=7)
    assert times.first_wait == timedelta(minutes=5)
    assert times.queue_wait == timedelta(minutes=8)
    assert times.handle == timedelta(minutes=16)
    assert times.resolution == timedelta(minutes=26)
    assert times.transfers == 1
    # still waiting: the wait runs up to now
    waiting = times_from_log(log[:2], now=t0 + timedelta(minutes=12))
    assert waiting.first_response is None and waiting.queue_wait == timedelta(minutes=10)
    assert waiting.resolution is None and waiting.handle == timedelta()


async def test_a_conversation_event_reaches_a_plugin_through_the_bus_once_even_after_a_crash(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    Recorder.events = []
    first = await make_desk(sqlite_url, RECORDER_YAML)
    channel, _ = doubles(first)
    await channel.customer_writes("u3", "hello", message_id="c1")
    assert await first.wait_settled(10)
    assert [(e.kind, e.from_state, e.to_state) for e in Recorder.events] == [
        (LifecycleKind.OPENED, None, "bot")
    ]
    opened = Recorder.events[0]
    assert opened.log_id is not None
    await first.stop(timeout=5)

    # a crash: the customer's message was interrupted before it was marked handled, and the opened
    # event was published again but never acknowledged (twice, as a redelivery would)
    await init_db(sqlite_url)
    await InboundReceipt.filter(source="customers", external_id="c1").update(processed=False)
    journal = DbJournal()
    message = {
        "type": "customer_message",
        "channel": "customers",
        "external_user_id": "u3",
        "external_message_id": "c1",
        "text": "hello",
    }
    await journal.append("customers:u3", message)
    await journal.append(opened.conversation_key(), dump_event(opened))
    await journal.append(opened.conversation_key(), dump_event(opened))
    await close_db()

    second = await make_desk(sqlite_url, RECORDER_YAML)
    assert await second.wait_settled(10)
    assert len(Recorder.events) == 1  # handled once, in the first run
    assert await ConversationLog.filter(what="opened").count() == 1

    # and an event published but not handled before a crash is handled once at the next start
    await second.stop(timeout=5)
    await init_db(sqlite_url)
    await InboundReceipt.filter(source="conversation", external_id=str(opened.log_id)).delete()
    await DbJournal().append(opened.conversation_key(), dump_event(opened))
    await DbJournal().append(opened.conversation_key(), dump_event(opened))
    await close_db()
    third = await make_desk(sqlite_url, RECORDER_YAML)
    assert await third.wait_settled(10)
    assert [e.log_id for e in Recorder.events] == [opened.log_id, opened.log_id]


async def test_outreach_to_a_customer_whose_conversation_is_closed(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    Survey.reuse_closed = False
    desk = await make_desk(sqlite_url, SURVEY_YAML)
    channel, workspace = doubles(desk)
    conversation = await _opened(desk, "u4")
    room = workspace.room_of("u4").room_id
    await workspace.agent_writes(room, "!close", agent="@erin")
    await channel.sent.wait_for(lambda items: any("How did we do" in d.text for d in items))
    assert await desk.wait_settled(10)
    assert channel.texts_to("u4") == ["How did we do? Answer 1 to 5."]
    # the closed conversation stays closed; the survey opened an outbound one, in the same room
    assert (await Conversation.get(id=conversation.id)).state is ConversationState.CLOSED
    outbound = await Conversation.filter(customer_id=conversation.customer_id).order_by("-id").first()
    assert outbound is not None and outbound.id != conversation.id
    assert outbound.state is ConversationState.BOT and outbound.room_id == conversation.room_id
    assert await _log(outbound.id) == [("opened", None, "bot", "survey")]
    assert "🤖 survey answered: How did we do? Answer 1 to 5." in workspace.texts(room, "notice")
    assert len(workspace.rooms) == 1
    # the customer's answer continues the outbound conversation
    await channel.customer_writes("u4", "5")
    assert await desk.wait_settled(10)
    assert await Conversation.filter(customer_id=conversation.customer_id).count() == 2


async def test_outreach_can_write_into_the_closed_conversation_itself(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    Survey.reuse_closed = True
    desk = await make_desk(sqlite_url, SURVEY_YAML)
    channel, workspace = doubles(desk)
    conversation = await _opened(desk, "u5")
    await workspace.agent_writes(workspace.room_of("u5").room_id, "!close", agent="@erin")
    await channel.sent.wait_for(lambda items: any("How did we do" in d.text for d in items))
    assert await desk.wait_settled(10)
    assert await Conversation.filter(customer_id=conversation.customer_id).count() == 1
    assert (await Conversation.get(id=conversation.id)).state is ConversationState.CLOSED
    Survey.reuse_closed = False


async def test_a_global_job_writes_to_a_customer_without_an_open_conversation(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, NUDGE_YAML)
    channel, workspace = doubles(desk)
    conversation = await _opened(desk, "u6")
    room = workspace.room_of("u6").room_id
    await workspace.agent_writes(room, "!close", agent="@erin")
    assert await desk.wait_settled(10)
    for slot in (1, 2):  # twice: the second writes into the conversation the first opened
        fire = ScheduledFire(
            plugin="nudge", job="nudge", data={"customer": conversation.customer_id, "slot": slot}
        )
        await desk.bus.publish(fire.conversation_key(), dump_event(fire))
        assert await desk.wait_settled(10)
    assert channel.texts_to("u6") == ["Your order has shipped."] * 2
    conversations = await Conversation.filter(customer_id=conversation.customer_id).order_by("id")
    assert [c.state for c in conversations] == [ConversationState.CLOSED, ConversationState.BOT]
    assert await _log(conversations[1].id) == [("opened", None, "bot", "nudge")]
