"""The hand-written hot statements on both databases: they read and write what the ORM reads and writes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tortoise.exceptions import IntegrityError, ValidationError

from storage import hot
from storage.db import close_db, init_db
from storage.models import (
    BusJournalEntry,
    Conversation,
    ConversationLog,
    ConversationState,
    Customer,
    Direction,
    Identity,
    InboundReceipt,
    Message,
    OutboxItem,
    OutboxStatus,
    OutboxTarget,
    Room,
)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[None]:
    """The models bound to a fresh database (SQLite, then PostgreSQL)."""
    await init_db(database_url)
    yield
    await close_db()


@asynccontextmanager
async def another_task_in_a_transaction() -> AsyncIterator[None]:
    """Inside the block another task holds an open transaction (it wrote a customer); after the block it
    rolls back."""
    from tortoise.transactions import in_transaction

    in_it, release = asyncio.Event(), asyncio.Event()

    class Undo(Exception):
        pass

    async def holder() -> None:
        with pytest.raises(Undo):
            async with in_transaction():
                await Customer.create(display_name="rolled back")
                in_it.set()
                await release.wait()
                raise Undo

    holding = asyncio.create_task(holder())
    await in_it.wait()
    try:
        yield
    finally:
        release.set()
        await holding


async def waits_on_sqlite(task: asyncio.Task[Any]) -> None:
    """Let the loop turn; on SQLite (one connection) ``task`` must still wait for the other transaction."""
    for _ in range(20):  # the loop keeps turning while the transaction is open
        await asyncio.sleep(0)
    if "sqlite" in type(hot._connection()).__module__:
        assert not task.done()


async def _alice() -> tuple[Customer, Identity]:
    alice = await Customer.create(display_name="Alice", attributes={"order": "42"}, tags=["vip"])
    identity = await Identity.create(
        customer=alice, channel="telegram", external_id="1001", display_name="Alice"
    )
    return alice, identity


async def test_the_open_conversation_is_found_with_its_identity_and_customer(db: None) -> None:
    alice, identity = await _alice()
    assert await hot.open_conversation_of("telegram", "1001") is None
    await Conversation.create(customer=alice, identity=identity, state=ConversationState.CLOSED)
    assert await hot.open_conversation_of("telegram", "1001") is None  # closed ones do not count
    older = await Conversation.create(customer=alice, identity=identity)
    newer = await Conversation.create(customer=alice, identity=identity, state=ConversationState.QUEUED)

    found = await hot.open_conversation_of("telegram", "1001")
    assert found is not None
    conversation, found_identity, customer = found
    assert conversation.id == newer.id != older.id
    assert conversation.state is ConversationState.QUEUED
    assert (found_identity.id, found_identity.display_name) == (identity.id, "Alice")
    assert (customer.id, customer.attributes, customer.tags) == (alice.id, {"order": "42"}, ["vip"])
    assert await hot.open_conversation_of("telegram", "other") is None

    at = datetime(2026, 11, 23, 12, 30, 15, 123456, tzinfo=UTC)
    await hot.touch_conversation(conversation, at)
    reread = await Conversation.get(id=newer.id)
    assert reread.last_customer_message_at == at == conversation.last_customer_message_at
    assert reread.updated_at == conversation.updated_at
    # the ORM's own filters compare the written values correctly
    assert await Conversation.filter(last_customer_message_at__gte=at).count() == 1
    assert await Conversation.filter(last_customer_message_at__gt=at).count() == 0


async def test_outbox_lane_claim_and_sent(db: None) -> None:
    alice, identity = await _alice()
    conversation = await Conversation.create(customer=alice, identity=identity)
    message = await Message.create(
        conversation=conversation, direction=Direction.INBOUND, text="hi", channel="telegram"
    )
    now = datetime.now(UTC)
    rows = [
        await OutboxItem.create(
            idempotency_key=f"k{i}",
            target=OutboxTarget.ROOM,
            adapter="matrix",
            address="",
            conversation=conversation,
            message=message,
            payload={"kind": "customer_message", "text": f"hello {i}"},
            next_attempt_at=now,
        )
        for i in range(2)
    ]
    assert await hot.outbox_lane_head(conversation.id, "customer") is None  # another lane
    head = await hot.outbox_lane_head(conversation.id, "room")
    assert head is not None and head.id == rows[0].id
    assert head.payload == {"kind": "customer_message", "text": "hello 0"}
    assert head.status is OutboxStatus.PENDING and head.target is OutboxTarget.ROOM

    until = now + timedelta(seconds=60)
    assert await hot.claim_outbox_row(head.id, OutboxStatus.PENDING, until)
    assert not await hot.claim_outbox_row(head.id, OutboxStatus.PENDING, until)  # claimed already
    claimed = await OutboxItem.get(id=head.id)
    assert (claimed.status, claimed.claimed_until) == (OutboxStatus.SENDING, until)
    assert await OutboxItem.filter(claimed_until__lt=until + timedelta(seconds=1)).count() == 1
    # a live claim is not taken over; an expired one (a dead worker's) is, by one worker only
    assert not await hot.claim_outbox_row(head.id, OutboxStatus.SENDING, until + timedelta(seconds=60))
    await OutboxItem.filter(id=head.id).update(claimed_until=now - timedelta(seconds=1))
    until = now + timedelta(seconds=120)
    assert await hot.claim_outbox_row(head.id, OutboxStatus.SENDING, until)
    assert not await hot.claim_outbox_row(head.id, OutboxStatus.SENDING, until)  # taken over already
    claimed = await OutboxItem.get(id=head.id)
    assert (claimed.status, claimed.claimed_until) == (OutboxStatus.SENDING, until)

    next_head = await hot.mark_outbox_sent(head, "$event", message_column="workspace_message_id")
    sent = await OutboxItem.get(id=head.id)
    assert (sent.status, sent.external_message_id, sent.claimed_until, sent.attempts) == (
        OutboxStatus.SENT,
        "$event",
        None,
        1,
    )
    assert (head.status, head.attempts) == (OutboxStatus.SENT, 1)
    assert (await Message.get(id=message.id)).workspace_message_id == "$event"
    assert next_head is not None and next_head.id == rows[1].id  # the lane's next row, read at once
    assert next_head.payload == {"kind": "customer_message", "text": "hello 1"}

    last = await hot.mark_outbox_sent(next_head, "out-7", message_column="channel_message_id")
    assert last is None  # the lane is empty
    stored = await Message.get(id=message.id)
    assert (stored.channel_message_id, stored.workspace_message_id) == ("out-7", "$event")
    with pytest.raises(ValueError, match="not a message id column"):
        await hot.mark_outbox_sent(next_head, "x", message_column="text")


async def test_a_lane_head_is_claimed_in_one_step_only_when_it_is_due(db: None) -> None:
    alice, identity = await _alice()
    conversation = await Conversation.create(customer=alice, identity=identity)
    now = datetime.now(UTC)

    async def queue(key: str, due: datetime) -> OutboxItem:
        return await OutboxItem.create(
            idempotency_key=key,
            target=OutboxTarget.CUSTOMER,
            adapter="telegram",
            address="1001",
            conversation=conversation,
            payload={"kind": "message", "text": key},
            next_attempt_at=due,
        )

    until = now + timedelta(seconds=60)
    assert await hot.claim_lane_head(conversation.id, "customer", until) is None  # an empty lane
    later = await queue("later", now + timedelta(hours=1))
    await queue("behind", now)
    assert await hot.claim_lane_head(conversation.id, "customer", until) is None  # the head waits: none
    assert (await OutboxItem.get(id=later.id)).status is OutboxStatus.PENDING
    await OutboxItem.filter(id=later.id).update(next_attempt_at=now - timedelta(seconds=1))
    claimed = await hot.claim_lane_head(conversation.id, "customer", until)
    assert claimed is not None and claimed.id == later.id and claimed.payload["text"] == "later"
    assert (claimed.status, claimed.claimed_until) == (OutboxStatus.SENDING, until)
    stored = await OutboxItem.get(id=later.id)
    assert (stored.status, stored.claimed_until) == (OutboxStatus.SENDING, until)
    # held by a live claim: neither it nor the row behind it is claimed
    assert await hot.claim_lane_head(conversation.id, "customer", until + timedelta(seconds=5)) is None
    # a dead worker's expired claim is taken over, once
    await OutboxItem.filter(id=later.id).update(claimed_until=now - timedelta(seconds=1))
    results = await asyncio.gather(
        *(hot.claim_lane_head(conversation.id, "customer", until) for _ in range(4))
    )
    assert [r.id for r in results if r is not None] == [later.id]


async def test_marking_sent_is_one_transaction_even_while_another_task_holds_the_connection(db: None) -> None:
    """The statements of mark_outbox_sent commit together: on SQLite's fast path, and in a transaction
    of their own when another task's transaction holds the connection (they wait for it, then run)."""
    alice, identity = await _alice()
    conversation = await Conversation.create(customer=alice, identity=identity)
    message = await Message.create(
        conversation=conversation, direction=Direction.INBOUND, text="hi", channel="telegram"
    )
    row = await OutboxItem.create(
        idempotency_key="k",
        target=OutboxTarget.ROOM,
        adapter="matrix",
        address="",
        conversation=conversation,
        message=message,
        payload={"kind": "customer_message", "text": "hi"},
        next_attempt_at=datetime.now(UTC),
    )
    async with another_task_in_a_transaction():
        marking = asyncio.create_task(hot.mark_outbox_sent(row, "$e", message_column="workspace_message_id"))
        await waits_on_sqlite(marking)
    assert await marking is None
    assert (await OutboxItem.get(id=row.id)).status is OutboxStatus.SENT
    assert (await Message.get(id=message.id)).workspace_message_id == "$e"
    assert not await Customer.filter(display_name="rolled back").exists()


async def test_receipt_and_journal_statements(db: None) -> None:
    receipt = await InboundReceipt.create(source="telegram", external_id="update-9")
    await hot.mark_receipt_processed(receipt.id)
    assert (await InboundReceipt.get(id=receipt.id)).processed is True

    keep = await BusJournalEntry.create(key="a", payload={"n": 1})
    gone = await BusJournalEntry.create(key="b", payload={"n": 2})
    await hot.delete_journal_entry(gone.id)
    await hot.delete_journal_entry(gone.id)  # already gone: nothing happens
    assert await BusJournalEntry.all().values_list("id", flat=True) == [keep.id]


async def test_inserts_write_what_create_writes(db: None) -> None:
    alice, identity = await _alice()
    conversation = await Conversation.create(customer=alice, identity=identity)
    message = await hot.insert_message(
        conversation_id=conversation.id,
        direction=Direction.INBOUND,
        author="Alice",
        text="你好, where is my order?",
        attachments=[{"kind": "image", "name": "receipt.png"}],
        channel="telegram",
        channel_message_id="77",
    )
    stored = await Message.get(id=message.id)
    for column in ("id", "direction", "author", "text", "attachments", "channel", "channel_message_id"):
        assert getattr(stored, column) == getattr(message, column), column
    assert stored.edits == [] == message.edits  # the model's default
    assert stored.workspace_message_id is None and stored.edited_at is None
    assert stored.created_at == message.created_at
    assert stored.direction is Direction.INBOUND

    due = datetime.now(UTC)
    row_id = await hot.insert_outbox_row(
        idempotency_key="telegram:77:mirror",
        target=OutboxTarget.ROOM,
        adapter="matrix",
        address="",
        conversation_id=conversation.id,
        message_id=message.id,
        payload={"kind": "customer_message", "text": "你好"},
        next_attempt_at=due,
    )
    stored_row = await OutboxItem.get(id=row_id)
    assert (stored_row.status, stored_row.attempts, stored_row.payload) == (
        OutboxStatus.PENDING,
        0,
        {"kind": "customer_message", "text": "你好"},
    )
    assert (stored_row.next_attempt_at, stored_row.message_id) == (due, message.id)
    with pytest.raises(IntegrityError):  # the idempotency key is unique, as with create()
        await hot.insert_outbox_row(
            idempotency_key="telegram:77:mirror",
            target=OutboxTarget.ROOM,
            adapter="matrix",
            address="",
            next_attempt_at=datetime.now(UTC),
        )

    receipt_id = await hot.insert_receipt("telegram", "update-1")
    assert (await InboundReceipt.get(id=receipt_id)).processed is False
    with pytest.raises(IntegrityError):  # how replays are recognised
        await hot.insert_receipt("telegram", "update-1")

    first = await hot.append_journal_entry("conv:1", {"type": "customer_message", "text": "hi"})
    second = await hot.append_journal_entry("conv:1", {"n": 2})
    assert second > first
    assert (await BusJournalEntry.get(id=first)).payload == {"type": "customer_message", "text": "hi"}

    with pytest.raises(ValidationError):  # too long for the column: refused before the database sees it
        await hot.insert_receipt("x" * 51, "update-2")
    with pytest.raises(ValidationError, match="external_id"):
        await hot.insert_receipt("telegram", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"OutboxItem\.next_attempt_at is required"):
        await hot.insert_outbox_row(idempotency_key="k", target=OutboxTarget.ROOM, adapter="m", address="")
    assert await InboundReceipt.all().count() == 1


async def test_the_scan_sees_one_head_per_lane_and_the_depth(db: None) -> None:
    alice, identity = await _alice()
    one = await Conversation.create(customer=alice, identity=identity)
    two = await Conversation.create(customer=alice, identity=identity)
    now = datetime.now(UTC).replace(microsecond=0)

    async def row(key: str, conversation: Conversation | None, target: OutboxTarget) -> OutboxItem:
        return await OutboxItem.create(
            idempotency_key=key,
            target=target,
            adapter="matrix",
            address="",
            conversation=conversation,
            next_attempt_at=now,
        )

    first = await row("a", one, OutboxTarget.ROOM)
    await row("b", one, OutboxTarget.ROOM)
    customer_head = await row("c", one, OutboxTarget.CUSTOMER)
    done = await row("d", two, OutboxTarget.ROOM)
    done.status = OutboxStatus.SENT
    await done.save()
    two_head = await row("e", two, OutboxTarget.ROOM)
    no_conversation = await row("f", None, OutboxTarget.ROOM)
    claimed_until = now + timedelta(seconds=60)
    await OutboxItem.filter(id=two_head.id).update(status=OutboxStatus.SENDING, claimed_until=claimed_until)

    heads = await hot.outbox_lane_heads(100)
    assert [(h.id, h.conversation_id, h.target) for h in heads] == [
        (first.id, one.id, "room"),
        (customer_head.id, one.id, "customer"),
        (two_head.id, two.id, "room"),
        (no_conversation.id, None, "room"),
    ]
    assert heads[0].status is OutboxStatus.PENDING and heads[0].next_attempt_at == now
    assert heads[0].claimed_until is None
    assert (heads[2].status, heads[2].claimed_until) == (OutboxStatus.SENDING, claimed_until)
    assert [h.id for h in await hot.outbox_lane_heads(2)] == [first.id, customer_head.id]
    assert await hot.outbox_depth() == 5  # every row but the sent one


async def test_a_hot_statement_never_joins_another_tasks_transaction(db: None) -> None:
    async with another_task_in_a_transaction():
        append = asyncio.create_task(hot.append_journal_entry("k", {"n": 1}))
        await waits_on_sqlite(append)
    entry_id = await append
    # the other task's rollback took only its own row with it
    assert await BusJournalEntry.filter(id=entry_id).exists()
    assert not await Customer.filter(display_name="rolled back").exists()


async def test_the_identity_is_found_with_its_customer_and_open_conversation_if_any(db: None) -> None:
    assert await hot.identity_state("telegram", "1001") is None  # never seen
    alice, identity = await _alice()
    found = await hot.identity_state("telegram", "1001")
    assert found is not None and found[2] is None  # known, no open conversation
    assert (found[0].id, found[1].id, found[1].attributes) == (identity.id, alice.id, {"order": "42"})
    await Conversation.create(customer=alice, identity=identity, state=ConversationState.CLOSED)
    newer = await Conversation.create(customer=alice, identity=identity, state=ConversationState.QUEUED)
    found = await hot.identity_state("telegram", "1001")
    assert found is not None and found[2] is not None
    assert (found[2].id, found[2].state) == (newer.id, ConversationState.QUEUED)


async def _create_cy_while_held(
    opened_log: dict[str, object] | None = None,
) -> tuple[Customer, Identity, Conversation, ConversationLog | None]:
    """Create the customer Cy while another task holds the connection in a transaction (SQLite: waits)."""
    async with another_task_in_a_transaction():
        creating = asyncio.create_task(
            hot.create_customer(
                {"display_name": "Cy"},
                {"channel": "sms", "external_id": "+1"},
                {"state": ConversationState.BOT},
                opened_log,
            )
        )
        await waits_on_sqlite(creating)
    return await creating


async def test_a_new_customer_identity_and_conversation_are_one_step(db: None) -> None:
    at = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    customer, identity, conversation, no_log = await hot.create_customer(
        {"display_name": "Bo", "attributes": {"order": "7"}, "timezone": "Europe/Berlin", "bus_key": "tg:9"},
        {"channel": "telegram", "external_id": "9", "display_name": "Bo"},
        {"state": ConversationState.BOT, "last_customer_message_at": at},
    )
    assert no_log is None and await ConversationLog.all().count() == 0
    stored = await Customer.get(id=customer.id)
    assert (stored.display_name, stored.attributes, stored.timezone, stored.bus_key) == (
        "Bo",
        {"order": "7"},
        "Europe/Berlin",
        "tg:9",
    )
    assert (await Identity.get(id=identity.id)).customer_id == customer.id == identity.customer_id
    row = await Conversation.get(id=conversation.id)
    assert (row.customer_id, row.identity_id, row.state, row.room_id) == (
        customer.id,
        identity.id,
        ConversationState.BOT,
        None,
    )
    assert row.last_customer_message_at == at == conversation.last_customer_message_at
    assert conversation.identity_id == identity.id and conversation.customer_id == customer.id

    # the same identity again (another worker was faster): nothing of the second attempt stays
    with pytest.raises(IntegrityError):
        await hot.create_customer(
            {"display_name": "Bo again"},
            {"channel": "telegram", "external_id": "9"},
            {"state": ConversationState.BOT},
        )
    assert await Customer.all().count() == 1 and await Conversation.all().count() == 1

    # while another task holds the connection in a transaction, it waits (SQLite) and still works
    cy, cy_identity, cy_conversation, _log = await _create_cy_while_held()
    assert (await Conversation.get(id=cy_conversation.id)).identity_id == cy_identity.id
    assert (await Identity.get(id=cy_identity.id)).customer_id == cy.id


async def test_a_new_conversations_opened_log_entry_is_written_in_the_same_step(db: None) -> None:
    from bot_core.conversations import opened_log_columns

    columns = opened_log_columns("telegram:m1", "telegram:9", ConversationState.BOT)
    _customer, _identity, conversation, entry = await hot.create_customer(
        {"display_name": "Bo"},
        {"channel": "telegram", "external_id": "9"},
        {"state": ConversationState.BOT},
        columns,
    )
    assert entry is not None
    stored = await ConversationLog.get(id=entry.id)
    assert (stored.conversation_id, stored.what, stored.to_state, stored.by, stored.action_key) == (
        conversation.id,
        "opened",
        "bot",
        "telegram:9",
        "telegram:m1:opened",
    )
    assert stored.at == conversation.created_at == entry.at
    assert (entry.conversation_id, entry.event_key) == (conversation.id, "telegram:m1")
    # all or nothing: a second attempt for the same identity leaves no log entry behind either
    with pytest.raises(IntegrityError):
        await hot.create_customer(
            {"display_name": "Bo"},
            {"channel": "telegram", "external_id": "9"},
            {"state": ConversationState.BOT},
            opened_log_columns("telegram:m2", "telegram:9", ConversationState.BOT),
        )
    assert await ConversationLog.all().count() == 1 and await Customer.all().count() == 1
    # while another task holds the connection (SQLite: the transaction path) it is written the same way
    _cy, _identity, cy_conversation, cy_entry = await _create_cy_while_held(
        opened_log_columns("sms:m3", "sms:+1", ConversationState.BOT)
    )
    assert cy_entry is not None
    assert (await ConversationLog.get(id=cy_entry.id)).conversation_id == cy_conversation.id


async def test_a_conversation_is_read_with_its_bound_room_and_its_customers_room(db: None) -> None:
    alice, identity = await _alice()
    conversation = await Conversation.create(customer=alice, identity=identity)
    assert await hot.conversation_rooms(conversation.id + 100, "matrix") is None
    assert await hot.conversation_rooms(conversation.id, "matrix") == (
        await hot.conversation_rooms(conversation.id, "matrix")
    )
    found = await hot.conversation_rooms(conversation.id, "matrix")
    assert found is not None and found[1:] == (None, None)
    slack = await hot.insert_room(workspace="slack", customer_id=alice.id, external_id="C1")
    await hot.set_conversation_room(conversation.id, slack.id)
    found = await hot.conversation_rooms(conversation.id, "matrix")
    assert found is not None and found[0].room_id == slack.id
    assert (found[1].id if found[1] else None, found[2]) == (slack.id, None)  # bound to another workspace's
    matrix = await hot.insert_room(workspace="matrix", customer_id=alice.id, external_id="!r:hs")
    found = await hot.conversation_rooms(conversation.id, "matrix")
    assert found is not None and found[1] is not None and found[2] is not None
    assert (found[1].id, found[2].id, found[2].external_id) == (slack.id, matrix.id, "!r:hs")
    with pytest.raises(IntegrityError):  # one room per customer and workspace
        await hot.insert_room(workspace="matrix", customer_id=alice.id, external_id="!other:hs")
    assert [i.id for i in await hot.select(Identity, '"customer_id"=?', [alice.id], order='"id"')] == [
        identity.id
    ]
    both = await hot.customer_and_identity(alice.id, identity.id)
    assert both is not None and (both[0].tags, both[1].external_id) == (["vip"], "1001")
    full = await hot.conversation_rooms_and_people(conversation.id, "matrix")
    assert full is not None and full[:3] == found and full[3] is not None
    assert (full[3][0].id, full[3][0].tags, full[3][1].id, full[3][1].external_id) == (
        alice.id,
        ["vip"],
        identity.id,
        "1001",
    )


async def test_a_new_room_binds_its_conversation_in_the_same_step_or_not_at_all(db: None) -> None:
    alice, identity = await _alice()
    conversation = await Conversation.create(customer=alice, identity=identity)
    room = await hot.insert_room(
        workspace="matrix", customer_id=alice.id, external_id="!r:hs", bind=conversation.id
    )
    stored = await Conversation.get(id=conversation.id)
    assert (stored.room_id, room.workspace, room.external_id) == (room.id, "matrix", "!r:hs")
    assert room.created_at is not None and room.id == (await hot.select(Room, '"id"=?', [room.id]))[0].id
    later = await Conversation.create(customer=alice, identity=identity)
    with pytest.raises(IntegrityError):  # the customer has a room there already: nothing is bound
        await hot.insert_room(workspace="matrix", customer_id=alice.id, external_id="!two:hs", bind=later.id)
    assert (await Conversation.get(id=later.id)).room_id is None


async def test_several_reads_at_once_give_what_each_read_alone_gives(db: None) -> None:
    from storage.models import PluginState

    customer = await Customer.create(display_name="Ana", attributes={"plan": "gold"}, tags=["vip"])
    identity = await Identity.create(customer=customer, channel="telegram", external_id="7")
    first = await Conversation.create(customer=customer, identity=identity, tags=["refund", "ünïcode"])
    second = await Conversation.create(customer=customer, identity=identity, satisfaction=4)
    await PluginState.create(plugin="faq", scope="card:9", key="b", value={"v": "second line"})
    await PluginState.create(plugin="faq", scope="card:9", key="a", value=42)
    await PluginState.create(plugin="csat", scope="card:9", key="z", value=[1, None, {"x": 2.5}])

    reads = (
        hot.Select(Conversation, '"customer_id"=?', [customer.id], order='"id" DESC', limit=5),
        hot.Select(PluginState, '"scope"=?', ["card:9"], order='"plugin", "key"'),
        hot.Select(Identity, '"customer_id"=?', [customer.id + 1000]),
        hot.Select(Conversation, '"id"=?', [first.id], limit=1),
    )
    together = await hot.select_several(*reads)
    alone = [await hot.select(r.model, r.where, r.values, order=r.order, limit=r.limit) for r in reads]

    def fields(rows: list[Any]) -> list[dict[str, Any]]:
        return [{k: getattr(row, k) for k in type(row)._meta.fields_db_projection} for row in rows]

    assert [fields(rows) for rows in together] == [fields(rows) for rows in alone]
    conversations, notes, nobody, just_first = together
    assert [c.id for c in conversations] == [second.id, first.id]
    assert conversations[1].tags == ["refund", "ünïcode"] and conversations[0].satisfaction == 4
    assert conversations[1].created_at == first.created_at  # an aware datetime, to the microsecond
    assert [(n.plugin, n.key, n.value) for n in notes] == [
        ("csat", "z", [1, None, {"x": 2.5}]),
        ("faq", "a", 42),
        ("faq", "b", {"v": "second line"}),
    ]
    assert nobody == [] and [c.id for c in just_first] == [first.id]


async def test_rows_read_as_json_keep_their_times_in_utc_whatever_the_servers_time_zone(
    postgres_url: str,
) -> None:
    import asyncpg

    dsn = "postgresql://" + postgres_url.split("://", 1)[1]
    admin = await asyncpg.connect(dsn)
    try:  # a server set to local time: its JSON tells times with that offset
        await admin.execute(f"ALTER DATABASE \"{dsn.rsplit('/', 1)[1]}\" SET timezone TO 'Asia/Tokyo'")
    finally:
        await admin.close()
    await init_db(postgres_url)
    try:
        alice, identity = await _alice()
        conversation = await Conversation.create(customer=alice, identity=identity)
        rows, _none = await hot.select_several(  # (two reads: one statement, rows as JSON)
            hot.Select(Conversation, '"id"=?', [conversation.id]), hot.Select(Conversation, '"id"=?', [-1])
        )
        assert rows[0].created_at == conversation.created_at
        assert rows[0].created_at.utcoffset() == timedelta(0)
    finally:
        await close_db()
