"""The storage models on both databases: migrations apply, constraints hold, JSON fields round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from tortoise import connections
from tortoise.exceptions import IntegrityError
from tortoise.migrations.api import migrate as tortoise_migrate

from storage.db import close_db, init_db, migrate, tortoise_config
from storage.models import (
    Conversation,
    ConversationState,
    Customer,
    Direction,
    Identity,
    InboundReceipt,
    Message,
    OutboxItem,
    OutboxTarget,
    PeriodicRun,
    PluginState,
    Room,
    ScheduledTask,
)
from tests.conftest import drop_postgres_database, fresh_postgres_schema


async def test_a_customer_has_identities_on_several_channels(database_url: str) -> None:
    await init_db(database_url)
    try:
        alice = await Customer.create(display_name="Alice", attributes={"order_id": "42"})
        await Identity.create(customer=alice, channel="telegram", external_id="1001")
        await Identity.create(customer=alice, channel="whatsapp", external_id="+4915100000")
        assert sorted(i.channel for i in await Identity.filter(customer=alice)) == [
            "telegram",
            "whatsapp",
        ]
        with pytest.raises(IntegrityError):  # one identity belongs to one customer
            await Identity.create(customer=await Customer.create(), channel="telegram", external_id="1001")

        identity = await Identity.get(channel="telegram", external_id="1001")
        room = await Room.create(customer=alice, workspace="matrix", external_id="!abc:server")
        conv = await Conversation.create(customer=alice, identity=identity, room=room)
        assert conv.state is ConversationState.BOT
        message = await Message.create(
            conversation=conv,
            direction=Direction.INBOUND,
            text="你好, where is my order?",
            attachments=[{"kind": "image", "name": "receipt.png", "size": 2048}],
            channel="telegram",
            channel_message_id="77",
            edits=[{"text": "old", "at": "2026-01-01T00:00:00Z"}],
        )
        fetched = await Message.get(id=message.id)
        assert fetched.text == "你好, where is my order?"
        assert fetched.attachments[0]["name"] == "receipt.png"
        assert fetched.edits[0]["text"] == "old"

        await InboundReceipt.create(source="telegram", external_id="update-1")
        with pytest.raises(IntegrityError):  # how duplicates are detected
            await InboundReceipt.create(source="telegram", external_id="update-1")
        await OutboxItem.create(
            idempotency_key="k1",
            target=OutboxTarget.CUSTOMER,
            adapter="telegram",
            address="1001",
            conversation=conv,
            payload={"text": "hi"},
            next_attempt_at=conv.created_at,
        )
        with pytest.raises(IntegrityError):
            await OutboxItem.create(
                idempotency_key="k1",
                target=OutboxTarget.CUSTOMER,
                adapter="telegram",
                address="1001",
                conversation=conv,
                payload={"text": "hi"},
                next_attempt_at=conv.created_at,
            )
        await PluginState.create(plugin="faq", scope="global", key="k", value={"v": [1, 2]})
        assert (await PluginState.get(plugin="faq", scope="global", key="k")).value == {"v": [1, 2]}
    finally:
        await close_db()


async def test_migrate_is_idempotent(database_url: str) -> None:
    await migrate(database_url)  # already applied by the fixture: nothing to do, no error
    await init_db(database_url)
    try:
        assert await Customer.all().count() == 0
    finally:
        await close_db()


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
async def test_keyed_scheduling_migration_upgrades_a_database_with_tasks(store: str, tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'old.db'}" if store == "sqlite" else await fresh_postgres_schema()
    try:
        try:  # the schema as released before keyed scheduling, with a pending task in it
            await tortoise_migrate(config=tortoise_config(url), target="models.0001_initial")
            await init_db(url)
            await connections.get("default").execute_script(
                "INSERT INTO scheduled_task (plugin, job, data, due_at, created_at) VALUES"
                " ('faq', 'follow_up', '{}', '2026-01-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00')"
            )
        finally:
            await close_db()
        await migrate(url)
        await init_db(url)
        try:
            old = await ScheduledTask.get(job="follow_up")
            assert (old.key, old.scope, old.revision, old.cancelled_at) == (None, "global", 0, None)
            await ScheduledTask.create(plugin="faq", job="j", key="k", due_at=old.due_at)
            with pytest.raises(IntegrityError):
                await ScheduledTask.create(plugin="faq", job="j", key="k", due_at=old.due_at)
            await PeriodicRun.create(plugin="faq", job="daily", last_slot_at=old.due_at)
        finally:
            await close_db()
    finally:
        if store == "postgres":
            await drop_postgres_database(url)


@pytest.mark.parametrize(
    "query",
    [
        'SELECT * FROM "identity" WHERE "customer_id"=? ORDER BY "id"',
        'SELECT * FROM "customer_contact" WHERE "customer_id"=? ORDER BY "id"',
        'SELECT * FROM "plugin_state" WHERE "scope"=? ORDER BY "plugin", "key"',
    ],
)
async def test_the_card_lookups_of_a_customer_use_an_index(sqlite_url: str, query: str) -> None:
    """The room card of every new customer reads these: a table scan would make each first contact cost
    more the more customers there are (bench.relay --only-first-contacts)."""
    await init_db(sqlite_url)
    try:
        plan = await connections.get("default").execute_query_dict(f"EXPLAIN QUERY PLAN {query}", [1])
        details = " ".join(str(row["detail"]) for row in plan)
        assert "USING INDEX" in details and "SCAN" not in details.replace("USING INDEX", ""), details
    finally:
        await close_db()
