"""Deliveries held until the customer writes again (AwaitingCustomer), channel notes for the room, and a
platform's own opt-out (Undeliverable(opted_out=True)) recorded as the customer's consent."""

from __future__ import annotations

import asyncio

from bot_core.adapters import AwaitingCustomer, Delivery, SentRef, Undeliverable
from bot_core.outbox import OutboxSettings
from storage.models import Consent, OutboxItem, OutboxStatus, OutboxTarget
from tests.bot_core.test_relay_loop import doubles
from tests.conftest import DeskFactory

HOLDING_YAML = """
plugins:
  - customers: {use: "bot_core.testing:MemoryChannel", config: {waits_for_customer: true}}
  - desk: {use: "bot_core.testing:MemoryWorkspace"}
"""
HOLD_OUTBOX = OutboxSettings(base_backoff=0.02, max_backoff=0.1, poll_interval=0.1, retry_window=3600)


async def _room(desk: object, user: str = "u1") -> str:
    channel, workspace = doubles(desk)
    await channel.customer_writes(user, "hi")
    posts = await workspace.posts.wait_for(lambda items: any(p.kind == "customer_message" for _, p in items))
    return str(posts[0][0])


async def _customer_rows(count: int, timeout: float = 10.0) -> list[OutboxItem]:
    """The rows to the customer, once there are ``count`` of them (the relay handles events on its own time)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = await OutboxItem.filter(target=OutboxTarget.CUSTOMER).order_by("id")
        if len(rows) >= count or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.05)


async def test_a_held_reply_and_those_after_it_go_out_in_order_when_the_customer_writes(
    database_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(database_url, HOLDING_YAML, outbox=HOLD_OUTBOX)
    channel, workspace = doubles(desk)
    room = await _room(desk)
    channel.failures = [AwaitingCustomer("outside the 24-hour window", "The template 'reopen' was sent")]
    await workspace.agent_writes(room, "Your refund is approved.")
    await workspace.agent_writes(room, "It takes 3 days.")
    await workspace.posts.wait_for(
        lambda _: any("Not sent yet" in t for t in workspace.texts(room, "notice"))
    )
    [held] = [t for t in workspace.texts(room, "notice") if "Not sent yet" in t]
    assert '"Your refund is approved."' in held and "24-hour window" in held and "'reopen' was sent" in held
    rows = await _customer_rows(2)  # the second answer is queued behind the held one
    assert await desk.outbox.wait_settled(0.5) is False  # held: neither sent nor given up
    assert channel.texts_to("u1") == []
    rows = await _customer_rows(2)
    assert [r.status for r in rows] == [OutboxStatus.PENDING] * 2 and rows[0].attempts == 0

    await channel.customer_writes("u1", "ok thanks")  # the customer answers: the lane goes out, in order
    await channel.sent.wait_for(lambda items: len(items) == 2)
    assert channel.texts_to("u1") == ["Your refund is approved.", "It takes 3 days."]
    await workspace.posts.wait_for(
        lambda _: any("held reply went out" in t for t in workspace.texts(room, "notice"))
    )
    assert sum("Not sent yet" in t for t in workspace.texts(room, "notice")) == 1


async def test_another_customer_writing_releases_nothing(sqlite_url: str, make_desk: DeskFactory) -> None:
    desk = await make_desk(sqlite_url, HOLDING_YAML, outbox=HOLD_OUTBOX)
    channel, workspace = doubles(desk)
    room = await _room(desk, "u1")
    await _room(desk, "u2")
    channel.failures = [AwaitingCustomer("outside the window")]
    await workspace.agent_writes(room, "held one")
    await workspace.posts.wait_for(
        lambda _: any("Not sent yet" in t for t in workspace.texts(room, "notice"))
    )
    await channel.customer_writes("u2", "hello from someone else")
    await workspace.posts.wait_for(lambda items: any(p.text == "hello from someone else" for _, p in items))
    assert await desk.outbox.wait_settled(0.5) is False
    assert channel.texts_to("u1") == []


async def test_a_hold_outlasting_the_retry_window_is_given_up_and_the_room_told(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    settings = OutboxSettings(base_backoff=0.02, max_backoff=0.1, poll_interval=0.1, retry_window=0.6)
    desk = await make_desk(sqlite_url, HOLDING_YAML, outbox=settings)
    channel, workspace = doubles(desk)
    room = await _room(desk)
    channel.failures = [AwaitingCustomer("outside the window") for _ in range(2)]
    await workspace.agent_writes(room, "anyone there?")
    await workspace.posts.wait_for(
        lambda _: any("did not get" in t for t in workspace.texts(room, "notice")), 10
    )
    [gave_up] = [t for t in workspace.texts(room, "notice") if "did not get" in t]
    assert "did not write again" in gave_up
    assert channel.texts_to("u1") == []


async def test_a_channel_that_does_not_wait_for_customers_is_not_released(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, outbox=HOLD_OUTBOX)  # waits_for_customer: false
    channel, workspace = doubles(desk)
    room = await _room(desk)
    channel.failures = [AwaitingCustomer("outside the window")]
    await workspace.agent_writes(room, "held")
    await workspace.posts.wait_for(
        lambda _: any("Not sent yet" in t for t in workspace.texts(room, "notice"))
    )
    await channel.customer_writes("u1", "hello")
    await workspace.posts.wait_for(lambda items: any(p.text == "hello" for _, p in items))
    assert await desk.outbox.wait_settled(0.5) is False


async def test_a_channel_note_is_posted_and_a_platform_opt_out_becomes_the_consent_record(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, outbox=HOLD_OUTBOX)
    channel, workspace = doubles(desk)
    room = await _room(desk)
    original = channel.send

    async def send_with_note(delivery: Delivery) -> SentRef:
        ref = await original(delivery)
        return SentRef(ref.external_message_id, note="This reply cost 4 SMS segments.")

    channel.send = send_with_note  # type: ignore[method-assign]
    await workspace.agent_writes(room, "a long answer")
    await workspace.posts.wait_for(
        lambda _: any("4 SMS segments" in t for t in workspace.texts(room, "notice"))
    )
    channel.send = original  # type: ignore[method-assign]

    channel.failures = [Undeliverable("21610 Attempt to send to unsubscribed recipient", opted_out=True)]
    await workspace.agent_writes(room, "one more thing")
    await workspace.posts.wait_for(lambda _: any("did not get" in t for t in workspace.texts(room, "notice")))
    record = await Consent.get(topic="service")
    assert record.granted is False and "21610" in record.source
    await workspace.agent_writes(room, "are you there?")  # refused by the outbox now: never tried
    await workspace.posts.wait_for(
        lambda _: sum("did not get" in t for t in workspace.texts(room, "notice")) == 2
    )
    assert channel.texts_to("u1") == ["a long answer"]
