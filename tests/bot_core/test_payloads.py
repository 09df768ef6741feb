"""Typed outbox payloads: every kind round-trips, rows written before the types still parse and are
delivered after an upgrade, and a row that does not parse is given up without stopping its lane."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from tortoise import connections

from bot_core.adapters import TemplateRef
from bot_core.events import Attachment, utcnow
from bot_core.payloads import (
    CustomerTemplate,
    CustomerText,
    OpsPost,
    PayloadError,
    RoomCard,
    RoomCustomerMessage,
    RoomNotice,
    RoomStatus,
    dump_payload,
    parse_payload,
)
from storage import hot
from storage.models import Conversation, Identity, Message, OutboxItem, OutboxStatus, OutboxTarget
from tests.bot_core.test_relay_loop import doubles
from tests.conftest import DeskFactory

IMAGE = Attachment(kind="image", url="https://files.example/cat.png", mime_type="image/png", name="cat.png")


@pytest.mark.parametrize(
    ("target", "payload"),
    [
        ("customer", CustomerText(text="Your order shipped", agent_name="Alice", attachments=(IMAGE,))),
        ("customer", CustomerText(text="fixed typo", correction="edit", topic="marketing", delay="notice")),
        (
            "customer",
            CustomerTemplate(
                template=TemplateRef("order_update", "de", ("42", "Tuesday")), text="Order 42: Tuesday"
            ),
        ),
        (
            "room",
            RoomCustomerMessage(
                text="hi", sender="Dora", channel="web", user="v1", attachments=(IMAGE,), reply_to="x"
            ),
        ),
        ("room", RoomNotice(text="⚠ careful")),
        ("room", RoomCard()),
        ("room", RoomStatus(status="read")),
        ("room", OpsPost(text="queue is long")),
    ],
)
def test_every_kind_round_trips_through_its_stored_json(target: str, payload: Any) -> None:
    stored = dump_payload(payload)
    assert stored["kind"] == payload.kind
    assert parse_payload(target, stored) == payload


# exactly what the outbox wrote before payloads were typed (customer rows had no kind)
OLD_ROWS: list[tuple[str, dict[str, Any], Any]] = [
    (
        "customer",
        {"text": "We are on it", "attachments": [], "agent_name": "Alice", "correction": None},
        CustomerText(text="We are on it", agent_name="Alice"),
    ),
    (
        "customer",
        {"text": "Sale!", "attachments": [], "agent_name": None, "correction": None, "topic": "marketing"},
        CustomerText(text="Sale!", topic="marketing"),
    ),
    (
        "customer",
        {"text": "fixed", "attachments": [], "agent_name": None, "correction": "edit", "delay": "covered"},
        CustomerText(text="fixed", correction="edit", delay="covered"),
    ),
    (
        "room",
        {
            "kind": "customer_message",
            "text": "hello",
            "sender": "Dora",
            "channel": "customers",
            "user": "u1",
            "attachments": [IMAGE.model_dump(mode="json")],
            "edit": False,
            "reply_to": None,
        },
        RoomCustomerMessage(
            text="hello", sender="Dora", channel="customers", user="u1", attachments=(IMAGE,)
        ),
    ),
    ("room", {"kind": "notice", "text": "note", "delay": "notice"}, RoomNotice(text="note", delay="notice")),
    ("room", {"kind": "card", "text": ""}, RoomCard()),
    ("room", {"kind": "ops", "text": "digest"}, OpsPost(text="digest")),
]


@pytest.mark.parametrize(("target", "stored", "expected"), OLD_ROWS)
def test_rows_written_before_the_types_parse(target: str, stored: dict[str, Any], expected: Any) -> None:
    assert parse_payload(target, stored) == expected


@pytest.mark.parametrize(
    ("target", "stored", "problem"),
    [
        ("room", {"kind": "poll", "text": "?"}, "unknown kind 'poll'"),
        ("room", {"text": "no kind"}, "unknown kind None"),
        ("customer", {"kind": "card"}, "unknown kind 'card'"),
        ("customer", {"text": "x", "attachments": "not a list"}, "attachments"),
        ("customer", {"kind": "template", "text": "x"}, "template: Field required"),
        ("room", {"kind": "status", "status": "lost"}, "status"),
        ("customer", ["a", "list"], "not a JSON object: ['a', 'list']"),
    ],
)
def test_a_bad_row_is_a_clear_error(target: str, stored: Any, problem: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_payload(target, stored)
    assert problem in str(caught.value)


async def _queue_raw(
    key: str, target: OutboxTarget, adapter: str, address: str, conv: int, payload: Any
) -> int:
    return await hot.insert_outbox_row(
        idempotency_key=key,
        target=target,
        adapter=adapter,
        address=address,
        conversation_id=conv,
        message_id=None,
        payload=payload,
        next_attempt_at=utcnow(),
    )


async def test_rows_queued_by_the_old_code_are_delivered_after_an_upgrade_and_bad_ones_given_up(
    database_url: str, make_desk: DeskFactory, caplog: pytest.LogCaptureFixture
) -> None:
    desk = await make_desk(database_url)
    channel, workspace = doubles(desk)
    await channel.customer_writes("u1", "hi")
    await workspace.posts.wait_for(lambda items: any(p.kind == "customer_message" for _, p in items))
    assert await desk.outbox.wait_settled(10)
    conversation = await Conversation.get()
    room_id = workspace.room_of("u1").room_id
    await desk.outbox.stop()  # relaydesk stops with these rows queued, written by the old code ...
    old_customer: list[dict[str, Any]] = [
        {"text": "first", "attachments": [], "agent_name": "Alice", "correction": None},
        {"text": "second", "attachments": [], "agent_name": None, "correction": None, "topic": "service"},
    ]
    bad_customer: Any = {"text": "broken", "attachments": 7}
    await _queue_raw("old:1", OutboxTarget.CUSTOMER, "customers", "u1", conversation.id, old_customer[0])
    bad_id = await _queue_raw(
        "old:2", OutboxTarget.CUSTOMER, "customers", "u1", conversation.id, bad_customer
    )
    await _queue_raw("old:3", OutboxTarget.CUSTOMER, "customers", "u1", conversation.id, old_customer[1])
    unknown_id = await _queue_raw(
        "old:4", OutboxTarget.ROOM, "desk", "", conversation.id, {"kind": "hologram", "text": "?"}
    )
    await _queue_raw(
        "old:5", OutboxTarget.ROOM, "desk", "", conversation.id, {"kind": "notice", "text": "old"}
    )
    with caplog.at_level(logging.ERROR, logger="relaydesk.outbox"):
        await desk.outbox.start()  # ... and the new code starts on them
        await channel.sent.wait_for(lambda items: len(items) == 2)
        assert await desk.outbox.wait_settled(10)
    assert channel.texts_to("u1") == ["first", "second"]  # in order, the bad row between them skipped
    assert [d.agent_name for d in channel.sent.items] == ["Alice", None]
    assert [d.kind for d in channel.sent.items] == ["notice", "notice"]  # no stored message: relaydesk's own
    assert workspace.texts(room_id, "notice")[-1] == "old"
    for row_id, problem in ((bad_id, "attachments"), (unknown_id, "unknown kind 'hologram'")):
        row = await OutboxItem.get(id=row_id)
        assert row.status is OutboxStatus.FAILED
        assert row.last_error is not None and row.last_error.startswith("unreadable payload")
        assert problem in row.last_error
    unreadable = [r for r in caplog.records if r.getMessage() == "outbox row unreadable: given up"]
    assert sorted(r.outbox_id for r in unreadable) == sorted([bad_id, unknown_id])  # type: ignore[attr-defined]


async def test_a_row_whose_json_is_corrupt_is_given_up_and_its_lane_goes_on(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url)
    channel, workspace = doubles(desk)
    await channel.customer_writes("u1", "hi")
    await workspace.posts.wait_for(lambda items: any(p.kind == "customer_message" for _, p in items))
    assert await desk.outbox.wait_settled(10)
    conversation = await Conversation.get()
    await desk.outbox.stop()
    broken = await _queue_raw(
        "raw:1", OutboxTarget.CUSTOMER, "customers", "u1", conversation.id, {"text": "x"}
    )
    await connections.get("default").execute_query(
        'UPDATE "outbox_item" SET "payload"=? WHERE "id"=?', ["{not json", broken]
    )
    await _queue_raw("raw:2", OutboxTarget.CUSTOMER, "customers", "u1", conversation.id, {"text": "after"})
    await desk.outbox.start()
    await channel.sent.wait_for(lambda items: len(items) == 1)
    assert channel.texts_to("u1") == ["after"]
    assert await desk.outbox.wait_settled(10)
    [(status, error)] = await OutboxItem.filter(id=broken).values_list("status", "last_error")
    assert status == OutboxStatus.FAILED
    assert "unreadable payload: payload is not a JSON object: UnreadablePayload(raw='{not json')" in error


async def test_a_template_reply_reaches_the_channel_as_a_template(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url)
    channel, workspace = doubles(desk)
    await channel.customer_writes("u1", "hi")
    await workspace.posts.wait_for(lambda items: any(p.kind == "customer_message" for _, p in items))
    conversation = await Conversation.get()
    identity = await Identity.get()
    message = await Message.create(
        conversation_id=conversation.id, direction="outbound", text="x", channel="customers"
    )
    await desk.outbox.enqueue_customer(
        conversation,
        identity,
        "Your order 42 ships Tuesday",
        key="tpl:1",
        message=message,
        template=TemplateRef("order_update", "en", ("42", "Tuesday")),
    )
    [delivery] = await channel.sent.wait_for(lambda items: len(items) == 1)
    assert delivery.kind == "template"
    assert delivery.template == TemplateRef("order_update", "en", ("42", "Tuesday"))
    assert delivery.text == "Your order 42 ships Tuesday"
    stored: dict[str, Any] = (await OutboxItem.get(idempotency_key="tpl:1")).payload
    assert stored["kind"] == "template" and stored["template"]["variables"] == ["42", "Tuesday"]
