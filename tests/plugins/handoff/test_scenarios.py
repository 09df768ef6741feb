"""The customers' stories of issue 20 replayed on a real desk (memory doubles, real SQLite, the real FAQ),
on a clock the test moves: (a) the greeting loop, (b) the late reply, (c) the dropped place, (d) the
forgotten promise, (e) the repeated photo. Each ends well."""

from __future__ import annotations

from bot_core.events import Attachment
from tests.plugins.handoff.conftest import Clock, Desk2, StartDesk

ALICE = "@alice:example.org"
BOB = "@bob:example.org"
CARA = "@cara:example.org"

TEAMS = f"""
default_team: support
teams:
  support:
    members: ["{ALICE}", "{BOB}"]
    capacity: 1
    timezone: Europe/Berlin
    assignment: least_busy
    targets: {{first_response: 15m}}
  billing:
    members: ["{CARA}"]
    timezone: Europe/Berlin
    assignment: least_busy
"""

CLAIMING = TEAMS.replace("assignment: least_busy\n    targets", "assignment: claim\n    targets")


async def ask_for_person(desk: Desk2, user: str) -> None:
    """The customer greets the bot, then asks for a person (the FAQ hands over)."""
    await desk.says(user, "hello")
    await desk.says(user, "I want to talk to a person")


async def test_a_greeting_loop_ends_with_a_person_a_place_and_a_wait(handoff_desk: StartDesk) -> None:
    """(a) A customer who asks for a person is told their place and an honest wait, then gets one."""
    desk = await handoff_desk(TEAMS)
    await desk.says("u0", "hello")
    await desk.agent("u0", "!available", ALICE)
    await desk.says("u0", "I want to talk to a person")  # Alice has room: it is hers at once
    assert any(f"🔔 {ALICE}: this conversation is yours" in n for n in desk.notices("u0"))
    mentions = [p.mentions for p in desk.workspace.room_of("u0").posts if p.mentions]
    assert mentions == [(ALICE,)]  # addressed to her: her client notifies her
    card = desk.workspace.room_of("u0").card
    assert card is not None and "alice" in (card.assignee or "").lower()  # the room shows the owner

    await ask_for_person(desk, "u1")  # Alice is full (capacity 1): u1 waits, first in line
    told = desk.got("u1")[-1]
    assert told.startswith("You are number 1 in line. Expected wait: about 7 minutes."), told  # ln 2 x 10 min

    await desk.agent("u0", "!close", ALICE)  # Alice is free: u1 is handed to her
    assert any(f"🔔 {ALICE}: this conversation is yours" in n for n in desk.notices("u1"))
    await desk.agent("u1", "Hi, Alice here. How can I help?", ALICE)
    assert desk.got("u1")[-1] == "Hi, Alice here. How can I help?"


async def test_b_late_reply_alerts_the_room_and_the_ops_room_once(handoff_desk: StartDesk) -> None:
    """(b) Nobody takes the conversation within the first-response target: the room and the team's ops
    room are told, once, however often the scheduler looks again."""
    desk = await handoff_desk(CLAIMING)
    await ask_for_person(desk, "u1")
    await desk.tick(minutes=14)
    assert not any("target" in n for n in desk.notices("u1"))
    await desk.tick(minutes=2)
    breach = [n for n in desk.notices("u1") if "first-response target (15 min)" in n]
    assert len(breach) == 1, desk.notices("u1")
    assert len(desk.ops("support")) == 1 and "first-response target (15 min) missed" in desk.ops("support")[0]
    await desk.tick(minutes=30)
    assert len([n for n in desk.notices("u1") if "target" in n]) == 1
    assert len(desk.ops("support")) == 1
    metrics = desk.desk.metrics.render().decode()
    assert 'relaydesk_handoff_target_breaches_total{target="first_response",team="support"} 1.0' in metrics


async def test_c_silent_customer_keeps_the_place_and_is_served(handoff_desk: StartDesk) -> None:
    """(c) A customer silent for 30 minutes keeps their place; one who writes again keeps theirs too;
    the silent one is served first."""
    desk = await handoff_desk(CLAIMING)
    await ask_for_person(desk, "u1")
    await ask_for_person(desk, "u2")
    assert "number 2 in line" in desk.got("u2")[-1]
    await desk.tick(minutes=30)  # u1 stepped away
    await desk.says("u2", "hello? still waiting")  # u2 writes again: still second, nothing new to tell
    assert "number 2 in line" in desk.got("u2")[-1]
    assert desk.workspace.texts(desk.room("u2"), "customer_message")[-1] == "hello? still waiting"
    await desk.agent("u2", "!queue", ALICE)
    line = desk.notices("u2")[-1]
    assert line.index("1. u1") < line.index("2. u2"), line
    await desk.agent("u1", "!claim", ALICE)
    await desk.agent("u1", "Sorry for the wait, I'm here now.", ALICE)
    assert desk.got("u1")[-1] == "Sorry for the wait, I'm here now."
    await desk.agent("u2", "!queue", ALICE)
    assert "1. u2" in desk.notices("u2")[-1]


async def test_d_promise_fires_after_a_restart(handoff_desk: StartDesk) -> None:
    """(d) ``!followup 3d ... --tell-customer``: after a restart of relaydesk, the reminder reaches the
    owner's room and the customer gets the promised message."""
    clock = Clock()
    desk = await handoff_desk(CLAIMING, clock=clock)
    await ask_for_person(desk, "u1")
    await desk.agent("u1", "!claim", ALICE)
    await desk.agent("u1", "!followup 3d call back about the refund --tell-customer", ALICE)
    assert "Follow-up #1 set for Fri 2026-12-11 10:00 (Europe/Berlin)" in desk.notices("u1")[-1]
    await desk.agent("u1", "!followups", ALICE)
    assert (
        "#1 2026-12-11T09:00 UTC: call back about the refund (tells the customer)" in desk.notices("u1")[-1]
    )
    await desk.desk.stop(timeout=5)

    clock.move(days=3, minutes=1)
    again = await handoff_desk(CLAIMING, clock=clock)
    await again.desk.scheduler.tick()
    await again.settle()
    assert any(
        f"⏰ {ALICE}: follow-up #1 is due: call back about the refund" in n for n in again.notices("u1")
    )
    assert again.got("u1") == ["As promised, we're following up on: call back about the refund"]
    await again.agent("u1", "!followups", ALICE)
    assert again.notices("u1")[-1] == "No open follow-ups."


async def test_e_after_a_transfer_the_new_agent_has_the_photo(handoff_desk: StartDesk) -> None:
    """(e) The photo the customer sent before a transfer is in the room the new agent works in, with the
    hand-over note; the customer is told who takes over and asked for nothing again."""
    desk = await handoff_desk(TEAMS)
    await desk.says("u1", "hello")
    await desk.agent("u1", "!available", ALICE)
    await desk.agent("u1", "!available", CARA)
    await desk.says("u1", "I want to talk to a person")
    photo = Attachment(
        kind="image", url="https://files.example/tent.jpg", mime_type="image/jpeg", name="tent.jpg"
    )
    await desk.says("u1", "here is the broken tent", attachments=(photo,))
    await desk.agent("u1", "!transfer billing: refund approved, needs IBAN", ALICE)
    room = desk.workspace.rooms[desk.room("u1")]
    photos = [p for p in room.posts if p.kind == "customer_message" and p.attachments]
    assert photos and photos[0].attachments[0].name == "tent.jpg"
    notices = desk.notices("u1")
    assert any("Hand-over from Alice to billing: refund approved, needs IBAN" in n for n in notices), notices
    assert any(f"🔔 {CARA}: this conversation is yours" in n for n in notices), notices
    assert (
        room.card is not None and "cara" in (room.card.assignee or "").lower() and room.card.team == "billing"
    )
    # Alice as the first owner, Cara as billing's member, then as the owner
    assert desk.workspace.invited[room.room_id] == [ALICE, CARA, CARA]
    told = desk.got("u1")
    assert "I'm passing you to our billing team. They can see everything you sent" in told[-1], told
    assert not any("send" in t.lower() and "photo" in t.lower() for t in told)

    await desk.agent("u1", f"!transfer {BOB}: customer asks for Bob", CARA)
    assert (
        desk.got("u1")[-1] == "Bob is taking over your conversation and can see everything you sent so far."
    )
    card = desk.workspace.rooms[desk.room("u1")].card
    assert card is not None and "bob" in (card.assignee or "").lower()
    assert desk.workspace.invited[room.room_id][-1] == BOB
