"""Agents' answers on Telegram: formatting, splitting, rate limits, blocked customers, edits, typing."""

from __future__ import annotations

import itertools

from bot_core.testing import MemoryWorkspace
from storage.models import Identity, OutboxItem, OutboxStatus
from tests.bridge.channels.telegram.conftest import ENV, doubles_yaml, parts
from tests.conftest import DeskFactory
from tests.emulators.telegram import TelegramEmulator


async def _room_of_new_customer(
    telegram: TelegramEmulator, workspace: MemoryWorkspace, user_id: int, name: str
) -> str:
    """The customer writes first (Telegram bots cannot start a chat); the room that opens."""
    await telegram.customer_sends(telegram.user(user_id, name), "hello")
    await workspace.posts.wait_for(
        lambda posts: any(p.kind == "customer_message" and p.sender == name for _, p in posts)
    )
    return workspace.room_of(str(user_id)).room_id


async def test_a_429_storm_still_delivers_everything_once_and_in_order(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, doubles_yaml(telegram), environ=ENV)
    _channel, workspace = parts(desk)
    room = await _room_of_new_customer(telegram, workspace, 1001, "Frank")
    telegram.fail("sendMessage", 429, retry_after=1, times=2)
    telegram.fail("sendMessage", 429, retry_after=1, times=1, after=2)
    answers = [f"answer {n}" for n in range(1, 6)]
    for text in answers:
        await workspace.agent_writes(room, text)
    await telegram.wait_for(lambda: len(telegram.bot_messages(1001)) == 5, timeout=20)
    assert await desk.wait_settled(20)
    assert telegram.texts_to(1001) == answers
    statuses = [c.status for c in telegram.calls_of("sendMessage")]
    assert statuses.count(429) == 3 and statuses.count(200) == 5
    # the outbox waited what Telegram asked: no retry came sooner than retry_after after its 429
    calls = telegram.calls_of("sendMessage")
    for refused, retried in itertools.pairwise(calls):
        if refused.status == 429:
            assert retried.at - refused.at >= 0.95
    assert await OutboxItem.filter(status=OutboxStatus.SENT, target="customer").count() == 5


async def test_a_long_answer_is_split_at_sentences_and_a_429_midway_does_not_double_a_part(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, doubles_yaml(telegram), environ=ENV)
    _channel, workspace = parts(desk)
    room = await _room_of_new_customer(telegram, workspace, 1002, "Gina")
    sentences = [f"Sentence number {n} explains one more step of the return process." for n in range(150)]
    text = " ".join(sentences)  # about 10 000 characters: three messages
    telegram.fail("sendMessage", 429, retry_after=1, after=1)  # the second part is refused once
    await workspace.agent_writes(room, text)
    await telegram.wait_for(lambda: len(telegram.bot_messages(1002)) == 3, timeout=20)
    assert await desk.wait_settled(20)
    received = telegram.texts_to(1002)
    assert len(received) == 3 and all(len(part) <= 4096 for part in received)
    assert all(part.endswith("process.") for part in received)  # cut between sentences
    assert " ".join(received) == text  # nothing lost, nothing repeated
    assert [c.status for c in telegram.calls_of("sendMessage")] == [200, 429, 200, 200]


async def test_agent_markup_is_converted_and_everything_else_escaped(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, doubles_yaml(telegram), environ=ENV)
    _channel, workspace = parts(desk)
    room = await _room_of_new_customer(telegram, workspace, 1003, "Hank")
    await workspace.agent_writes(
        room,
        "Use `<script>` tags? No. See [the guide](https://shop.example/help?a=1&b=2) "
        "or <b>this</b> & **that**\n> quoted line\n```python\nif a < b: pass\n```",
    )
    await telegram.wait_for(lambda: bool(telegram.bot_messages(1003)))
    [sent] = telegram.bot_messages(1003)
    assert sent["text"] == (
        "Use <script> tags? No. See the guide or <b>this</b> & that\nquoted line\nif a < b: pass\n"
    )
    kinds = {(e["type"], e.get("url"), e.get("language")) for e in sent["entities"]}
    assert kinds == {
        ("code", None, None),
        ("text_link", "https://shop.example/help?a=1&b=2", None),
        ("bold", None, None),
        ("blockquote", None, None),
        ("pre", None, None),
        ("code", None, "python"),
    }


async def test_a_customer_who_blocked_the_bot_is_marked_unreachable_with_a_notice_in_the_room(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, doubles_yaml(telegram), environ=ENV)
    _channel, workspace = parts(desk)
    room = await _room_of_new_customer(telegram, workspace, 1004, "Ivy")
    telegram.block(1004)
    await workspace.agent_writes(room, "Your refund is on its way")
    await workspace.posts.wait_for(
        lambda posts: any(p.kind == "notice" and "did not get" in p.text for _, p in posts), 10
    )
    notice = next(t for t in workspace.texts(room, "notice") if "did not get" in t)
    assert "Your refund is on its way" in notice and "bot was blocked by the user" in notice
    identity = await Identity.get(channel="telegram", external_id="1004")
    assert not identity.reachable
    calls = len(telegram.calls_of("sendMessage"))
    await workspace.agent_writes(room, "Hello?")
    await workspace.posts.wait_for(
        lambda posts: any(p.kind == "notice" and "cannot be reached" in p.text for _, p in posts), 10
    )
    assert await desk.wait_settled(10)
    assert len(telegram.calls_of("sendMessage")) == calls  # not attempted again
    assert telegram.texts_to(1004) == []


async def test_agent_edits_and_deletions_follow_on_telegram(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, doubles_yaml(telegram), environ=ENV)
    _channel, workspace = parts(desk)
    room = await _room_of_new_customer(telegram, workspace, 1005, "Jack")
    first = await workspace.agent_writes(room, "It ships **Monday**")
    await telegram.wait_for(lambda: bool(telegram.bot_messages(1005)))
    await workspace.agent_writes(room, "It ships **Tuesday**", edit_of=first)
    await telegram.wait_for(lambda: telegram.texts_to(1005) == ["It ships Tuesday"])
    [edited] = telegram.bot_messages(1005)
    assert "edit_date" in edited and edited["entities"][0]["type"] == "bold"
    await workspace.agent_redacts(room, first)
    await telegram.wait_for(lambda: telegram.bot_messages(1005) == [])
    assert [c.status for c in telegram.calls_of("deleteMessage")] == [200]


async def test_the_customer_sees_typing_while_the_agent_types(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, doubles_yaml(telegram), environ=ENV)
    channel, workspace = parts(desk)
    room = await _room_of_new_customer(telegram, workspace, 1006, "Kim")
    await workspace.agent_types(room)
    await telegram.wait_for(lambda: bool(telegram.calls_of("sendChatAction")))
    [action] = telegram.calls_of("sendChatAction")
    assert (action.params["chat_id"], action.params["action"], action.status) == ("1006", "typing", 200)
    await workspace.agent_types(room, active=False)
    assert not channel._typing._tasks  # the refresher stopped with the agent
    # a message is sent while typing: the indicator is not refreshed after it
    await workspace.agent_types(room)
    await workspace.agent_writes(room, "Here you go")
    await telegram.wait_for(lambda: telegram.texts_to(1006) == ["Here you go"])
    assert not channel._typing._tasks


async def test_a_call_telegram_never_answers_times_out_and_is_retried(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, doubles_yaml(telegram, request_timeout=1), environ=ENV)
    _channel, workspace = parts(desk)
    room = await _room_of_new_customer(telegram, workspace, 1007, "Lou")
    telegram.hang("sendMessage")
    await workspace.agent_writes(room, "still there?")
    await telegram.wait_for(lambda: telegram.texts_to(1007) == ["still there?"], timeout=15)
    assert await desk.wait_settled(10)
    assert len(telegram.calls_of("sendMessage")) == 2  # the hung call, then the retry
    row = await OutboxItem.get(target="customer")
    assert row.status is OutboxStatus.SENT and row.attempts == 2 and "timeout" in (row.last_error or "")
