"""Telegram down for minutes, and customers who block the bot and come back: nothing lost, people told.

The outbox's window and notice delay are made small (seconds), and the emulator's outage lasts until
the test has seen the room told and more tries than the old six-try give-up allowed.
"""

from __future__ import annotations

from bot_core.outbox import OutboxSettings
from storage.models import Identity, OutboxItem, OutboxStatus
from tests.bridge.channels.telegram.conftest import ENV, doubles_yaml, parts
from tests.bridge.channels.telegram.test_outbound import _room_of_new_customer
from tests.conftest import DeskFactory
from tests.emulators.telegram import TelegramEmulator

OUTAGE_OUTBOX = OutboxSettings(
    base_backoff=0.02, max_backoff=0.1, poll_interval=0.2, retry_window=120.0, notice_after=0.5
)


async def test_telegram_answering_502_for_minutes_delivers_every_answer_once_in_order(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, doubles_yaml(telegram), environ=ENV, outbox=OUTAGE_OUTBOX)
    _channel, workspace = parts(desk)
    room = await _room_of_new_customer(telegram, workspace, 4001, "Olga")
    telegram.outage(502, methods=("sendMessage",))
    answers = ["Let me check your order.", "It left the warehouse today.", "Tracking: RD-4411."]
    for text in answers:
        await workspace.agent_writes(room, text)

    await workspace.posts.wait_for(
        lambda _: any("Not delivered to the customer yet" in t for t in workspace.texts(room, "notice")), 20
    )
    # the outage outlasts the six tries after which the outbox used to give up
    await telegram.wait_for(lambda: sum(c.status == 502 for c in telegram.calls_of("sendMessage")) >= 10, 20)
    assert telegram.bot_messages(4001) == []
    telegram.restore()

    await telegram.wait_for(lambda: len(telegram.bot_messages(4001)) == 3, 20)
    await workspace.posts.wait_for(
        lambda _: any("after all" in t for t in workspace.texts(room, "notice")), 20
    )
    assert await desk.wait_settled(20)
    assert telegram.texts_to(4001) == answers  # all of them, once each, in the order written
    notices = workspace.texts(room, "notice")
    [late] = [t for t in notices if "Not delivered to the customer yet" in t]  # told once for the lane
    assert '"Let me check your order." (and 2 more after it)' in late and "Bad Gateway" in late
    [through] = [t for t in notices if "after all" in t]
    assert '"Let me check your order."' in through
    assert not any("did not get" in t for t in notices)
    rows = await OutboxItem.filter(target="customer").order_by("id")
    assert [r.status for r in rows] == [OutboxStatus.SENT] * 3


async def test_a_customer_who_blocked_the_bot_and_writes_again_gets_replies_again(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, doubles_yaml(telegram), environ=ENV, outbox=OUTAGE_OUTBOX)
    _channel, workspace = parts(desk)
    room = await _room_of_new_customer(telegram, workspace, 4002, "Piet")
    piet = telegram.users[4002]
    telegram.block(4002)
    await workspace.agent_writes(room, "Did the replacement arrive?")
    await workspace.posts.wait_for(
        lambda _: (card := workspace.rooms[room].card) is not None and not card.identities[0].reachable, 20
    )
    assert any("did not get" in t and "blocked" in t for t in workspace.texts(room, "notice"))
    assert (await Identity.get(external_id="4002")).reachable is False

    telegram.unblock(4002)
    await telegram.customer_sends(piet, "Sorry, I had blocked you by mistake. Yes it did!")
    await workspace.posts.wait_for(
        lambda _: any("can be reached again" in t for t in workspace.texts(room, "notice")), 20
    )
    await workspace.posts.wait_for(
        lambda _: (card := workspace.rooms[room].card) is not None and card.identities[0].reachable, 20
    )
    identity = await Identity.get(external_id="4002")
    assert identity.reachable is True and identity.unreachable_reason is None

    await workspace.agent_writes(room, "Great, enjoy it!")
    await telegram.wait_for(lambda: telegram.texts_to(4002) == ["Great, enjoy it!"], 20)
    assert not any("cannot be reached" in t for t in workspace.texts(room, "notice"))
