"""End to end in a REAL Matrix room (the test Synapse, appservice mode): a customer's photo, a transfer with a
note to a team whose agent had left the room; relaydesk invites him back, and he finds the photo, the note
and the card in the room's history, claims the conversation and answers the customer."""

from __future__ import annotations

import dataclasses
import secrets
import uuid
from typing import Any, cast

from nio import RoomGetStateEventResponse, RoomLeaveResponse, RoomMessagesResponse

from bot_core.events import Attachment
from bot_core.testing import MemoryChannel
from tests.bridge.workspaces.matrix_agent import Agent, file_host, room_of
from tests.conftest import DeskFactory
from tests.matrix_server import SynapseInfo

__all__ = ["file_host"]  # the fixture, used below


def handoff_matrix_yaml(synapse: SynapseInfo, alice: str, bob: str) -> str:
    """The memory channel, the handoff plugin (support: Alice, billing: Bob), the appservice workspace."""
    return f"""
server: {{host: 127.0.0.1, port: {synapse.appservice_port}}}
plugins:
  - customers: {{use: "bot_core.testing:MemoryChannel"}}
  - handoff:
      use: "plugins.handoff:HandoffPlugin"
      config:
        default_team: support
        queue_unhandled: true
        teams:
          support: {{members: ["{alice}"], assignment: claim}}
          billing: {{members: ["{bob}"], assignment: claim}}{synapse.matrix_plugin_yaml(agents=f'["{alice}", "{bob}"]')}
"""


async def history(client_agent: Agent, room_id: str) -> list[dict[str, Any]]:
    """Every event of the room's timeline as a member reads it back from the server (newest first)."""
    response = await client_agent.client.room_messages(room_id, limit=200)
    assert isinstance(response, RoomMessagesResponse), response
    return [event.source for event in response.chunk]


async def test_transfer_invites_the_new_agent_who_finds_the_photo_and_the_note(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent, file_host: str
) -> None:
    password = secrets.token_urlsafe(12)
    bob_id = await synapse.server.create_user(f"bob-{uuid.uuid4().hex[:6]}", password)
    bob = Agent(dataclasses.replace(synapse, agent_user_id=bob_id, agent_password=password))
    await bob.login()
    alice_id = synapse.agent_user_id
    desk = await make_desk(
        sqlite_url,
        handoff_matrix_yaml(synapse, alice_id, bob_id),
        serve_http=True,
        http_port=synapse.appservice_port,
    )
    channel = cast(MemoryChannel, desk.plugins["customers"])
    user = f"mia-{uuid.uuid4().hex[:6]}"
    try:
        await channel.customer_writes(user, "My tent arrived broken", name="Mia")
        assert await desk.wait_settled(30)
        assert channel.texts_to(user)[-1].startswith("You are number 1 in line.")
        room_id = await room_of(user)
        photo = Attachment(kind="image", url=f"{file_host}/tent.png", mime_type="image/png", name="tent.png")
        await channel.customer_writes(user, "here is a photo", name="Mia", attachments=(photo,))
        assert await desk.wait_settled(30)

        # Bob was invited with the room, as every agent is, and declined: he is not in it
        left = await bob.client.room_leave(room_id)
        assert isinstance(left, RoomLeaveResponse), left
        await agent.sync_until(lambda: room_id in agent.client.rooms)
        member = await agent.client.room_get_state_event(room_id, "m.room.member", bob_id)
        assert isinstance(member, RoomGetStateEventResponse) and member.content["membership"] == "leave"

        # Alice takes it, then hands it to billing with a note
        await agent.say(room_id, "!claim")
        await agent.say(room_id, "!transfer billing: refund approved, needs IBAN")
        await channel.sent.wait_for(
            lambda _: any("I'm passing you to our billing team" in t for t in channel.texts_to(user)), 30
        )

        # relaydesk invited Bob back; he joins and reads the whole history: the photo, the note, the card
        await bob.sync_until(lambda: room_id in bob.client.rooms, timeout=30)
        events = await history(bob, room_id)
        images = [e for e in events if e.get("content", {}).get("msgtype") == "m.image"]
        assert images and images[0]["content"]["body"] == "tent.png"
        bodies = [str(e.get("content", {}).get("body", "")) for e in events]
        assert any("refund approved, needs IBAN" in b for b in bodies), bodies
        ping = next(e for e in events if f"🔔 billing: {bob_id}" in str(e.get("content", {}).get("body", "")))
        assert ping["content"]["msgtype"] == "m.text"  # a notice would not notify him
        assert ping["content"]["m.mentions"] == {"user_ids": [bob_id]}
        assert f'<a href="https://matrix.to/#/{bob_id}">{bob_id}</a>' in ping["content"]["formatted_body"]
        assert any(b.startswith("Customer card: Mia") for b in bodies), bodies

        # Bob claims it and answers: the customer gets his answer
        await bob.say(room_id, "!claim")
        await bob.say(room_id, "Hi Mia, Bob from billing: the refund is on its way once we have your IBAN.")
        await channel.sent.wait_for(
            lambda _: channel.texts_to(user)[-1].startswith("Hi Mia, Bob from billing"), 30
        )
    finally:
        await bob.client.close()


async def test_presence_makes_the_agent_available_and_the_ops_room_takes_commands(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent
) -> None:
    """A team with ``presence: true`` on real Synapse (presence on): Alice online makes her available and
    hands her the waiting customer; in the team's ops room ``!team`` answers there, ``!claim`` says it
    needs a customer's room."""
    from storage.models import Conversation
    from tests.plugins.handoff.conftest import Clock

    alice = synapse.agent_user_id
    clock = Clock()
    yaml_text = (
        handoff_matrix_yaml(synapse, alice, "@nobody:localhost")
        .replace("support: {members: [", "support: {presence: true, assignment: least_busy, members: [")
        .replace(f'["{alice}"], assignment: claim', f'["{alice}"]')
    )
    desk = await make_desk(
        sqlite_url,
        yaml_text,
        serve_http=True,
        http_port=synapse.appservice_port,
        scheduler_clock=clock,
        scheduler_poll=3600,
    )
    channel = cast(MemoryChannel, desk.plugins["customers"])
    user = f"lea-{uuid.uuid4().hex[:6]}"
    await channel.customer_writes(user, "hello, a person please", name="Lea")
    assert await desk.wait_settled(30)
    room_id = await room_of(user)
    await agent.sync_until(lambda: room_id in agent.client.rooms)  # she shares a room with the bridge
    await agent.client.set_presence("online")
    clock.move(minutes=1)
    await desk.scheduler.tick()
    assert await desk.wait_settled(30)
    handoff = desk.plugins["handoff"]
    assert await handoff.status(alice) == "available"  # type: ignore[attr-defined]
    conversation = await Conversation.get(identity__external_id=user).prefetch_related("assignee")
    assert conversation.state == "assigned"
    assert conversation.assignee is not None and conversation.assignee.external_id == alice

    await handoff.services.post_to_ops("support", "support's ops room", key="hello")
    await agent.sync_until(
        lambda: any(b == "support's ops room" for r in agent.client.rooms for _, b in agent.texts(r)), 30
    )
    ops_room = next(
        r for r in agent.client.rooms if any(b == "support's ops room" for _, b in agent.texts(r))
    )
    await agent.say(ops_room, "!team")
    await agent.say(ops_room, "!claim")
    await agent.sync_until(
        lambda: any("works in a customer's room" in b for _, b in agent.texts(ops_room)), 30
    )
    view = next(b for _, b in agent.texts(ops_room) if b.startswith("Team support"))
    assert "available (presence), 1/3: #" in view, view
