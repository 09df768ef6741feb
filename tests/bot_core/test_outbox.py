"""The outbox: retry-after honoured, backoff, give-up notice in the room, unreachable customers, order."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from typing import Any

from bot_core.adapters import Delivery, RetryAfter, SentRef, TemporaryFailure, Undeliverable
from bot_core.events import utcnow
from bot_core.outbox import Outbox, OutboxSettings
from storage import hot
from storage.models import Conversation, ConversationState, Identity, OutboxItem, OutboxStatus, OutboxTarget
from tests.bot_core.test_relay_loop import doubles
from tests.conftest import DeskFactory


async def _room_with_customer(desk: object, user: str = "u1") -> str:
    channel, workspace = doubles(desk)
    await channel.customer_writes(user, "hi")
    posts = await workspace.posts.wait_for(lambda items: any(p.kind == "customer_message" for _, p in items))
    return str(posts[0][0])


async def test_retry_after_is_honoured_and_order_kept_in_a_429_storm(
    database_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(database_url)
    channel, workspace = doubles(desk)
    room_id = await _room_with_customer(desk)
    # the platform answers 429 to the next six sends, asking for 0.3 s each time
    channel.failures = [RetryAfter(0.3) for _ in range(6)]
    started = utcnow()
    for i in range(5):
        await workspace.agent_writes(room_id, f"reply {i}")
    await channel.sent.wait_for(lambda items: len(items) == 5, timeout=30)
    assert channel.texts_to("u1") == [f"reply {i}" for i in range(5)]  # once each, in order
    assert await desk.outbox.wait_settled(10)
    rows = await OutboxItem.filter(target=OutboxTarget.CUSTOMER).order_by("id")
    assert [r.status for r in rows] == [OutboxStatus.SENT] * 5
    first = rows[0]
    assert first.last_error is not None and "retry after 0.3s" in first.last_error
    assert first.updated_at - started >= timedelta(seconds=0.3 * 6)  # it waited as long as it was told
    assert desk.metrics.delivery_failures.labels("customers", "retry_after")._value.get() == 6


async def test_temporary_failures_back_off_then_deliver(sqlite_url: str, make_desk: DeskFactory) -> None:
    desk = await make_desk(sqlite_url)
    channel, workspace = doubles(desk)
    room_id = await _room_with_customer(desk)
    channel.failures = [TemporaryFailure("502 Bad Gateway"), TemporaryFailure("timeout")]
    await workspace.agent_writes(room_id, "we are on it")
    await channel.sent.wait_for(lambda items: len(items) == 1)
    assert await desk.outbox.wait_settled(10)
    row = await OutboxItem.get(target=OutboxTarget.CUSTOMER)
    assert row.status is OutboxStatus.SENT and row.attempts == 3


async def test_an_outage_is_retried_for_the_window_then_given_up_and_the_room_told_twice(
    database_url: str, make_desk: DeskFactory
) -> None:
    # the channel answers 503 without end: told "not yet" once, then "did not get" when the window ends
    window = OutboxSettings(
        base_backoff=0.02, max_backoff=0.1, poll_interval=0.2, retry_window=0.8, notice_after=0.2
    )
    desk = await make_desk(database_url, outbox=window)
    channel, workspace = doubles(desk)
    room_id = await _room_with_customer(desk)
    channel.failures = [TemporaryFailure("503 Service Unavailable") for _ in range(1000)]
    await workspace.agent_writes(room_id, "Your refund is approved")
    await workspace.agent_writes(room_id, "It shows in 3 days")
    await workspace.posts.wait_for(
        lambda _: sum("did not get" in t for t in workspace.texts(room_id, "notice")) == 2
    )
    notices = workspace.texts(room_id, "notice")
    # every late message is announced exactly once: by the lane's notice when the second was already
    # waiting behind the first then, or by a notice of its own when it was stored after that notice
    late = [t for t in notices if "Not delivered to the customer yet" in t]
    assert all("503 Service Unavailable" in t for t in late)
    if len(late) == 1:
        assert '"Your refund is approved" (and 1 more after it)' in late[0]
    else:
        assert len(late) == 2, late
        assert '"Your refund is approved"' in late[0] and "more after it" not in late[0]
        assert '"It shows in 3 days"' in late[1]
    lost = [t for t in notices if "did not get" in t]
    assert '"Your refund is approved"' in lost[0] and '"It shows in 3 days"' in lost[1]
    assert "503 Service Unavailable (still failing" in lost[0]
    rows = await OutboxItem.filter(target=OutboxTarget.CUSTOMER).order_by("id")
    assert [r.status for r in rows] == [OutboxStatus.FAILED] * 2
    assert rows[0].attempts > 4  # more tries than a count of attempts used to allow
    assert channel.sent.items == []


async def test_a_late_delivery_is_reported_once_and_its_arrival_too(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    window = OutboxSettings(
        base_backoff=0.02, max_backoff=0.1, poll_interval=0.2, retry_window=60, notice_after=0.2
    )
    desk = await make_desk(sqlite_url, outbox=window)
    channel, workspace = doubles(desk)
    room_id = await _room_with_customer(desk)
    channel.failures = [TemporaryFailure("502 Bad Gateway") for _ in range(1000)]
    for i in range(3):
        await workspace.agent_writes(room_id, f"reply {i}")
    await workspace.posts.wait_for(
        lambda _: any("Not delivered to the customer yet" in t for t in workspace.texts(room_id, "notice"))
    )
    await channel.sending.wait_for(lambda items: len(items) >= 10)  # still trying, past the old six tries
    channel.failures.clear()  # the platform is back
    await channel.sent.wait_for(lambda items: len(items) == 3)
    assert channel.texts_to("u1") == ["reply 0", "reply 1", "reply 2"]
    await workspace.posts.wait_for(
        lambda _: any("after all" in t for t in workspace.texts(room_id, "notice"))
    )
    assert await desk.outbox.wait_settled(10)
    notices = workspace.texts(room_id, "notice")
    assert sum("Not delivered to the customer yet" in t for t in notices) == 1
    assert [t for t in notices if "after all" in t] == [
        t for t in notices if t.startswith("✓ Delivered to the customer after all") and '"reply 0"' in t
    ]
    assert not any("did not get" in t for t in notices)


async def test_blocked_customer_is_marked_unreachable(sqlite_url: str, make_desk: DeskFactory) -> None:
    desk = await make_desk(sqlite_url)
    channel, workspace = doubles(desk)
    room_id = await _room_with_customer(desk)
    channel.failures = [Undeliverable("403 Forbidden: bot was blocked by the user", unreachable=True)]
    await workspace.agent_writes(room_id, "hello?")
    await workspace.posts.wait_for(
        lambda _: any("did not get" in t for t in workspace.texts(room_id, "notice"))
    )
    identity = await Identity.get(external_id="u1")
    assert identity.reachable is False
    assert "blocked" in (identity.unreachable_reason or "")
    await workspace.posts.wait_for(
        lambda _: (card := workspace.rooms[room_id].card) is not None and not card.identities[0].reachable
    )
    # a later reply is not attempted; the room says why
    await workspace.agent_writes(room_id, "are you there?")
    await workspace.posts.wait_for(
        lambda _: any("cannot be reached" in t for t in workspace.texts(room_id, "notice"))
    )
    assert await OutboxItem.filter(target=OutboxTarget.CUSTOMER).count() == 1


async def test_a_slow_workspace_does_not_hold_up_customer_deliveries(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url)
    channel, workspace = doubles(desk)
    room_id = await _room_with_customer(desk)
    workspace.failures = [RetryAfter(30) for _ in range(3)]  # the workspace is rate-limiting us
    await channel.customer_writes("u1", "second message")  # its mirror is now waiting 30 s
    await workspace.agent_writes(room_id, "reply while the room is throttled")
    await channel.sent.wait_for(lambda items: len(items) == 1)
    assert channel.texts_to("u1") == ["reply while the room is throttled"]


async def test_a_delivery_goes_out_only_once_its_row_is_committed(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    # SQLite commits a turn of the event loop's writes together, and a crash may lose that turn: a row
    # queued in the turn its lane picks it up must be committed before the channel is called, or a crash
    # would leave a message the customer got with no row (and its replay would send it twice).
    desk = await make_desk(sqlite_url)
    channel, _workspace = doubles(desk)
    await _room_with_customer(desk)
    committed: list[bool] = []
    plain_send = channel.send

    async def send_checking_the_file(delivery: Delivery) -> SentRef:
        with sqlite3.connect(sqlite_url.removeprefix("sqlite://")) as reader:  # what a crash would leave
            found = reader.execute('SELECT COUNT(*) FROM "outbox_item" WHERE "id"=?', [delivery.outbox_id])
            committed.append(found.fetchone()[0] == 1)
        return await plain_send(delivery)

    channel.send = send_checking_the_file  # type: ignore[method-assign]
    outbox = Outbox(lambda name: channel if name == channel.instance_name else None, desk.metrics)
    conversation = await Conversation.get(state__not=ConversationState.CLOSED)
    identity = await Identity.get(id=conversation.identity_id)
    # queued and picked up in one turn of the loop (nothing in between waits for anything)
    await outbox.enqueue_customer(conversation, identity, "picked up at once", key="same-turn")
    row = await hot.outbox_lane_head(conversation.id, OutboxTarget.CUSTOMER.value)
    assert row is not None and hot.commit_point() is not None  # not committed yet
    await outbox._deliver(row)
    assert committed == [True]
    assert channel.texts_to("u1")[-1] == "picked up at once"


async def test_more_conversations_than_lanes_at_once_all_go_out_without_waiting_for_the_scan(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    # Eight lanes at a time for a hundred customers: a lane that ends hands its slot to the oldest
    # waiting lane at once, and a row queued just as its lane ended starts a new one. Nothing may be
    # left for the periodic scan, which here would come only after a minute.
    desk = await make_desk(sqlite_url, outbox=OutboxSettings(concurrency=8, poll_interval=60))
    channel, workspace = doubles(desk)
    customers = [f"u{n}" for n in range(100)]

    async def customer(user: str) -> None:
        for i in range(3):
            await channel.customer_writes(user, f"{user} message {i}")

    await asyncio.gather(*(customer(user) for user in customers))
    expected = {f"{user} message {i}" for user in customers for i in range(3)}

    def all_posted(items: list[Any]) -> bool:
        return expected <= {post.text for _room, post in items if post.kind == "customer_message"}

    await workspace.posts.wait_for(all_posted, timeout=15)
    assert await desk.outbox.wait_settled(15)


async def test_a_customer_message_the_room_refuses_is_posted_as_a_notice_and_the_customer_told(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url)
    channel, workspace = doubles(desk)
    room_id = await _room_with_customer(desk)
    workspace.failures = [Undeliverable("M_FORBIDDEN: the bridge was kicked")]
    await channel.customer_writes("u1", "Can I change my address?")
    await workspace.posts.wait_for(
        lambda _: any("could not be shown here" in t for t in workspace.texts(room_id, "notice"))
    )
    [notice] = [t for t in workspace.texts(room_id, "notice") if "could not be shown here" in t]
    assert "M_FORBIDDEN" in notice and '"Can I change my address?"' in notice
    # a channel without delivery states (not the web widget) gets a message saying so
    await channel.sent.wait_for(lambda items: any("could not be passed on" in d.text for d in items))
    assert channel.texts_to("u1") == [
        '⚠ Your message "Can I change my address?" could not be passed on to our team. Please send it again.'
    ]


async def test_once_the_platform_is_back_waiting_lanes_go_out_without_waiting_out_their_backoff(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    # the backoff after a failure is half a minute here: without a wake-up when the platform is back,
    # the first two customers would wait that long for their answers
    slow = OutboxSettings(
        base_backoff=30, max_backoff=30, poll_interval=60, retry_window=600, notice_after=600
    )
    desk = await make_desk(sqlite_url, outbox=slow)
    channel, workspace = doubles(desk)
    for user in ("u1", "u2", "u3"):
        await channel.customer_writes(user, "hi")
    await workspace.posts.wait_for(lambda items: sum(p.kind == "customer_message" for _, p in items) == 3)
    rooms = [workspace.room_of(user).room_id for user in ("u1", "u2", "u3")]
    channel.failures = [TemporaryFailure("502 Bad Gateway"), TemporaryFailure("502 Bad Gateway")]
    await workspace.agent_writes(rooms[0], "answer 1")
    await workspace.agent_writes(rooms[1], "answer 2")
    await channel.sending.wait_for(lambda items: len(items) == 2)
    await workspace.agent_writes(rooms[2], "answer 3")  # goes through: the platform is back
    await channel.sent.wait_for(lambda items: len(items) == 3, timeout=10)
    assert {d.text for d in channel.sent.items} == {"answer 1", "answer 2", "answer 3"}
