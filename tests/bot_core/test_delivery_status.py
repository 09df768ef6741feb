"""Delivery statuses: a message keeps the furthest status its channel reported (never going back, failed
final), the room shows delivered and read on the agent's message and a failure once, with its error."""

from __future__ import annotations

import logging

import pytest

import bot_core.api
from bot_core.adapters import Undeliverable
from bot_core.events import DeliveryStatus, dump_event, load_event
from bot_core.testing import MemoryChannel, MemoryWorkspace
from storage.models import Direction, Message, OutboxItem, OutboxTarget
from tests.bot_core.test_relay_loop import doubles
from tests.conftest import DeskFactory


async def _answered(desk: object, text: str = "Your parcel left today") -> tuple[str, str, Message, str]:
    """A customer wrote, an agent answered and the channel took the answer: (room, the agent's event id,
    the stored answer, its id on the channel)."""
    channel, workspace = doubles(desk)
    await channel.customer_writes("u1", "where is my parcel?")
    await workspace.posts.wait_for(lambda items: any(p.kind == "customer_message" for _, p in items))
    room_id = workspace.room_of("u1").room_id
    event_id = await workspace.agent_writes(room_id, text)
    await channel.sent.wait_for(lambda items: any(d.text == text for d in items))
    assert await desk.wait_settled(10)  # type: ignore[attr-defined]
    message = await Message.get(direction=Direction.OUTBOUND, text=text)
    row = await OutboxItem.get(message_id=message.id, target=OutboxTarget.CUSTOMER)
    return room_id, event_id, message, f"out{row.id}"


async def _reported(desk: object, channel: MemoryChannel, ref: str, status: str, error: str = "") -> str:
    """The channel reports ``status`` for ``ref``; the message's status once it was handled."""
    await channel.reports_status("u1", ref, status, error)  # type: ignore[arg-type]
    assert await desk.wait_settled(10)  # type: ignore[attr-defined]
    return (await Message.get(channel="customers", channel_message_id=ref)).delivery_status


def _marks(workspace: MemoryWorkspace, room_id: str) -> list[tuple[str, str | None]]:
    return [(p.text, p.edit_of) for p in workspace.rooms[room_id].posts if p.kind == "status"]


def test_the_event_is_public_and_travels_the_bus_as_itself() -> None:
    assert bot_core.api.DeliveryStatus is DeliveryStatus
    event = DeliveryStatus(
        channel="wa",
        external_user_id="+4915112345678",
        channel_message_id="wamid.1",
        status="failed",
        error="131026 undeliverable",
    )
    assert load_event(dump_event(event)) == event
    assert event.conversation_key() == "wa:+4915112345678"  # in order with the customer's own messages


async def test_a_status_never_goes_back_and_the_room_marks_delivered_and_read_once(
    database_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(database_url)
    channel, workspace = doubles(desk)
    room_id, event_id, message, ref = await _answered(desk)
    assert message.delivery_status == "sent"  # the outbox's own successful send
    assert message.channel_message_id == ref

    assert await _reported(desk, channel, ref, "delivered") == "delivered"
    assert await _reported(desk, channel, ref, "sent") == "delivered"  # late, out of order: kept
    assert await _reported(desk, channel, ref, "read") == "read"
    assert await _reported(desk, channel, ref, "delivered") == "read"
    assert await _reported(desk, channel, ref, "read") == "read"  # a repeat changes nothing
    # the agent's message is marked once per status, in order; nothing else was posted
    assert _marks(workspace, room_id) == [("delivered", event_id), ("read", event_id)]
    assert not any("did not get" in t for t in workspace.texts(room_id, "notice"))


async def test_failed_after_sent_tells_the_room_once_and_is_final(
    database_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(database_url)
    channel, workspace = doubles(desk)
    room_id, _event_id, _message, ref = await _answered(desk, "Your refund is approved")
    assert await _reported(desk, channel, ref, "failed", "131026 undeliverable") == "failed"
    assert await _reported(desk, channel, ref, "failed", "131026 undeliverable") == "failed"
    assert await _reported(desk, channel, ref, "read") == "failed"  # failed is final
    failed = [t for t in workspace.texts(room_id, "notice") if "did not get" in t]
    assert failed == [
        '⚠ The customer did not get this message after all: "Your refund is approved". '
        "customers reported it failed: 131026 undeliverable"
    ]
    assert _marks(workspace, room_id) == []


async def test_a_status_for_an_unknown_message_is_logged_and_dropped(
    sqlite_url: str, make_desk: DeskFactory, caplog: pytest.LogCaptureFixture
) -> None:
    desk = await make_desk(sqlite_url)
    channel, workspace = doubles(desk)
    room_id, _event_id, message, _ref = await _answered(desk)
    posts = len(workspace.rooms[room_id].posts)
    with caplog.at_level(logging.INFO, logger="relaydesk.delivery"):
        await channel.reports_status("u1", "out999999", "failed", "gone")
        assert await desk.wait_settled(10)
    assert any(r.getMessage() == "delivery status for an unknown message dropped" for r in caplog.records)
    assert (await Message.get(id=message.id)).delivery_status == "sent"
    assert len(workspace.rooms[room_id].posts) == posts  # the room was told nothing


async def test_a_delivery_the_outbox_gave_up_is_failed(sqlite_url: str, make_desk: DeskFactory) -> None:
    desk = await make_desk(sqlite_url)
    channel, workspace = doubles(desk)
    await channel.customer_writes("u1", "hi")
    await workspace.posts.wait_for(lambda items: any(p.kind == "customer_message" for _, p in items))
    room_id = workspace.room_of("u1").room_id
    channel.failures = [Undeliverable("400 chat not found")]
    await workspace.agent_writes(room_id, "Hello?")
    await workspace.posts.wait_for(
        lambda _: any("did not get" in t for t in workspace.texts(room_id, "notice"))
    )
    assert await desk.wait_settled(10)
    message = await Message.get(direction=Direction.OUTBOUND, text="Hello?")
    assert message.delivery_status == "failed"
