"""The whole loop on real storage: customer → room → agent → customer, with the test doubles."""

from __future__ import annotations

from typing import cast

from bot_core.testing import MemoryChannel, MemoryWorkspace
from storage.models import Conversation, ConversationState, Message
from tests.conftest import DeskFactory


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

    conversation = await Conversation.get(id=room.conversation.conversation_id)
    assert conversation.state is ConversationState.ASSIGNED  # the first agent to answer takes it
    stored = await Message.filter(conversation_id=conversation.id).order_by("id").values_list("direction", "text")
    assert [(str(d), t) for d, t in stored] == [("inbound", "Where is my order 42?"), ("outbound", "It ships tomorrow.")]
