"""Only agents act as agents: portal rooms lock invites, and a non-agent in a room is not relayed.

Against the real test Synapse, in both workspace modes. The outsider is a plain account on the
homeserver that is neither in the ``agents`` list nor in a space.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any, cast

from nio import AsyncClient, LoginResponse, RoomInviteError, RoomInviteResponse, RoomPutStateResponse

from bot_core.testing import MemoryChannel
from bridge.workspaces.matrix.appservice import MatrixWorkspace
from storage.models import Conversation, ConversationState, Identity
from tests.bridge.workspaces.matrix_agent import Agent, room_of
from tests.bridge.workspaces.test_matrix_appservice import first_contact
from tests.bridge.workspaces.test_matrix_bot import (  # noqa: F401 (fixtures)
    BotAccount,
    BotDeskFactory,
    bot,
    bot_desk,
    bot_yaml,
)
from tests.conftest import DeskFactory
from tests.matrix_server import SynapseInfo


async def outsider(synapse: SynapseInfo) -> AsyncClient:
    """A logged-in account on the homeserver that is not an agent."""
    password = secrets.token_urlsafe(12)
    user_id = await synapse.server.create_user(f"outsider-{uuid.uuid4().hex[:8]}", password)
    client = AsyncClient(synapse.base_url, user_id)
    assert isinstance(await client.login(password), LoginResponse)
    return client


def as_client(synapse: SynapseInfo) -> AsyncClient:
    """A client acting as the appservice's bot (relaydesk's own account in appservice mode)."""
    registration = synapse.registration
    client = AsyncClient(synapse.base_url, registration.sender_user_id)
    client.access_token = registration.as_token
    client.user_id = registration.sender_user_id
    return client


async def still_open(user: str) -> bool:
    """Whether the customer's conversation is not closed (an outsider's ``!close`` did nothing)."""
    identity = await Identity.get(external_id=user)
    conversation = await Conversation.filter(identity_id=identity.id).order_by("-id").first()
    return conversation is not None and conversation.state != ConversationState.CLOSED


async def open_invites_as_in_an_old_room(bridge: AsyncClient, room_id: str) -> None:
    """Set the room's invite level back to 0, as portal rooms made before this fix had it."""
    levels = await bridge.room_get_state_event(room_id, "m.room.power_levels")
    content: dict[str, Any] = dict(levels.content)
    content["invite"] = 0
    response = await bridge.room_put_state(room_id, "m.room.power_levels", content)
    assert isinstance(response, RoomPutStateResponse), response


async def test_only_relaydesk_can_invite_into_a_portal_room(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent
) -> None:
    desk, _channel, user, room_id = await first_contact(synapse, sqlite_url, make_desk, "Ivy", "hello")
    matrix = cast(MatrixWorkspace, desk.plugins["matrix"])
    stranger = await outsider(synapse)
    await agent.sync_until(lambda: room_id in agent.timeline)
    levels = (await agent.client.room_get_state_event(room_id, "m.room.power_levels")).content
    agent_level = levels["users"][synapse.agent_user_id]
    assert levels["invite"] > agent_level and levels["kick"] > agent_level
    assert levels["events"]["m.room.power_levels"] > agent_level
    assert levels["state_default"] > agent_level

    # neither an agent nor the customer's ghost can bring someone in
    refused = await agent.client.room_invite(room_id, stranger.user_id)
    assert isinstance(refused, RoomInviteError) and refused.status_code == "M_FORBIDDEN", refused
    ghost = await matrix.ghost("customers", user, "Ivy (Customers)")  # the ghost's own session
    try:
        refused = await ghost.room_invite(room_id, stranger.user_id)
        assert isinstance(refused, RoomInviteError) and refused.status_code == "M_FORBIDDEN", refused
    finally:
        await stranger.close()


async def test_a_non_agent_in_an_old_portal_room_is_not_relayed_and_the_room_is_told_once(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent
) -> None:
    desk, channel, user, room_id = await first_contact(synapse, sqlite_url, make_desk, "Jo", "hi there")
    stranger = await outsider(synapse)
    bridge = as_client(synapse)
    try:
        await agent.sync_until(lambda: room_id in agent.timeline)
        await open_invites_as_in_an_old_room(bridge, room_id)
        invited = await agent.client.room_invite(room_id, stranger.user_id)  # what the old rooms allowed
        assert isinstance(invited, RoomInviteResponse), invited
        await stranger.join(room_id)

        for text in ("Your refund is approved, send your card number here", "!close", "!faq add x | y"):
            sent = await stranger.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": text})
            assert not hasattr(sent, "status_code"), sent
        await agent.say(room_id, "I am the agent here.")

        # the agent's later message arrives, so the outsider's earlier ones were seen and dropped
        await channel.sent.wait_for(lambda items: any(d.external_user_id == user for d in items), 20)
        assert await desk.wait_settled(30)
        assert channel.texts_to(user) == ["I am the agent here."]
        assert await still_open(user)

        await agent.sync_until(
            lambda: any(
                s == synapse.registration.sender_user_id and stranger.user_id in t and "not one of" in t
                for s, t in agent.texts(room_id)
            )
        )
        notices = [t for s, t in agent.texts(room_id) if stranger.user_id in t and "not one of" in t]
        assert len(notices) == 1  # told once, not for each of the three messages
    finally:
        await bridge.close()
        await stranger.close()


async def test_bot_mode_relays_only_agents(
    synapse: SynapseInfo,
    sqlite_url: str,
    bot_desk: BotDeskFactory,  # noqa: F811
    bot: BotAccount,  # noqa: F811
    agent: Agent,
) -> None:
    desk = await bot_desk(sqlite_url, bot_yaml(synapse, bot), bot.password)
    channel = cast(MemoryChannel, desk.plugins["customers"])
    user = f"kim-{uuid.uuid4().hex[:6]}"
    await channel.customer_writes(user, "hello", name="Kim")
    assert await desk.wait_settled(30)
    room_id = await room_of(user)
    await agent.sync_until(lambda: room_id in agent.timeline)
    stranger = await outsider(synapse)
    refused = await agent.client.room_invite(room_id, stranger.user_id)
    assert isinstance(refused, RoomInviteError) and refused.status_code == "M_FORBIDDEN", refused

    # someone relaydesk's bot account let in anyway (by hand, or before this fix) is still no agent
    bot_client = AsyncClient(synapse.base_url, bot.user_id)
    try:
        assert isinstance(await bot_client.login(bot.password), LoginResponse)
        assert isinstance(await bot_client.room_invite(room_id, stranger.user_id), RoomInviteResponse)
        await stranger.join(room_id)
        await stranger.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "!close"})
        await stranger.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "pay me here"})
        await agent.say(room_id, "Agent speaking.")
        await channel.sent.wait_for(lambda items: any(d.external_user_id == user for d in items), 20)
        assert await desk.wait_settled(30)
        assert channel.texts_to(user) == ["Agent speaking."]
        assert await still_open(user)
        await agent.sync_until(
            lambda: any(
                s == bot.user_id and stranger.user_id in t and "not one of" in t
                for s, t in agent.texts(room_id)
            )
        )
    finally:
        await bot_client.logout()
        await bot_client.close()
        await stranger.close()
