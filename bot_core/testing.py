"""Test doubles that implement the adapter interfaces for real: a channel and a workspace kept in memory.

They are ordinary plugins, so a test enables them in a plugins.yaml (by dotted path
``bot_core.testing:MemoryChannel`` / ``bot_core.testing:MemoryWorkspace``) and drives a real desk:
"a customer writes X", "an agent answers Y", then reads what the room and the customer received.
Failures are injected by queueing the exceptions the platform would cause.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from bot_core.adapters import (
    ChannelCapabilities,
    ConversationView,
    CustomerCard,
    Delivery,
    DeliveryError,
    MessageView,
    PostedRef,
    RoomRef,
    SentRef,
    Undeliverable,
)
from bot_core.events import AgentMessage, Attachment, CustomerMessage, DeliveryStatus, DeliveryStatusValue
from bot_core.plugin import EmptyConfig, Plugin, PluginKind, route

_ids = itertools.count(1)


class _Recorder:
    """A list that tests can wait on."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Condition()

    async def add(self, item: Any) -> None:
        async with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float = 10.0) -> list[Any]:
        """Wait until ``predicate(items)`` holds; raises TimeoutError with what was seen otherwise."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self.items)), timeout)
            except TimeoutError:
                raise TimeoutError(f"condition not met in {timeout}s; recorded: {self.items!r}") from None
        return self.items


class MemoryChannel(Plugin["MemoryChannel.Config"]):
    """A customer-side channel double: ``customer_writes`` pushes a message in, ``sent`` records deliveries."""

    name = "memory_channel"
    kind = PluginKind.CHANNEL

    class Config(BaseModel):
        """Settings of the channel double."""

        model_config = ConfigDict(extra="forbid")
        max_text_length: int = 4096
        record_file: str | None = None  # also append every delivery as a JSON line (for subprocess tests)
        crash_before_send: bool = False  # SIGKILL this process on the first send (crash tests)
        edits: bool = True  # the platform can edit a sent message
        deletes: bool = True  # the platform can delete a sent message
        waits_for_customer: bool = False  # it may raise AwaitingCustomer (held until the customer writes)
        choices: int = 0  # up to this many choices of a reply arrive as Delivery.choices (buttons)
        reactions: bool = False  # reactions are sent (else the outbox skips them)

    capabilities = ChannelCapabilities()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent = _Recorder()
        self.sending = _Recorder()  # every delivery as its send starts (before send_delay and failures)
        self.typing_shown = _Recorder()  # (user, agent name, active) as the workspace reported agents typing
        self.failures: list[DeliveryError] = []
        self.send_delay: float = 0.0
        config = self.config
        self.capabilities = ChannelCapabilities(
            max_text_length=config.max_text_length,
            edits=config.edits,
            deletes=config.deletes,
            waits_for_customer=config.waits_for_customer,
            choices=config.choices,
            reactions=config.reactions,
        )

    async def customer_types(self, user: str, active: bool) -> None:
        """A customer starts (or stops) typing, as the platform reports it."""
        await self.services.customer_typing(user, active)

    async def customer_writes(
        self, user: str, text: str, *, message_id: str | None = None, name: str | None = None, **extra: Any
    ) -> str:
        """A customer sends ``text``; returns the platform message id used."""
        message_id = message_id or f"m{next(_ids)}"
        await self.services.inbound(
            CustomerMessage(
                channel=self.instance_name,
                external_user_id=user,
                external_message_id=message_id,
                text=text,
                display_name=name,
                **extra,
            )
        )
        return message_id

    async def send(self, delivery: Delivery) -> SentRef:
        """Record the delivery, or raise the next queued failure."""
        if self.config.crash_before_send:
            os.kill(os.getpid(), signal.SIGKILL)
        await self.sending.add(delivery)
        if self.send_delay:
            await asyncio.sleep(self.send_delay)
        if self.failures:
            raise self.failures.pop(0)
        record_file = self.config.record_file
        if record_file:
            line = {"user": delivery.external_user_id, "text": delivery.text, "key": delivery.idempotency_key}
            with Path(record_file).open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")
        await self.sent.add(delivery)
        return SentRef(f"out{delivery.outbox_id}")

    async def reports_status(
        self, user: str, channel_message_id: str, status: DeliveryStatusValue, error: str = ""
    ) -> None:
        """The platform reports what became of a message it was sent (``channel_message_id``: its
        ``SentRef`` id, ``out<outbox id>``)."""
        await self.services.inbound(
            DeliveryStatus(
                channel=self.instance_name,
                external_user_id=user,
                channel_message_id=channel_message_id,
                status=status,
                error=error,
            )
        )

    async def typing(self, external_user_id: str, agent_name: str, active: bool) -> None:
        """Record that the customer would see ``agent_name`` typing (or stop typing)."""
        await self.typing_shown.add((external_user_id, agent_name, active))

    @route("POST", "/test/memory-channel/inbound")
    async def http_inbound(self, request: web.Request) -> web.Response:
        """Let a test in another process make a customer write: ``{"user", "text", "id"}``."""
        data = await request.json()
        await self.customer_writes(str(data["user"]), str(data["text"]), message_id=data.get("id"))
        return web.json_response({"ok": True})

    def texts_to(self, user: str) -> list[str]:
        """What the customer ``user`` received, in order."""
        return [d.text for d in self.sent.items if d.external_user_id == user]


@dataclass
class RoomPost:
    """Something that appeared in a room."""

    kind: str  # customer_message, notice, card, status, invite
    text: str
    sender: str = ""
    ref: str = ""
    edit_of: str | None = None
    attachments: tuple[Attachment, ...] = ()
    reply_to: str | None = None
    mentions: tuple[str, ...] = ()  # a notice addressed to these agents (ctx.mention)


@dataclass
class MemoryRoom:
    """A room of the workspace double."""

    room_id: str
    conversation: ConversationView
    posts: list[RoomPost] = field(default_factory=list)
    card: CustomerCard | None = None


# every room any MemoryWorkspace made in this process: a desk started again on the same database finds
# its rooms, as a real workspace's rooms outlive a restart of relaydesk
_ROOMS_EVER_MADE: dict[str, MemoryRoom] = {}


class MemoryWorkspace(Plugin[EmptyConfig]):
    """An agent-side workspace double: rooms in memory; ``agent_writes`` pushes an agent message in."""

    name = "memory_workspace"
    kind = PluginKind.WORKSPACE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rooms: dict[str, MemoryRoom] = {}
        self.rooms_asked: list[ConversationView] = []  # every ensure_room call, as the core made it
        self.channels: dict[str, list[str]] = {}  # ops channel -> texts posted there
        self.invited: dict[str, list[str]] = {}  # room id -> who ctx.invite invited there
        self.not_agents: set[str] = set()  # invites of these are refused
        self.images: dict[str, list[tuple[str, bytes]]] = {}  # ops channel -> (file name, image) posted there
        self._channel_posts: dict[str, PostedRef] = {}  # key -> what it posted (a retry shows once)
        self.posts = _Recorder()
        self.failures: list[DeliveryError] = []
        self.customer_typing_shown = (
            _Recorder()
        )  # (room id, channel, user, name, active) as the core reported
        self.presences: dict[str, str] = {}  # user id -> online / unavailable / offline, as a test sets it

    async def presence(self, user_id: str) -> str | None:
        """The presence a test set for ``user_id`` (None: unknown)."""
        return self.presences.get(user_id)

    async def ensure_room(self, conversation: ConversationView) -> RoomRef:
        """Create a room for the conversation's customer."""
        self.rooms_asked.append(conversation)
        room_id = conversation.existing_room_id or f"!room{next(_ids)}"
        self.rooms.setdefault(room_id, MemoryRoom(room_id, conversation))
        _ROOMS_EVER_MADE.setdefault(room_id, self.rooms[room_id])
        return RoomRef(self.instance_name, room_id)

    def _room(self, room_id: str) -> MemoryRoom:
        """A room of this double, or one an earlier double (before a restart) made: rooms outlive relaydesk."""
        if room_id not in self.rooms and room_id in _ROOMS_EVER_MADE:
            self.rooms[room_id] = MemoryRoom(room_id, _ROOMS_EVER_MADE[room_id].conversation)
        return self.rooms[room_id]

    async def _post(self, room: RoomRef, post: RoomPost) -> PostedRef:
        if self.failures:
            raise self.failures.pop(0)
        post.ref = f"$ev{next(_ids)}"
        self._room(room.room_id).posts.append(post)
        await self.posts.add((room.room_id, post))
        return PostedRef(post.ref)

    async def customer_typing(
        self, room: RoomRef, channel: str, external_user_id: str, name: str, active: bool
    ) -> None:
        """Record that the agents would see the customer typing (or stop typing) in the room."""
        await self.customer_typing_shown.add((room.room_id, channel, external_user_id, name, active))

    async def post_as_customer(self, room: RoomRef, message: MessageView) -> PostedRef:
        """Record the customer's message in the room."""
        return await self._post(
            room,
            RoomPost(
                "customer_message",
                message.text,
                message.sender_name,
                edit_of=message.edit_of,
                attachments=message.attachments,
                reply_to=message.reply_to,
            ),
        )

    async def notice(self, room: RoomRef, text: str, key: str = "") -> PostedRef:
        """Record a bot notice in the room."""
        return await self._post(room, RoomPost("notice", text, "relaydesk"))

    async def post_to_channel(self, channel: str, text: str, key: str = "") -> PostedRef:
        """Record an ops post in ``channel`` (recorded as room ``#channel``); a key seen before posts nothing."""
        if key and key in self._channel_posts:
            return self._channel_posts[key]
        if self.failures:
            raise self.failures.pop(0)
        ref = PostedRef(f"$ev{next(_ids)}")
        self.channels.setdefault(channel, []).append(text)
        if key:
            self._channel_posts[key] = ref
        await self.posts.add((f"#{channel}", RoomPost("ops", text, "relaydesk", ref.external_message_id)))
        return ref

    async def show_delivery_status(
        self, room: RoomRef, workspace_message_id: str, status: str, key: str = ""
    ) -> None:
        """Record a delivery status shown on a message (a post of kind ``status``: the status as its text,
        the marked message's id as ``edit_of``)."""
        await self._post(room, RoomPost("status", status, "relaydesk", edit_of=workspace_message_id))

    async def mention(self, room: RoomRef, user_ids: tuple[str, ...], text: str, key: str = "") -> PostedRef:
        """Record a notice addressed to ``user_ids`` (a notice whose ``mentions`` name them)."""
        return await self._post(room, RoomPost("notice", text, "relaydesk", mentions=tuple(user_ids)))

    async def invite(self, room: RoomRef, user_id: str) -> None:
        """Record that ``user_id`` was invited to the room (``invited``: room id -> user ids, in order);
        someone in ``not_agents`` is refused, as a real workspace refuses whoever is not one of its agents."""
        if user_id in self.not_agents:
            raise Undeliverable(f"{user_id} is not one of this desk's agents")
        self.invited.setdefault(room.room_id, []).append(user_id)
        await self.posts.add((room.room_id, RoomPost("invite", user_id, "relaydesk")))

    async def post_image_to_channel(
        self, channel: str, caption: str, image: bytes, name: str, key: str = ""
    ) -> PostedRef:
        """Record the caption (as :meth:`post_to_channel`) and the image in ``channel``; once per key."""
        if key and key in self._channel_posts:
            return self._channel_posts[key]
        ref = await self.post_to_channel(channel, caption, key)
        self.images.setdefault(channel, []).append((name, image))
        return ref

    async def show_card(self, room: RoomRef, card: CustomerCard, key: str = "") -> None:
        """Keep the latest card of the room."""
        self._room(room.room_id).card = card
        await self.posts.add((room.room_id, RoomPost("card", card.state)))

    async def agent_writes(
        self,
        room_id: str,
        text: str,
        *,
        agent: str = "@alice",
        message_id: str | None = None,
        edit_of: str | None = None,
        ops_channel: str | None = None,
    ) -> str:
        """An agent writes ``text`` in the room; returns the event id used. With ``ops_channel`` the room
        is that ops room (``room_id`` is then free: ``ops-<team>`` will do), as a workspace reports a
        command typed there."""
        message_id = message_id or f"$agent{next(_ids)}"
        await self.services.inbound(
            AgentMessage(
                workspace=self.instance_name,
                room_id=room_id,
                external_message_id=message_id,
                agent_id=agent,
                agent_name=agent.lstrip("@").title(),
                text=text,
                edit_of=edit_of,
                ops_channel=ops_channel if text.lstrip().startswith("!") else None,
            )
        )
        return message_id

    async def agent_types(self, room_id: str, *, agent: str = "@alice", active: bool = True) -> None:
        """An agent starts (or stops) typing in the room, as a workspace reports it."""
        await self.services.agent_typing(room_id, agent.lstrip("@").title(), active)

    async def agent_redacts(self, room_id: str, event_id: str, *, agent: str = "@alice") -> str:
        """An agent deletes their earlier message ``event_id`` in the room."""
        redaction_id = f"$redact{next(_ids)}"
        await self.services.inbound(
            AgentMessage(
                workspace=self.instance_name,
                room_id=room_id,
                external_message_id=redaction_id,
                agent_id=agent,
                redacts=event_id,
            )
        )
        return redaction_id

    def room_of(self, user: str) -> MemoryRoom:
        """The room showing the customer ``user`` (raises KeyError if none)."""
        for room in self.rooms.values():
            if room.conversation.external_user_id == user:
                return room
        raise KeyError(user)

    def texts(self, room_id: str, kind: str | None = None) -> list[str]:
        """The texts posted in a room, optionally only of one kind."""
        return [p.text for p in self.rooms[room_id].posts if kind is None or p.kind == kind]
