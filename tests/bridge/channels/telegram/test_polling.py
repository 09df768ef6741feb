"""Long polling: customers' messages reach the room, and the offset survives restarts exactly."""

from __future__ import annotations

from bot_core.context import StateStore
from bot_core.desk import Desk
from bridge.channels.telegram.polling import OFFSET_KEY
from storage.models import Direction, Message
from tests.bridge.channels.telegram.conftest import ENV, doubles_yaml, only_telegram_yaml, parts
from tests.conftest import DeskFactory
from tests.emulators.telegram import TelegramEmulator


async def test_a_customer_message_reaches_the_room_and_the_agents_answer_comes_back_formatted(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, doubles_yaml(telegram), environ=ENV)
    _channel, workspace = parts(desk)
    alice = telegram.user(424242, "Alice", "Liddell", username="alice")
    await telegram.customer_sends(alice, "Hi, where is my parcel?")
    await workspace.posts.wait_for(lambda posts: any(p.kind == "customer_message" for _, p in posts))
    room = workspace.room_of("424242")
    assert workspace.texts(room.room_id, "customer_message") == ["Hi, where is my parcel?"]
    assert room.posts[0].sender == "Alice Liddell"

    await workspace.agent_writes(room.room_id, "It ships **today** <for sure> & _tomorrow_ it's there")
    await telegram.wait_for(lambda: bool(telegram.bot_messages(424242)))
    sent = telegram.bot_messages(424242)[0]
    assert sent["text"] == "It ships today <for sure> & tomorrow it's there"
    assert [(e["type"], e["offset"], e["length"]) for e in sent["entities"]] == [
        ("bold", 9, 5),
        ("italic", 28, 8),
    ]


def _returned_update_ids(telegram: TelegramEmulator, since_call: int = 0) -> list[int]:
    """The update ids getUpdates answered, from the ``since_call``-th recorded call on."""
    return [
        u["update_id"]
        for c in telegram.calls[since_call:]
        if c.method.lower() == "getupdates" and c.status == 200
        for u in c.response["result"]
    ]


async def _inbound_texts() -> list[str]:
    """What customers wrote, as stored, in order."""
    return [m.text for m in await Message.filter(direction=Direction.INBOUND).order_by("id")]


async def _stored_and_confirmed(telegram: TelegramEmulator, desk: Desk) -> None:
    """Wait until Telegram holds no unconfirmed update (each was stored first) and the desk handled all."""
    await telegram.wait_for(lambda: not telegram.updates)
    assert await desk.wait_settled(10)


async def test_polling_resumes_after_a_restart_from_the_stored_offset_nothing_lost_nothing_repeated(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    bob = telegram.user(5150, "Bob")
    desk = await make_desk(sqlite_url, only_telegram_yaml(telegram), environ=ENV)
    await telegram.customer_sends(bob, "one")
    await telegram.customer_sends(bob, "two")
    await _stored_and_confirmed(telegram, desk)
    assert await _inbound_texts() == ["one", "two"]
    await desk.stop(timeout=5)
    second_update = telegram.all_updates[1]["update_id"]

    # written while relaydesk is down: Telegram keeps them
    await telegram.customer_sends(bob, "three")
    await telegram.customer_sends(bob, "four")
    calls_before_restart = len(telegram.calls)
    desk = await make_desk(sqlite_url, only_telegram_yaml(telegram), environ=ENV)
    await _stored_and_confirmed(telegram, desk)

    first_poll = next(c for c in telegram.calls[calls_before_restart:] if c.method.lower() == "getupdates")
    assert int(first_poll.params["offset"]) == second_update + 1
    later = [u["update_id"] for u in telegram.all_updates[2:]]
    assert _returned_update_ids(telegram, calls_before_restart) == later
    assert await _inbound_texts() == ["one", "two", "three", "four"]


async def test_an_update_stored_but_not_yet_confirmed_at_telegram_is_not_handled_again_after_a_restart(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    carol = telegram.user(777, "Carol")
    desk = await make_desk(sqlite_url, only_telegram_yaml(telegram), environ=ENV)
    await telegram.wait_for(lambda: bool(telegram.calls_of("getUpdates")))  # the first poll waits
    telegram.fail("getUpdates", 502, times=1)  # so the one after it, which would confirm, fails
    await telegram.customer_sends(carol, "stored, then the confirming poll fails")
    await telegram.wait_for(lambda: any(c.status == 502 for c in telegram.calls_of("getUpdates")))
    assert await desk.wait_settled(10)
    update_id = telegram.all_updates[0]["update_id"]
    assert [u["update_id"] for u in telegram.updates] == [update_id]  # Telegram still holds it
    assert await StateStore("telegram", "telegram").get(OFFSET_KEY) == update_id + 1
    await desk.stop(timeout=5)  # "crash" before any poll confirmed it

    calls_before_restart = len(telegram.calls)
    desk = await make_desk(sqlite_url, only_telegram_yaml(telegram), environ=ENV)
    await telegram.customer_sends(carol, "after the restart")
    await _stored_and_confirmed(telegram, desk)
    assert update_id not in _returned_update_ids(telegram, calls_before_restart)
    assert await _inbound_texts() == ["stored, then the confirming poll fails", "after the restart"]
