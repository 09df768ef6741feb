"""The Matrix workspace in appservice mode, against a real Synapse (started once per test session)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any, cast

import aiohttp

from bot_core.desk import Desk
from bot_core.testing import MemoryChannel
from bridge.workspaces.matrix.appservice import MatrixWorkspace
from storage.models import Room
from tests.bridge.workspaces.matrix_agent import (
    PNG_BYTES,
    Agent,
    agent_sends_image,
    edit_then_redact,
    room_of,
    typing_and_reply,
)
from tests.conftest import DeskFactory
from tests.matrix_server import SynapseInfo


def matrix_yaml(synapse: SynapseInfo, agents: str | None = None) -> str:
    return f"""
server: {{host: 127.0.0.1, port: {synapse.appservice_port}}}
plugins:
  - customers: {{use: "bot_core.testing:MemoryChannel"}}{synapse.matrix_plugin_yaml(agents=agents)}
"""


async def first_contact(
    synapse: SynapseInfo, url: str, make_desk: DeskFactory, name: str, text: str
) -> tuple[Desk, MemoryChannel, str, str]:
    """A desk on the test Synapse, and a new customer ``name`` whose first message ``text`` opened a room.

    Returns (desk, channel, the customer's user id, the portal room's id).
    """
    desk = await make_desk(url, matrix_yaml(synapse), serve_http=True, http_port=synapse.appservice_port)
    channel = cast(MemoryChannel, desk.plugins["customers"])
    user = f"{name.lower()}-{uuid.uuid4().hex[:6]}"
    await channel.customer_writes(user, text, name=name)
    assert await desk.wait_settled(30)
    return desk, channel, user, await room_of(user)


async def test_first_contact_creates_the_portal_room_with_ghost_and_card_and_the_reply_comes_back(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent
) -> None:
    desk, channel, user, room_id = await first_contact(
        synapse, sqlite_url, make_desk, "Alice", "Hello, my parcel never arrived"
    )
    matrix = cast(MatrixWorkspace, desk.plugins["matrix"])
    ghost = matrix.ghost_id("customers", user)

    await agent.sync_until(
        lambda: any(t == "Hello, my parcel never arrived" for _, t in agent.texts(room_id))
    )
    assert (ghost, "Hello, my parcel never arrived") in agent.texts(room_id)
    name = await agent.client.room_get_state_event(room_id, "m.room.name")
    topic = await agent.client.room_get_state_event(room_id, "m.room.topic")
    assert name.content["name"] == "Alice (Customers)"
    assert "Alice" in topic.content["topic"] and "Customers" in topic.content["topic"]
    profile = await agent.client.get_displayname(ghost)
    assert profile.displayname == "Alice (Customers)"
    pinned = await agent.client.room_get_state_event(room_id, "m.room.pinned_events")
    card_id = pinned.content["pinned"][0]
    card = next(e for e in agent.timeline[room_id] if e.event_id == card_id)
    assert card.body.startswith("Customer card: Alice")

    await agent.say(room_id, "Sorry about that! A new parcel ships today.")
    await channel.sent.wait_for(lambda items: any(d.external_user_id == user for d in items), 20)
    assert channel.texts_to(user) == ["Sorry about that! A new parcel ships today."]
    # the bridge never echoes its own events: the ghost's message was not relayed back to the customer
    assert "Hello, my parcel never arrived" not in channel.texts_to(user)

    await agent.say(room_id, "!note VIP customer")
    await agent.sync_until(lambda: any("Note: VIP customer" in t for _, t in agent.texts(room_id)))
    assert channel.texts_to(user) == ["Sorry about that! A new parcel ships today."]  # notes stay internal
    # the card was updated in place: the agent's answer assigned the conversation
    await agent.sync_until(
        lambda: any(
            e.source.get("content", {}).get("m.relates_to", {}).get("event_id") == card_id
            and "owner" in e.source["content"]["m.new_content"]["body"]
            for e in agent.timeline[room_id]
        )
    )


async def test_a_restarted_relaydesk_reuses_the_room(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent
) -> None:
    desk = await make_desk(
        sqlite_url, matrix_yaml(synapse), serve_http=True, http_port=synapse.appservice_port
    )
    user = f"bob-{uuid.uuid4().hex[:6]}"
    await cast(MemoryChannel, desk.plugins["customers"]).customer_writes(user, "first visit", name="Bob")
    assert await desk.wait_settled(30)
    room_id = await room_of(user)
    await desk.stop(timeout=10)

    desk = await make_desk(
        sqlite_url, matrix_yaml(synapse), serve_http=True, http_port=synapse.appservice_port
    )
    await cast(MemoryChannel, desk.plugins["customers"]).customer_writes(user, "back again", name="Bob")
    assert await desk.wait_settled(30)
    assert await Room.all().count() == 1
    await agent.sync_until(lambda: any(t == "back again" for _, t in agent.texts(room_id)))


async def test_a_post_retried_with_the_same_outbox_key_shows_once_in_the_room(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent
) -> None:
    """A crash between Synapse's answer and the row being marked sent makes the outbox post it again:
    the row's key is the Matrix transaction id, so Synapse answers with the first event."""
    from bot_core.adapters import MessageView, RoomRef

    desk, _channel, user, room_id = await first_contact(synapse, sqlite_url, make_desk, "Dan", "hello")
    matrix = cast(MatrixWorkspace, desk.plugins["matrix"])
    view = MessageView(
        message_id=1,
        text="sent twice, shown once",
        sender_name="Dan",
        channel="customers",
        external_user_id=user,
        idempotency_key=f"customers:m-{uuid.uuid4().hex}:mirror",
    )
    room = RoomRef("matrix", room_id)
    first = await matrix.post_as_customer(room, view)
    again = await matrix.post_as_customer(room, view)
    assert again.external_message_id == first.external_message_id
    later = dataclasses.replace(
        view, text="a new key is a new post", idempotency_key=f"{view.idempotency_key}-2"
    )
    other = await matrix.post_as_customer(room, later)
    assert other.external_message_id != first.external_message_id
    # the later post arrived, so everything before it has too: the retried one is there once
    await agent.sync_until(lambda: any(t == "a new key is a new post" for _, t in agent.texts(room_id)))
    assert [t for _, t in agent.texts(room_id)].count("sent twice, shown once") == 1


async def test_wrong_hs_token_is_refused_and_a_replayed_transaction_is_delivered_once(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk, channel, user, room_id = await first_contact(synapse, sqlite_url, make_desk, "Carol", "hi")
    url = f"http://127.0.0.1:{synapse.appservice_port}/_matrix/app/v1/transactions/txn-{uuid.uuid4().hex}"
    event = {
        "type": "m.room.message",
        "room_id": room_id,
        "sender": synapse.agent_user_id,
        "event_id": f"$ev-{uuid.uuid4().hex}",
        "content": {"msgtype": "m.text", "body": "answer from a replayed transaction"},
    }
    body = json.dumps({"events": [event]})
    async with aiohttp.ClientSession() as http:
        async with http.put(url, data=body, headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 403
            assert (await resp.json())["errcode"] == "M_FORBIDDEN"
        auth = {"Authorization": f"Bearer {synapse.registration.hs_token}"}
        for _ in range(2):  # Synapse retries a transaction it did not see acknowledged
            async with http.put(url, data=body, headers=auth) as resp:
                assert resp.status == 200
        # the same event again in a new transaction id is still one delivery
        async with http.put(url + "-b", data=body, headers=auth) as resp:
            assert resp.status == 200
    await channel.sent.wait_for(lambda items: len(items) >= 1, 20)
    assert await desk.bus.wait_idle(10) and await desk.outbox.wait_settled(10)
    assert channel.texts_to(user) == ["answer from a replayed transaction"]


async def test_agent_edits_and_redactions_in_matrix_follow_to_the_customer(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent
) -> None:
    _desk, channel, _user, room_id = await first_contact(
        synapse, sqlite_url, make_desk, "Dan", "what's the status?"
    )
    await edit_then_redact(agent, channel, room_id)


async def test_images_travel_both_ways_through_the_media_repository_and_the_ghost_has_the_avatar(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent, file_host: str
) -> None:
    from nio import DownloadResponse, RoomMessageImage

    from bot_core.events import Attachment

    desk = await make_desk(
        sqlite_url, matrix_yaml(synapse), serve_http=True, http_port=synapse.appservice_port
    )
    channel = cast(MemoryChannel, desk.plugins["customers"])
    matrix = cast(MatrixWorkspace, desk.plugins["matrix"])
    user = f"erin-{uuid.uuid4().hex[:6]}"
    photo = Attachment(
        kind="image", url=f"{file_host}/broken-lamp.png", mime_type="image/png", name="broken-lamp.png"
    )
    await channel.customer_writes(
        user, "", name="Erin", attachments=(photo,), avatar_url=f"{file_host}/erin.png"
    )
    assert await desk.wait_settled(30)
    room_id = await room_of(user)

    def images() -> list[Any]:
        return [e for e in agent.timeline.get(room_id, []) if isinstance(e, RoomMessageImage)]

    await agent.sync_until(lambda: len(images()) == 1)
    image = images()[0]
    assert image.sender == matrix.ghost_id("customers", user) and image.body == "broken-lamp.png"
    downloaded = await agent.client.download(image.url)
    assert isinstance(downloaded, DownloadResponse) and downloaded.body == PNG_BYTES
    avatar = await agent.client.get_avatar(matrix.ghost_id("customers", user))
    assert avatar.avatar_url and avatar.avatar_url.startswith("mxc://")

    await agent_sends_image(agent, channel, room_id)


async def test_the_card_links_to_earlier_conversations_in_the_room(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent
) -> None:
    desk, channel, user, room_id = await first_contact(synapse, sqlite_url, make_desk, "Fay", "first problem")
    await agent.sync_until(lambda: any(t == "first problem" for _, t in agent.texts(room_id)))
    first_event = next(
        e.event_id for e in agent.timeline[room_id] if getattr(e, "body", "") == "first problem"
    )
    await agent.say(room_id, "!close")
    await agent.sync_until(lambda: any("Conversation closed" in t for _, t in agent.texts(room_id)))
    await channel.customer_writes(user, "second problem", name="Fay")
    assert await desk.wait_settled(30)

    def card_bodies() -> list[str]:
        return [
            e.source["content"].get("m.new_content", {}).get("formatted_body", "")
            for e in agent.timeline.get(room_id, [])
            if "m.new_content" in e.source.get("content", {})
        ]

    link = f"https://matrix.to/#/{room_id.replace('!', '%21').replace(':', '%3A')}/{first_event.replace('$', '%24')}"
    await agent.sync_until(lambda: any(link in body for body in card_bodies()))


async def test_members_of_the_agents_space_are_invited_to_each_new_portal_room(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent
) -> None:
    from nio import AsyncClient, LoginResponse, RoomCreateResponse

    async def team_member(name: str) -> AsyncClient:
        password = f"pw-{uuid.uuid4().hex}"
        user_id = await synapse.server.create_user(f"{name}-{uuid.uuid4().hex[:6]}", password)
        client = AsyncClient(synapse.base_url, user_id)
        assert isinstance(await client.login(password), LoginResponse)
        return client

    space = await agent.client.room_create(space=True, name="Support team")
    assert isinstance(space, RoomCreateResponse)
    bot = f"@{synapse.registration.sender_localpart}:{synapse.server_name}"
    lee, kim = await team_member("lee"), await team_member("kim")
    try:
        for user in (bot, lee.user_id):
            await agent.client.room_invite(space.room_id, user)
        await lee.join(space.room_id)
        yaml_text = matrix_yaml(synapse, agents=f'[]\n        space: "{space.room_id}"')
        desk = await make_desk(sqlite_url, yaml_text, serve_http=True, http_port=synapse.appservice_port)
        channel = cast(MemoryChannel, desk.plugins["customers"])

        async def invited_to_new_room() -> set[str]:
            """A new customer writes; who was invited to their room (read as the appservice's bot)."""
            user = f"gus-{uuid.uuid4().hex[:6]}"
            await channel.customer_writes(user, "hello?", name="Gus")
            assert await desk.wait_settled(30)
            url = f"{synapse.base_url}/_matrix/client/v3/rooms/{await room_of(user)}/state"
            headers = {"Authorization": f"Bearer {synapse.registration.as_token}"}
            async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
                state = await resp.json()
            return {
                e["state_key"]
                for e in state
                if e["type"] == "m.room.member"
                and e["content"].get("membership") == "invite"
                and not e["state_key"].startswith(f"@{synapse.registration.user_prefix}")  # the ghost
            }

        # the space's members (the agent who made it, and lee) are invited; the bot itself is not
        assert await invited_to_new_room() == {synapse.agent_user_id, lee.user_id}
        # kim joins the team later: the next customer's room invites kim too
        await agent.client.room_invite(space.room_id, kim.user_id)
        await kim.join(space.room_id)
        assert await invited_to_new_room() == {synapse.agent_user_id, lee.user_id, kim.user_id}
        # a member of the space is an agent (not in the `agents` list): kim's answer is relayed
        user = f"gus-{uuid.uuid4().hex[:6]}"
        await channel.customer_writes(user, "anyone there?", name="Gus")
        assert await desk.wait_settled(30)
        room_id = await room_of(user)
        await kim.join(room_id)
        await kim.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "Kim here, hi!"})
        await channel.sent.wait_for(lambda items: any(d.external_user_id == user for d in items), 20)
        assert channel.texts_to(user) == ["Kim here, hi!"]
    finally:
        await lee.close()
        await kim.close()


async def test_customer_typing_shows_the_ghost_typing_in_the_room(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent
) -> None:
    desk, channel, user, room_id = await first_contact(
        synapse, sqlite_url, make_desk, "Ines", "One more question"
    )
    matrix = cast(MatrixWorkspace, desk.plugins["matrix"])
    ghost = matrix.ghost_id("customers", user)
    await agent.sync_until(lambda: room_id in agent.timeline)

    await channel.customer_types(user, True)
    await agent.sync_until(lambda: agent.typing.get(room_id) == [ghost])
    await channel.customer_types(user, False)
    await agent.sync_until(lambda: agent.typing.get(room_id) == [])


async def test_agent_typing_is_shown_to_the_customer_and_customer_replies_quote_the_room_message(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent
) -> None:
    _desk, channel, user, room_id = await first_contact(
        synapse, sqlite_url, make_desk, "Hana", "Is the blue one in stock?"
    )
    await typing_and_reply(agent, channel, user, room_id)


async def test_ops_posts_land_in_one_ops_room_per_team_made_once(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent
) -> None:
    """services.post_to_ops: the team's ops room is made once (found again by its alias after a restart),
    the agents are invited, and a post repeated with the same key shows once."""
    team = f"billing{uuid.uuid4().hex[:6]}"
    desk = await make_desk(
        sqlite_url, matrix_yaml(synapse), serve_http=True, http_port=synapse.appservice_port
    )
    services = desk.plugins["customers"].services
    await services.post_to_ops(team, "3 invoices wait for an answer", key="digest:1")
    await services.post_to_ops(team, "3 invoices wait for an answer", key="digest:1")
    assert await desk.wait_settled(30)
    await desk.stop(timeout=10)

    desk = await make_desk(
        sqlite_url, matrix_yaml(synapse), serve_http=True, http_port=synapse.appservice_port
    )
    await desk.plugins["customers"].services.post_to_ops(team, "queue is empty again")
    assert await desk.wait_settled(30)

    def ops_rooms() -> list[str]:
        return [r for r in agent.timeline if any(t == "queue is empty again" for _, t in agent.texts(r))]

    await agent.sync_until(lambda: ops_rooms())
    (room_id,) = ops_rooms()
    name = await agent.client.room_get_state_event(room_id, "m.room.name")
    assert name.content["name"] == f"relaydesk ops-{team}"
    texts = [t for _, t in agent.texts(room_id)]
    assert texts == ["3 invoices wait for an answer", "queue is empty again"]


async def test_an_ops_image_is_uploaded_and_posted_once_with_its_caption(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent
) -> None:
    """services.post_to_ops(image=): the supervisor's chart lands in the ops room as an m.image under its
    caption; a post repeated with the same key shows once."""
    from nio import DownloadResponse

    team = f"digest{uuid.uuid4().hex[:6]}"
    desk = await make_desk(
        sqlite_url, matrix_yaml(synapse), serve_http=True, http_port=synapse.appservice_port
    )
    services = desk.plugins["customers"].services
    for _ in range(2):
        await services.post_to_ops(team, "Daily digest", key="digest:2", image=("chart.png", PNG_BYTES))
    assert await desk.wait_settled(30)

    def ops_room() -> str | None:
        return next((r for r in agent.timeline if "Daily digest" in [t for _, t in agent.texts(r)]), None)

    await agent.sync_until(lambda: ops_room() is not None and len(agent.messages(ops_room() or "")) >= 2)
    room_id = ops_room()
    assert room_id is not None
    contents = agent.messages(room_id)
    assert [(c["msgtype"], c["body"]) for c in contents] == [
        ("m.text", "Daily digest"),
        ("m.image", "chart.png"),
    ]
    assert contents[1]["info"]["mimetype"] == "image/png"
    downloaded = await agent.client.download(contents[1]["url"])
    assert isinstance(downloaded, DownloadResponse) and downloaded.body == PNG_BYTES
