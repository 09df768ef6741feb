"""The whole loop on real storage: customer → room → agent → customer, with the test doubles."""

from __future__ import annotations

from typing import cast

from bot_core.testing import MemoryChannel, MemoryWorkspace, RoomPost
from storage.models import Conversation, ConversationState, Message, Team
from tests.conftest import DOUBLES_YAML, DeskFactory


def doubles(desk: object) -> tuple[MemoryChannel, MemoryWorkspace]:
    plugins = desk.plugins  # type: ignore[attr-defined]
    return cast(MemoryChannel, plugins["customers"]), cast(MemoryWorkspace, plugins["desk"])


async def test_customer_to_room_to_agent_to_customer(database_url: str, make_desk: DeskFactory) -> None:
    desk = await make_desk(database_url)
    channel, workspace = doubles(desk)

    await channel.customer_writes("u1", "Where is my order 42?", name="Alice")
    posts = await workspace.posts.wait_for(lambda items: any(p.kind == "customer_message" for _, p in items))
    room_id = next(r for r, p in posts if p.kind == "customer_message")
    room = workspace.rooms[room_id]
    assert room.conversation.customer_name == "Alice"
    assert workspace.texts(room_id, "customer_message") == ["Where is my order 42?"]
    assert room.card is not None and room.card.name == "Alice"

    await workspace.agent_writes(room_id, "It ships tomorrow.", agent="@bob")
    await channel.sent.wait_for(lambda items: len(items) == 1)
    assert channel.texts_to("u1") == ["It ships tomorrow."]
    assert channel.sent.items[0].agent_name == "Bob"

    # the first agent to answer takes the conversation (the reply may reach the customer before that is
    # stored: the room's notice says when it is)
    await workspace.posts.wait_for(
        lambda items: any(p.kind == "notice" and "Assigned to Bob" in p.text for _, p in items)
    )
    conversation = await Conversation.get(id=room.conversation.conversation_id)
    assert conversation.state is ConversationState.ASSIGNED
    stored = (
        await Message.filter(conversation_id=conversation.id).order_by("id").values_list("direction", "text")
    )
    assert [(str(d), t) for d, t in stored] == [
        ("inbound", "Where is my order 42?"),
        ("outbound", "It ships tomorrow."),
    ]


async def test_duplicate_inbound_events_are_dropped(database_url: str, make_desk: DeskFactory) -> None:
    desk = await make_desk(database_url)
    channel, workspace = doubles(desk)
    for _ in range(3):  # the platform retried its webhook twice
        await channel.customer_writes("u1", "hello", message_id="tg-100")
    await channel.customer_writes("u1", "are you there?", message_id="tg-101")
    await workspace.posts.wait_for(lambda items: sum(p.kind == "customer_message" for _, p in items) >= 2)
    assert await desk.bus.wait_idle(10)
    room = workspace.room_of("u1")
    assert workspace.texts(room.room_id, "customer_message") == ["hello", "are you there?"]
    assert await Message.filter(channel="customers").count() == 2
    assert desk.metrics.duplicates.labels("customers")._value.get() == 2


async def test_order_is_kept_per_conversation_with_50_writing_at_once(
    database_url: str, make_desk: DeskFactory
) -> None:
    import asyncio

    desk = await make_desk(database_url)
    channel, workspace = doubles(desk)
    users, per_user = 50, 8

    async def customer(n: int) -> None:
        for i in range(per_user):
            await channel.customer_writes(f"user{n}", f"user{n} message {i}")

    await asyncio.gather(*(customer(n) for n in range(users)))
    await workspace.posts.wait_for(
        lambda items: sum(p.kind == "customer_message" for _, p in items) == users * per_user, timeout=60
    )
    for n in range(users):
        room = workspace.room_of(f"user{n}")
        assert workspace.texts(room.room_id, "customer_message") == [
            f"user{n} message {i}" for i in range(per_user)
        ]
    assert len(workspace.rooms) == users  # one room per customer, never two


async def test_agent_commands_in_the_room(database_url: str, make_desk: DeskFactory) -> None:
    desk = await make_desk(database_url)
    channel, workspace = doubles(desk)
    await channel.customer_writes("u1", "my invoice is wrong", name="Carol")
    posts = await workspace.posts.wait_for(lambda items: any(p.kind == "customer_message" for _, p in items))
    room_id = posts[0][0]

    def notices() -> list[str]:
        return workspace.texts(room_id, "notice")

    await workspace.agent_writes(room_id, "!claim", agent="@dave")
    await workspace.posts.wait_for(lambda _: any("Assigned to Dave" in t for t in notices()))
    await workspace.agent_writes(room_id, "!note customer was charged twice", agent="@dave")
    await workspace.posts.wait_for(lambda _: any("charged twice" in t for t in notices()))
    await workspace.agent_writes(room_id, "!transfer billing", agent="@dave")
    await workspace.posts.wait_for(lambda _: any("Transferred to billing" in t for t in notices()))
    await workspace.agent_writes(room_id, "!frobnicate", agent="@dave")
    await workspace.posts.wait_for(lambda _: any("Unknown command !frobnicate" in t for t in notices()))
    await workspace.agent_writes(room_id, "!help", agent="@dave")
    await workspace.posts.wait_for(lambda _: any(t.startswith("Commands:") for t in notices()))
    help_text = next(t for t in notices() if t.startswith("Commands:"))
    for command in ("!claim", "!close", "!transfer <team>", "!note <text>", "!help"):
        assert command in help_text
    await workspace.agent_writes(room_id, "!close", agent="@dave")
    await workspace.posts.wait_for(lambda items: items[-1][1] == RoomPost("card", "closed", ref=""))
    assert any("Conversation closed" in t for t in notices())

    conversation = await Conversation.get(id=workspace.rooms[room_id].conversation.conversation_id)
    assert conversation.state is ConversationState.CLOSED
    team = await Team.get(id=conversation.team_id)
    assert team.name == "billing"
    assert channel.sent.items == []  # commands and notes never reach the customer
    note = await Message.get(conversation_id=conversation.id, direction="note")
    assert note.text == "customer was charged twice"

    # the customer comes back: a new conversation, in the same room
    await channel.customer_writes("u1", "one more thing")
    await workspace.posts.wait_for(lambda items: sum(p.kind == "customer_message" for _, p in items) == 2)
    assert len(workspace.rooms) == 1
    assert await Conversation.filter(customer_id=conversation.customer_id).count() == 2


async def test_customer_edit_updates_the_mirrored_message(sqlite_url: str, make_desk: DeskFactory) -> None:
    desk = await make_desk(sqlite_url)
    channel, workspace = doubles(desk)
    await channel.customer_writes("u1", "I ordered 3 pizzas", message_id="m-1")
    posts = await workspace.posts.wait_for(lambda items: any(p.kind == "customer_message" for _, p in items))
    first_ref = posts[-1][1].ref if posts[-1][1].kind == "customer_message" else posts[0][1].ref
    await channel.customer_writes("u1", "I ordered 4 pizzas", message_id="m-1:edit:1", edit_of="m-1")
    edited = await workspace.posts.wait_for(lambda items: any(p.edit_of for _, p in items))
    edit = next(p for _, p in edited if p.edit_of)
    assert edit.text == "I ordered 4 pizzas"
    assert edit.edit_of == next(p.ref for _, p in edited if p.kind == "customer_message" and not p.edit_of)
    assert first_ref
    message = await Message.get(channel_message_id="m-1")
    assert message.text == "I ordered 4 pizzas"
    assert [e["text"] for e in message.edits] == ["I ordered 3 pizzas"]


async def test_agent_message_in_unknown_room_is_ignored(sqlite_url: str, make_desk: DeskFactory) -> None:
    desk = await make_desk(sqlite_url)
    channel, workspace = doubles(desk)
    await workspace.agent_writes("!not-a-portal", "hello?")
    assert await desk.bus.wait_idle(10)
    assert channel.sent.items == []
    assert await Message.all().count() == 0


async def test_agent_edits_and_deletions_follow_to_the_customer(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url)
    channel, workspace = doubles(desk)
    await channel.customer_writes("u1", "hi")
    posts = await workspace.posts.wait_for(lambda items: any(p.kind == "customer_message" for _, p in items))
    room_id = posts[0][0]
    first = await workspace.agent_writes(room_id, "Your order ships Monday")
    await channel.sent.wait_for(lambda items: len(items) == 1)
    await workspace.agent_writes(room_id, "Your order ships Tuesday", edit_of=first)
    await channel.sent.wait_for(lambda items: len(items) == 2)
    sent_id = f"out{channel.sent.items[0].outbox_id}"
    edit = channel.sent.items[1]
    assert (edit.text, edit.edit_of) == ("Your order ships Tuesday", sent_id)
    await workspace.agent_redacts(room_id, first)
    await channel.sent.wait_for(lambda items: len(items) == 3)
    assert channel.sent.items[2].delete_of == sent_id
    message = await Message.get(workspace_message_id=first)
    assert message.text == "" and [e["text"] for e in message.edits] == [
        "Your order ships Monday",
        "Your order ships Tuesday",
    ]


async def test_a_channel_without_edits_gets_a_correction_and_deletions_are_reported(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    yaml = DOUBLES_YAML.replace(
        '{use: "bot_core.testing:MemoryChannel"}',
        '{use: "bot_core.testing:MemoryChannel", config: {edits: false, deletes: false}}',
    )
    desk = await make_desk(sqlite_url, yaml)
    channel, workspace = doubles(desk)
    await channel.customer_writes("u1", "hi")
    posts = await workspace.posts.wait_for(lambda items: any(p.kind == "customer_message" for _, p in items))
    room_id = posts[0][0]
    first = await workspace.agent_writes(room_id, "The code is 1234")
    await channel.sent.wait_for(lambda items: len(items) == 1)
    await workspace.agent_writes(room_id, "The code is 4321", edit_of=first)
    await channel.sent.wait_for(lambda items: len(items) == 2)
    assert (
        channel.sent.items[1].text == "Correction: The code is 4321" and channel.sent.items[1].edit_of is None
    )
    await workspace.agent_redacts(room_id, first)
    await workspace.posts.wait_for(
        lambda _: any("did not get this deletion" in t for t in workspace.texts(room_id))
    )
    notice = next(t for t in workspace.texts(room_id) if "did not get this deletion" in t)
    assert "cannot delete" in notice and "The code is 4321" in notice


async def test_the_agents_see_the_customer_typing_once_the_room_exists(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url)
    channel, workspace = doubles(desk)
    await channel.customer_types("t1", True)  # no conversation, no room yet: nothing to show, no error
    assert workspace.customer_typing_shown.items == []

    await channel.customer_writes("t1", "hello", name="Tomás")
    await workspace.posts.wait_for(lambda items: len(items) >= 1)
    assert await desk.wait_settled(10)
    room_id = workspace.room_of("t1").room_id
    await channel.customer_types("t1", True)
    await channel.customer_types("t1", False)
    assert workspace.customer_typing_shown.items == [
        (room_id, "customers", "t1", "Tomás", True),
        (room_id, "customers", "t1", "Tomás", False),
    ]
