"""Agents on a real desk: capacity, round robin, least busy, the sticky agent, priority, opening hours with
the customer's own time zone and language, the same customer keeping their place, metrics (memory doubles,
real SQLite, a clock the test sets). Customers are queued by their first message (``queue_unhandled``)."""

from __future__ import annotations

from datetime import UTC, datetime

from storage.models import Conversation, Customer, Identity
from tests.plugins.handoff.conftest import Clock, Desk2, StartDesk

A, B, C = "@alice:example.org", "@bob:example.org", "@cara:example.org"


def teams(assignment: str, *, capacity: int = 1, extra: str = "") -> str:
    """One support team of Alice, Bob and Cara, handing out by ``assignment``."""
    return f"""
default_team: support
queue_unhandled: true
teams:
  support:
    members: ["{A}", "{B}", "{C}"]
    capacity: {capacity}
    timezone: Europe/Berlin
    assignment: {assignment}
{extra}"""


async def owners(desk: Desk2) -> dict[str, str]:
    """Which agent owns which customer's conversation (from the rooms' notices)."""
    out = {}
    for room in desk.workspace.rooms.values():
        for text in desk.workspace.texts(room.room_id, "notice"):
            if "this conversation is yours" in text:
                out[room.conversation.external_user_id] = (
                    text.split(":", 2)[0].lstrip("🔔 ") + ":" + text.split(":", 2)[1]
                )
    return out


async def available(desk: Desk2, *agents: str) -> None:
    """The agents say they are available (in a room of a customer 'lobby' who wrote first)."""
    for agent in agents:
        await desk.agent("lobby", "!available", agent)


async def test_least_busy_and_capacity(handoff_desk: StartDesk) -> None:
    """Each new conversation goes to the available agent with the fewest; nobody gets more than capacity."""
    desk = await handoff_desk(teams("least_busy", capacity=2), faq=False)
    await desk.says("lobby", "hi")  # lobby waits: nobody is available yet
    assert "number 1 in line" in desk.got("lobby")[-1]
    await available(desk, A, B)  # Alice says it first: lobby is hers
    for user in ("u1", "u2", "u3"):
        await desk.says(user, "help")
    got = await owners(desk)
    assert got["lobby"] == A and got["u1"] == B  # Bob had none, Alice had one
    assert sorted(got.values()).count(A) == 2 and sorted(got.values()).count(B) == 2
    await desk.says("u4", "help")  # both full (2 each): u4 waits, with a wait now known
    assert "u4" not in await owners(desk)
    assert desk.got("u4")[-1].startswith(
        "You are number 1 in line. Expected wait: about 2 minutes."
    )  # ln2 x 10/4 min
    await desk.agent("u1", "!close", B)  # Bob has room again: u4 is his
    assert (await owners(desk))["u4"] == B


async def test_round_robin_in_turn(handoff_desk: StartDesk) -> None:
    """Round robin: in member order, skipping who is not available or full."""
    desk = await handoff_desk(teams("round_robin", capacity=5), faq=False)
    await desk.says("lobby", "hi")
    await available(desk, C, A)  # lobby goes to Cara (the only one available when she said it)
    for user in ("u1", "u2", "u3"):
        await desk.says(user, "help")
    got = await owners(desk)
    assert [got[u] for u in ("lobby", "u1", "u2", "u3")] == [C, A, C, A]
    await desk.agent("lobby", "!away", C)
    await desk.says("u5", "help")
    assert (await owners(desk))["u5"] == A  # Cara is away: she keeps hers, gets no new one


async def test_claim_mode_hands_out_nothing(handoff_desk: StartDesk) -> None:
    """With assignment: claim, the line waits for agents to take conversations."""
    desk = await handoff_desk(teams("claim"), faq=False)
    await desk.says("lobby", "hi")
    await available(desk, A)
    await desk.says("u1", "help")
    assert await owners(desk) == {}
    assert "number 2 in line" in desk.got("u1")[-1]
    await desk.agent("u1", "!queue", A)
    line = desk.notices("u1")[-1]
    assert "Line of support (open, claim): 2 waiting" in line and "Alice: available, 0/1" in line


async def test_sticky_agent(handoff_desk: StartDesk) -> None:
    """A returning customer goes back to the agent who served them, within the sticky time only."""
    clock = Clock()
    desk = await handoff_desk(teams("least_busy", capacity=3, extra="    sticky: 1d"), clock=clock, faq=False)
    await desk.says("lobby", "hi")
    await available(desk, A, B)  # lobby: Alice
    await desk.says("u1", "help")  # u1: Bob (least busy)
    assert (await owners(desk))["u1"] == B
    await desk.agent("u1", "!close", B)
    await desk.says("u1", "me again")  # a new conversation: Alice has 1, Bob 0... and Bob served u1
    assert any("Back to Bob, who served this customer last" in n for n in desk.notices("u1"))
    await desk.agent("u1", "!close", B)
    await desk.says("u2", "help")  # Bob now has u2 (least busy: 0 vs Alice's 1)
    await desk.says("u3", "help")  # Alice and Bob 1 each: Alice
    clock.move(days=2)
    await desk.says("u1", "back after two days")  # sticky window over: least busy decides
    notices = desk.notices("u1")
    assert sum("Back to Bob" in n for n in notices) == 1


async def test_complaint_jumps_the_line(handoff_desk: StartDesk) -> None:
    """An FAQ complaint (priority 10) is served before those who came earlier."""
    settings = teams("claim")
    desk = await handoff_desk(settings.replace("queue_unhandled: true\n", ""))
    for user in ("u1", "u2"):
        await desk.says(user, "hello")
        await desk.says(user, "I want to talk to a person")
    await desk.says("angry", "hello")
    await desk.says("angry", "I want to make a complaint, this is unacceptable")
    card = desk.workspace.room_of("angry").card
    assert card is not None and "handoff:complaint" in card.tags
    assert "number 1 in line" in desk.got("angry")[-1]
    await desk.agent("u1", "!queue", A)
    line = desk.notices("u1")[-1]
    assert line.index("1. angry") < line.index("2. u1") < line.index("3. u2"), line
    assert "priority 10" in line
    assert "🧭 Routed to support (the default team, priority 10)." in desk.notices("angry")


async def test_outside_hours_one_reply_in_the_customers_zone_and_language(handoff_desk: StartDesk) -> None:
    """Monday 20:00 in Berlin, the team opens Tuesday 09:00: a customer in Shanghai is told once, in
    Chinese, that it answers today at 16:00 their time; writing again tells nothing more; at opening the
    line is handed out."""
    clock = Clock(datetime(2026, 12, 7, 19, 0, tzinfo=UTC))
    hours = '    hours: {mon: "09:00-17:00", tue: "09:00-17:00"}'
    desk = await handoff_desk(teams("least_busy", extra=hours), clock=clock, faq=False)
    await desk.says("lobby", "hi")
    await available(desk, A)
    zh = {"attributes": {"locale": "zh-CN", "timezone": "Asia/Shanghai"}}
    await desk.says("wang", "你好，我的订单有问题", **zh)  # noqa: RUF001
    told = desk.got("wang")
    closed = "我们的 support 团队现在不在线，将于 今天 16:00（您的当地时间）开始回复。您的排队位置会保留，无需再次留言。"  # noqa: RUF001
    assert told == [closed]
    await desk.says("wang", "还在吗？", **zh)  # noqa: RUF001
    assert len(desk.got("wang")) == 1
    assert await owners(desk) == {}
    clock.at = datetime(2026, 12, 8, 8, 0, 30, tzinfo=UTC)  # Tuesday 09:00:30 Berlin
    await desk.desk.scheduler.tick()  # the periodic hand-out
    await desk.settle()
    got = await owners(desk)
    assert got["lobby"] == A  # first in line


async def test_metrics(handoff_desk: StartDesk) -> None:
    """Waits, first responses and resolutions per team reach /metrics."""
    clock = Clock()
    desk = await handoff_desk(teams("claim"), clock=clock, faq=False)
    await desk.says("u1", "help")
    clock.move(minutes=4)
    await desk.agent("u1", "!claim", A)
    clock.move(minutes=10)
    await desk.agent("u1", "!close", A)
    text = desk.desk.metrics.render().decode()
    assert 'relaydesk_handoff_wait_seconds_bucket{le="300.0",team="support"} 1.0' in text
    assert 'relaydesk_handoff_wait_seconds_bucket{le="120.0",team="support"} 0.0' in text
    assert 'relaydesk_handoff_first_response_seconds_count{team="support"} 1.0' in text
    assert 'relaydesk_handoff_resolution_seconds_count{team="support"} 1.0' in text
    assert 'relaydesk_handoff_waiting{team="support"} 0.0' in text


async def test_next_response_and_resolution_targets(handoff_desk: StartDesk) -> None:
    """The owner's answer stops the next-response clock; an unanswered message breaches it once; the
    resolution target counts from the start; a close stops every clock."""
    extra = "    targets: {next_response: 10m, resolution: 1h}"
    desk = await handoff_desk(teams("claim", extra=extra), faq=False)
    await desk.says("u1", "help")
    await desk.agent("u1", "!claim", A)
    await desk.says("u1", "are you there?")
    await desk.tick(minutes=5)
    await desk.agent("u1", "Yes, looking into it.", A)  # answered in time: no breach
    await desk.tick(minutes=10)
    assert not any("target" in n for n in desk.notices("u1")), desk.notices("u1")
    await desk.says("u1", "any news?")
    await desk.tick(minutes=11)
    breaches = [n for n in desk.notices("u1") if "next-response target (10 min)" in n]
    assert len(breaches) == 1 and "next-response target (10 min) missed" in desk.ops("support")[-1]
    await desk.tick(minutes=40)  # 1 h 6 min since the start
    assert sum("resolution target (60 min)" in n for n in desk.notices("u1")) == 1
    await desk.agent("u1", "!close", A)
    await desk.tick(hours=3)
    assert sum("target" in n for n in desk.notices("u1")) == 2


async def test_followups_cancel_and_closing_with_open_ones(handoff_desk: StartDesk) -> None:
    """``!followup cancel`` drops a promise (it never fires); closing with an open one says so."""
    desk = await handoff_desk(teams("claim"), faq=False)
    await desk.says("u1", "help")
    await desk.agent("u1", "!claim", A)
    await desk.agent("u1", "!followup 2h check the parcel", A)
    await desk.agent("u1", "!followup tomorrow 10:00 call back --tell-customer", A)
    await desk.agent("u1", "!followup soon", A)
    assert desk.notices("u1")[-1].startswith("Usage: !followup <when> <what>")
    card = desk.workspace.room_of("u1").card
    assert card is not None and card.notes == (
        "Promises: #1 Tue 08 Dec 12:00 check the parcel; #2 Wed 09 Dec 10:00 call back (tells the customer)",
    )
    await desk.agent("u1", "!followup cancel 1", A)
    assert desk.notices("u1")[-1] == "Follow-up #1 cancelled."
    card = desk.workspace.room_of("u1").card
    assert card is not None and card.notes == (
        "Promises: #2 Wed 09 Dec 10:00 call back (tells the customer)",
    )
    await desk.agent("u1", "!close", A)
    closing = desk.notices("u1")[-1]
    assert "closed with 1 open follow-up(s)" in closing and "#2 2026-12-09T09:00 UTC: call back" in closing
    await desk.tick(hours=3)
    assert not any("follow-up #1 is due" in n for n in desk.notices("u1"))
    await desk.tick(days=1)
    assert any("follow-up #2 is due: call back" in n for n in desk.notices("u1"))
    assert desk.got("u1")[-1] == "As promised, we're following up on: call back"
    card = desk.workspace.room_of("u1").card
    assert card is not None and card.notes == ()  # nothing open any more


async def test_a_linked_customer_keeps_the_place(handoff_desk: StartDesk) -> None:
    """Customers linked into one (what linking by a verified phone number does: identity and conversation
    move to the other customer) keep the waiting conversation's place: no duplicate, no ghost in the line."""
    desk = await handoff_desk(teams("claim"), faq=False)
    await desk.says("u1", "help")
    await desk.says("u2", "help")
    conversation = await Conversation.filter(identity__external_id="u1").first()
    assert conversation is not None
    merged = await Customer.create(display_name="u1")
    await Identity.filter(external_id="u1").update(customer_id=merged.id)
    await Conversation.filter(id=conversation.id).update(customer_id=merged.id)
    await desk.says("u1", "still there?")
    assert len(desk.got("u1")) == 1  # nothing new to tell: same place
    await desk.agent("u2", "!queue", A)
    line = desk.notices("u2")[-1]
    assert "2 waiting" in line and line.index("1. u1") < line.index("2. u2"), line
    await desk.agent("u1", "!claim", A)
    await desk.agent("u2", "!queue", A)
    line = desk.notices("u2")[-1]
    assert "1 waiting" in line and "1. u2" in line and "u1" not in line.split("\n", 1)[1], line


async def test_the_sticky_agent_survives_a_merge_the_most_recent_one_wins(handoff_desk: StartDesk) -> None:
    """Two customers served by different agents are linked (!link): the one who served either of them
    most recently is the sticky agent of the customer they became (the older customer's own agent, being
    older, does not win just because the older customer's record is the one kept)."""
    clock = Clock()
    desk = await handoff_desk(teams("least_busy", capacity=3, extra="    sticky: 1d"), clock=clock, faq=False)
    await desk.says("lobby", "hi")
    await available(desk, A, B)  # lobby: Alice
    await desk.agent("lobby", "!close", A)
    await desk.says("old", "help")  # the older customer: Alice (least busy, first in order)
    assert (await owners(desk))["old"] == A
    await desk.agent("old", "!close", A)
    clock.move(hours=1)
    await desk.says("lobby", "me again")  # Alice busy with lobby again (sticky), so...
    await desk.says("new", "help")  # ...the younger customer goes to Bob
    assert (await owners(desk))["new"] == B
    clock.move(hours=1)
    await desk.agent("new", "!close", B)  # Bob served "new" last, an hour after Alice served "old"
    await desk.agent("new", "!link customers:old", B)
    assert any("linked" in n.lower() for n in desk.notices("new")), desk.notices("new")
    await desk.says("old", "back again")  # the survivor's own record (Alice) is older: Bob wins
    notices = [n for room in desk.workspace.rooms for n in desk.workspace.texts(room, "notice")]
    assert sum("Back to Bob, who served this customer last" in n for n in notices) == 1
    assert sum("Back to Alice" in n for n in notices) == 1  # lobby's, earlier


async def test_commands_in_the_team_ops_room(handoff_desk: StartDesk) -> None:
    """From the team's ops room agents set their status, see the line and the team; commands that need a
    conversation say so; !help lists what works there. Answers come in the ops room."""
    desk = await handoff_desk(teams("least_busy", capacity=1), faq=False)
    await desk.says("u1", "help")
    await desk.says("u2", "help")

    async def ops(text: str, agent: str = A) -> str:
        before = len(desk.ops("support"))
        await desk.workspace.agent_writes("ops-support", text, agent=agent, ops_channel="ops-support")
        await desk.settle()
        posts = desk.ops("support")
        assert len(posts) == before + 1, posts
        return posts[-1]

    line = await ops("!queue")
    assert "Line of support (open, least_busy): 2 waiting" in line and "1. u1" in line and "2. u2" in line
    assert "Alice is available (support); open conversations: 0." in await ops("!available")
    assert (await owners(desk))["u1"] == A  # the hand-out ran from the ops room's command
    view = await ops("!team")
    assert "Team support (open, least_busy): 1 waiting" in view and "• Alice: available, 1/1: #" in view
    assert "• Bob: offline, 0/1" in view
    assert "Bob is away" in await ops("!away", B)
    assert "!claim works in a customer's room, not in an ops room." == await ops("!claim")
    helped = await ops("!help")
    assert "!queue" in helped and "!team" in helped and "!available" in helped and "!claim" not in helped
    assert "u2" not in await owners(desk)  # still waiting: Alice is full, Bob away


async def test_availability_follows_presence_and_a_command_stands_until_presence_changes(
    handoff_desk: StartDesk,
) -> None:
    """With ``presence: true`` the workspace's presence sets the status (checked every minute): online is
    available (and gets the line), idle is away, offline is offline. An explicit command wins until the
    agent's presence changes again."""
    desk = await handoff_desk(teams("least_busy", capacity=1, extra="    presence: true"), faq=False)
    presences = desk.workspace.presences
    await desk.says("u1", "help")
    await desk.says("u2", "help")
    presences[A] = "online"
    await desk.tick(minutes=1)
    assert (await owners(desk))["u1"] == A  # online: available, and handed the first in line
    assert await desk.plugin.status(A) == "available" and await desk.plugin.status(B) == "offline"

    await desk.agent("u1", "!away", A)  # typed while online: it stands while she stays online
    assert "Alice is away (until your presence changes) (support)" in desk.notices("u1")[-1]
    await desk.tick(minutes=1)
    assert await desk.plugin.status(A) == "away"
    presences[A] = "unavailable"  # she went idle, then came back: presence decides again
    await desk.tick(minutes=1)
    assert await desk.plugin.status(A) == "away"
    presences[A] = "online"
    await desk.tick(minutes=1)
    assert await desk.plugin.status(A) == "available"

    presences[B] = "offline"
    await desk.agent("u1", "!available", B)  # Bob says he is there though his client shows offline
    assert (await owners(desk))["u2"] == B
    await desk.tick(minutes=1)
    assert await desk.plugin.status(B) == "available"  # unchanged presence: his word stands
    presences[B] = "online"
    await desk.tick(minutes=1)
    presences[B] = "offline"  # he left: offline wins over the earlier !available
    await desk.tick(minutes=1)
    assert await desk.plugin.status(B) == "offline"
    view = desk.notices("u1")
    await desk.agent("u1", "!team", A)
    assert "• Bob: offline (presence), 1/1: #" in desk.notices("u1")[-1], view[-1]
