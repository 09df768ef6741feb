"""A human agent on the test Synapse, shared by the Matrix workspace tests (appservice and bot mode)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from nio import (
    AsyncClient,
    InviteMemberEvent,
    LoginResponse,
    RoomMessageNotice,
    RoomMessageText,
    RoomSendResponse,
    RoomTypingResponse,
    SyncResponse,
    TypingNoticeEvent,
    UploadResponse,
)

from bot_core.testing import MemoryChannel
from bridge.workspaces.matrix.devserver import free_port
from storage.models import Identity, Room
from tests.matrix_server import SynapseInfo


class Agent:
    """A plain nio client that syncs, joins the rooms it is invited to, keeps every event, and writes."""

    def __init__(self, synapse: SynapseInfo) -> None:
        self.client = AsyncClient(synapse.base_url, synapse.agent_user_id)
        self.synapse = synapse
        self.timeline: dict[str, list[Any]] = {}  # room id -> nio events, in order
        self.typing: dict[str, list[str]] = {}  # room id -> who is typing there, as last reported
        self.next_batch: str | None = None

    async def login(self) -> None:
        """Log in and skip what happened before (only new events are kept)."""
        assert isinstance(await self.client.login(self.synapse.agent_password), LoginResponse)
        first = await self.client.sync(timeout=0)
        assert isinstance(first, SyncResponse)
        self.next_batch = first.next_batch

    async def sync_until(self, predicate: Callable[[], Any], timeout: float = 20.0) -> None:
        """Sync (joining invites) until ``predicate()`` is true, or fail after ``timeout`` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"condition not met in {timeout}s; events: {self.events}")
            response = await self.client.sync(timeout=1000, since=self.next_batch)
            assert isinstance(response, SyncResponse)
            self.next_batch = response.next_batch
            for room_id, info in response.rooms.invite.items():
                if any(isinstance(e, InviteMemberEvent) for e in info.invite_state):
                    await self.client.join(room_id)
            for room_id, joined in response.rooms.join.items():
                self.timeline.setdefault(room_id, []).extend(joined.timeline.events)
                for ephemeral in joined.ephemeral:
                    if isinstance(ephemeral, TypingNoticeEvent):
                        self.typing[room_id] = list(ephemeral.users)

    @property
    def events(self) -> dict[str, list[dict[str, Any]]]:
        """The raw events (as JSON) seen in each room."""
        return {room: [e.source for e in events] for room, events in self.timeline.items()}

    def texts(self, room_id: str) -> list[tuple[str, str]]:
        """(sender, body) of every text message and notice seen in the room."""
        return [
            (e.sender, e.body)
            for e in self.timeline.get(room_id, [])
            if isinstance(e, (RoomMessageText, RoomMessageNotice))
        ]

    def messages(self, room_id: str, sender: str | None = None) -> list[dict[str, Any]]:
        """The content of every m.room.message seen in the room (from ``sender`` if given)."""
        return [
            e["content"]
            for e in self.events.get(room_id, [])
            if e.get("type") == "m.room.message" and (sender is None or e.get("sender") == sender)
        ]

    def event(self, room_id: str, event_id: str) -> dict[str, Any] | None:
        """The raw event ``event_id`` if it was seen in the room."""
        return next((e for e in self.events.get(room_id, []) if e.get("event_id") == event_id), None)

    async def say(self, room_id: str, text: str) -> str:
        """Write ``text`` in the room; returns its event id."""
        response = await self.client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": text})
        assert isinstance(response, RoomSendResponse), response
        return str(response.event_id)


@pytest.fixture
async def agent(synapse: SynapseInfo) -> AsyncIterator[Agent]:
    """The agent account of the test Synapse, logged in."""
    agent = Agent(synapse)
    await agent.login()
    yield agent
    await agent.client.close()


async def room_of(user: str) -> str:
    """The Matrix room id relaydesk stored for the customer ``user``."""
    identity = await Identity.get(external_id=user)
    room = await Room.get(customer_id=identity.customer_id)
    return room.external_id


def mark_unsent(sqlite_url: str, outbox_ids: list[int]) -> None:
    """Put sent outbox rows back to pending in a stopped desk's SQLite file: a crash after the platform
    took them and before they were marked sent, as the next process finds it."""
    db = sqlite3.connect(sqlite_url.removeprefix("sqlite://"))
    try:
        with db:
            for outbox_id in outbox_ids:
                db.execute(
                    "UPDATE outbox_item SET status = 'pending', claimed_until = NULL,"
                    " next_attempt_at = created_at WHERE id = ?",
                    (outbox_id,),
                )
    finally:
        db.close()


async def edit_then_redact(agent: Agent, channel: MemoryChannel, room_id: str) -> str:
    """The agent writes, edits, then redacts a message; asserts the customer's copy followed each step.

    Returns the platform id of the customer's copy.
    """
    await agent.sync_until(lambda: room_id in agent.client.rooms)
    first = await agent.say(room_id, "It ships Monday")
    await channel.sent.wait_for(lambda items: len(items) == 1, 20)
    edit = {
        "msgtype": "m.text",
        "body": "* It ships Tuesday",
        "m.new_content": {"msgtype": "m.text", "body": "It ships Tuesday"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": first},
    }
    await agent.client.room_send(room_id, "m.room.message", edit)
    await channel.sent.wait_for(lambda items: len(items) == 2, 20)
    sent_id = f"out{channel.sent.items[0].outbox_id}"
    assert (channel.sent.items[1].text, channel.sent.items[1].edit_of) == ("It ships Tuesday", sent_id)
    await agent.client.room_redact(room_id, first)
    await channel.sent.wait_for(lambda items: len(items) == 3, 20)
    assert channel.sent.items[2].delete_of == sent_id
    return sent_id


PNG_BYTES = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@pytest.fixture
async def file_host() -> AsyncIterator[str]:
    """Where a channel serves customers' files (and avatars) from: every path answers a 1x1 PNG."""

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=PNG_BYTES, content_type="image/png")

    app = web.Application()
    app.router.add_get("/files/{name}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/files"
    await runner.cleanup()


async def agent_sends_image(agent: Agent, channel: MemoryChannel, room_id: str) -> None:
    """The agent posts a picture; asserts the channel got a signed link to its bytes, and a forged one is refused."""
    upload, _ = await agent.client.upload(
        lambda *_: PNG_BYTES, content_type="image/png", filename="replacement.png", filesize=len(PNG_BYTES)
    )
    assert isinstance(upload, UploadResponse), upload
    content = {
        "msgtype": "m.image",
        "body": "replacement.png",
        "url": upload.content_uri,
        "info": {"mimetype": "image/png", "size": len(PNG_BYTES)},
    }
    await agent.client.room_send(room_id, "m.room.message", content)
    await channel.sent.wait_for(lambda items: any(d.attachments for d in items), 20)
    sent = next(d for d in channel.sent.items if d.attachments)
    attachment = sent.attachments[0]
    assert (attachment.kind, attachment.name, attachment.mime_type) == (
        "image",
        "replacement.png",
        "image/png",
    )
    assert attachment.url is not None
    async with aiohttp.ClientSession() as http:
        async with http.get(attachment.url) as resp:
            assert resp.status == 200 and await resp.read() == PNG_BYTES
        async with http.get(attachment.url.split("?")[0] + "?sig=forged") as resp:
            assert resp.status == 403  # the media proxy serves only what relaydesk handed out


async def type_until_shown(
    agent: Agent, room_id: str, wait_shown: Callable[[float], Awaitable[object]], timeout: float = 20.0
) -> None:
    """The agent starts typing in the room until ``wait_shown(seconds)`` returns (it raises TimeoutError or
    AssertionError when the customer's side did not show it in time).

    Synapse drops ephemeral events such as typing while it re-sends an appservice's queued transactions:
    the tests' desks come and go on one appservice port, so a push can fail between two tests, and the
    ping in ``ready()`` starts a re-send that takes a moment. An agent whose "typing" was lost just goes on
    typing, so the agent here stops and starts again every 2 s, like a keyboard would.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await agent.client.room_typing(room_id, True, timeout=30_000)
        assert isinstance(response, RoomTypingResponse), response
        left = deadline - asyncio.get_running_loop().time()
        try:
            await wait_shown(min(2.0, max(left, 0.1)))
            return
        except (TimeoutError, AssertionError):
            if left <= 2.0:
                raise
        response = await agent.client.room_typing(room_id, False)
        assert isinstance(response, RoomTypingResponse), response


async def typing_and_reply(agent: Agent, channel: MemoryChannel, user: str, room_id: str) -> None:
    """The agent types (the customer's channel is told, then told it stopped), then answers; the customer
    replies to that answer: the room shows the reply as an ``m.in_reply_to`` of the agent's message."""
    await agent.sync_until(lambda: room_id in agent.client.rooms)
    await type_until_shown(
        agent,
        room_id,
        lambda s: channel.typing_shown.wait_for(lambda items: (user, "agent", True) in items, s),
    )
    response = await agent.client.room_typing(room_id, False)
    assert isinstance(response, RoomTypingResponse), response
    await channel.typing_shown.wait_for(lambda items: items[-1] == (user, "agent", False), 20)

    answer = await agent.say(room_id, "Yes, two are left in blue")
    await channel.sent.wait_for(lambda items: any(d.external_user_id == user for d in items), 20)
    delivered = next(d for d in channel.sent.items if d.external_user_id == user)
    await channel.customer_writes(user, "I'll take one", name="Hana", reply_to=f"out{delivered.outbox_id}")
    await agent.sync_until(
        lambda: any(c.get("body", "").endswith("I'll take one") for c in agent.messages(room_id))
    )
    reply = next(c for c in agent.messages(room_id) if c.get("body", "").endswith("I'll take one"))
    assert reply["m.relates_to"] == {"m.in_reply_to": {"event_id": answer}}
