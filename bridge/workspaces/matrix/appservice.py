"""Matrix workspace as an application service: a portal room per customer, the customer as a ghost user.

Synapse pushes room events to ``PUT /_matrix/app/v1/transactions/{txnId}``; the hs_token is checked on
every push (403 otherwise). Agent messages become :class:`AgentMessage` events; the bridge's own events
and its ghosts' events are never echoed back. A replayed transaction is answered at once, and its
events are dropped again by the engine's receipts (source = this workspace, id = the Matrix event id).
"""

from __future__ import annotations

import asyncio
import hmac
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

import aiohttp
from aiohttp import web
from nio import AsyncClient, RoomCreateError, RoomPreset, RoomTypingResponse
from pydantic import BaseModel, ConfigDict

from bot_core.adapters import (
    ConversationView,
    CustomerCard,
    MessageView,
    PostedRef,
    RoomRef,
)
from bot_core.events import AgentMessage, Attachment
from bot_core.plugin import Plugin, PluginKind, route
from bridge.workspaces.matrix.agent_events import agent_message
from bridge.workspaces.matrix.card import PinnedCards
from bridge.workspaces.matrix.devserver import DevHomeserver, load_registration, prepare_dev_files
from bridge.workspaces.matrix.errors import MatrixError, check_response
from bridge.workspaces.matrix.media import MediaLinks, attachment_content, upload_from
from bridge.workspaces.matrix.roster import AgentRoster
from bridge.workspaces.matrix.send import send_message
from bridge.workspaces.matrix.transactions import transaction_body
from bridge.workspaces.matrix.typing_relay import TypingRelay

SEEN_TRANSACTIONS = 1000
MEDIA_PREFIX = "/matrix/media"
CUSTOMER_TYPING_MS = 10_000  # the widget repeats "typing" every few seconds while the customer types


class DevHomeserverSettings(BaseModel):
    """Where the throwaway Synapse keeps its state, and its port (``homeserver`` is then ignored)."""

    model_config = ConfigDict(extra="forbid")
    data_dir: Path = Path("var/matrix/synapse")
    port: int = 8008


class MatrixWorkspace(Plugin):
    """Agents answer customers from Matrix rooms; each customer is a ghost user in their portal room."""

    name = "matrix"
    kind = PluginKind.WORKSPACE

    class Config(BaseModel):
        """Settings of the Matrix workspace (the tokens come from the registration file, not plugins.yaml)."""

        model_config = ConfigDict(extra="forbid")
        homeserver: str = "http://127.0.0.1:8008"
        server_name: str = "localhost"
        mode: Literal["appservice"] = "appservice"
        registration: Path = Path("var/matrix/relaydesk-registration.yaml")
        agents: list[str] = []  # user ids invited to every portal room
        space: str | None = None  # ...and the members of this Matrix space (alias or room id; invite the bot)
        dev_homeserver: DevHomeserverSettings | None = None  # start a throwaway Synapse (demo, make run)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.config
        assert isinstance(config, MatrixWorkspace.Config)
        self.settings = config
        self.homeserver = config.homeserver
        self._dev_server: DevHomeserver | None = None
        self._bot: AsyncClient | None = None
        self._ghosts: dict[str, AsyncClient] = {}
        self._ghost_lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None
        self._seen_txns: OrderedDict[str, None] = OrderedDict()
        self._cards = PinnedCards()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the dev homeserver if configured, read the registration, open the bot's client."""
        if self.settings.dev_homeserver is not None:
            await self._start_dev_homeserver(self.settings.dev_homeserver)
        self.registration = load_registration(self.settings.registration)
        server_name = self.settings.server_name
        self.bot_user_id = f"@{self.registration.sender_localpart}:{server_name}"
        self._ghost_prefix = self.registration.user_prefix
        self._ghost_re = re.compile(rf"^@{re.escape(self._ghost_prefix)}.*:{re.escape(server_name)}$")
        self._http = aiohttp.ClientSession()
        self._media = MediaLinks(MEDIA_PREFIX, self.registration.hs_token.encode())
        self._bot = self._client(self.bot_user_id, self.registration.as_token)
        self._roster = AgentRoster(self.settings.agents, self.settings.space, self._is_ours)
        self._typing = TypingRelay(self.services.agent_typing, self._is_ours)
        await self._roster.start(self._bot)

    async def ready(self) -> None:
        """Ping the homeserver: it then pushes at once the transactions it queued while we were down."""
        assert self._http is not None
        url = f"{self.homeserver.rstrip('/')}/_matrix/client/v1/appservice/{self.registration.id}/ping"
        headers = {"Authorization": f"Bearer {self.registration.as_token}"}
        try:
            async with self._http.post(url, json={}, headers=headers) as resp:
                if resp.status != 200:
                    self.log.warning("homeserver ping failed", extra={"status": resp.status})
        except aiohttp.ClientError as exc:
            self.log.warning("homeserver not reachable", extra={"error": str(exc)})

    async def _start_dev_homeserver(self, dev: DevHomeserverSettings) -> None:
        registration, _note, password = prepare_dev_files(
            dev.data_dir, self.settings.registration, self.services.http_base_url, self.settings.server_name
        )
        self._dev_server = DevHomeserver(
            dev.data_dir,
            port=dev.port,
            server_name=self.settings.server_name,
            registrations=[registration.path],
            agents=[("agent", password)],
        )
        await self._dev_server.start()
        self.homeserver = self._dev_server.base_url
        agent = self._dev_server.user_id("agent")
        if agent not in self.settings.agents:
            self.settings = self.settings.model_copy(update={"agents": [*self.settings.agents, agent]})
        self.services.announce(
            f"Matrix dev homeserver: {self.homeserver}  (log in with any Matrix client, e.g. Element)\n"
            f"  user: agent ({agent})   password: {password}\n"
            "  every customer appears in a room of their own; answer there."
        )

    async def stop(self) -> None:
        """Close every client (and stop the dev homeserver if this plugin started it)."""
        if hasattr(self, "_typing"):
            await self._typing.close()
        for client in [self._bot, *self._ghosts.values()]:
            if client is not None:
                await client.close()
        self._ghosts.clear()
        if self._http:
            await self._http.close()
        if self._dev_server is not None:
            await self._dev_server.stop()
            self._dev_server = None

    def _client(self, user_id: str, token: str) -> AsyncClient:
        client = AsyncClient(self.homeserver, user_id)
        client.access_token = token
        client.user_id = user_id
        return client

    # -- ghosts --------------------------------------------------------------------------------

    def ghost_id(self, channel: str, external_user_id: str) -> str:
        """The ghost user id of a customer identity, e.g. ``@relay_telegram_12345:server``."""
        safe = re.sub(
            r"[^a-z0-9._=\-]", lambda m: f"={ord(m.group()):02x}", f"{channel}_{external_user_id}".lower()
        )
        return f"@{self._ghost_prefix}{safe}:{self.settings.server_name}"

    async def ghost(self, channel: str, external_user_id: str, display_name: str) -> AsyncClient:
        """A client acting as the customer's ghost: registered (or logged in) with the as_token."""
        user_id = self.ghost_id(channel, external_user_id)
        async with self._ghost_lock:
            client = self._ghosts.get(user_id)
            if client is None:
                token = await self._ghost_token(user_id.split(":", 1)[0][1:])
                client = self._client(user_id, token)
                check_response(await client.set_displayname(display_name), "set ghost display name")
                self._ghosts[user_id] = client
        return client

    async def _ghost_token(self, localpart: str) -> str:
        assert self._http is not None
        headers = {"Authorization": f"Bearer {self.registration.as_token}"}
        base = self.homeserver.rstrip("/")
        body = {"type": "m.login.application_service", "username": localpart, "inhibit_login": False}
        async with self._http.post(f"{base}/_matrix/client/v3/register", json=body, headers=headers) as resp:
            data = await resp.json()
            if resp.status == 200:
                return str(data["access_token"])
            if data.get("errcode") != "M_USER_IN_USE":
                raise MatrixError(f"register ghost {localpart}: {data.get('errcode')} {data.get('error')}")
        login = {
            "type": "m.login.application_service",
            "identifier": {"type": "m.id.user", "user": localpart},
        }
        async with self._http.post(f"{base}/_matrix/client/v3/login", json=login, headers=headers) as resp:
            data = await resp.json()
            if resp.status != 200:
                raise MatrixError(f"log in ghost {localpart}: {data.get('errcode')} {data.get('error')}")
            return str(data["access_token"])

    # -- Workspace protocol --------------------------------------------------------------------

    async def ensure_room(self, conversation: ConversationView) -> RoomRef:
        """Create the customer's portal room: the ghost, the agents, a name and topic saying who and where."""
        assert self._bot is not None
        if conversation.existing_room_id:
            return RoomRef(self.instance_name, conversation.existing_room_id)
        channel = conversation.channel.capitalize()
        display = f"{conversation.customer_name} ({channel})"
        ghost = await self.ghost(conversation.channel, conversation.external_user_id, display)
        if conversation.avatar_url:
            try:
                mxc = await self._upload_from(ghost, conversation.avatar_url, "avatar")
                check_response(await ghost.set_avatar(mxc), "set ghost avatar")
            except (MatrixError, aiohttp.ClientError) as exc:
                self.log.warning("customer avatar not copied", extra={"error": str(exc)})
        agents = await self._roster.invitees(self._bot)
        response = await self._bot.room_create(
            name=display,
            topic=f"Support conversation with {conversation.customer_name} on {channel}, relayed by relaydesk",
            federate=False,
            preset=RoomPreset.private_chat,
            invite=[ghost.user_id, *agents],
            power_level_override={
                # the creator (the bot) is omitted: room version 12 gives creators unlimited power
                "users": {a: 50 for a in agents},
                "events": {"m.room.pinned_events": 50},
            },
        )
        if isinstance(response, RoomCreateError):
            check_response(response, "create portal room")
        room_id = response.room_id
        check_response(await ghost.join(room_id), "ghost joins portal room")
        return RoomRef(self.instance_name, room_id)

    async def post_as_customer(self, room: RoomRef, message: MessageView) -> PostedRef:
        """Post the customer's message as their ghost (an edit replaces the earlier event)."""
        ghost = await self.ghost(
            message.channel,
            message.external_user_id,
            f"{message.sender_name} ({message.channel.capitalize()})",
        )
        content: dict[str, Any] = {"msgtype": "m.text", "body": message.text}
        if message.reply_to and not message.edit_of:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": message.reply_to}}
        if message.edit_of:
            content = {
                "msgtype": "m.text",
                "body": f"* {message.text}",
                "m.new_content": {"msgtype": "m.text", "body": message.text},
                "m.relates_to": {"rel_type": "m.replace", "event_id": message.edit_of},
            }
        last: str | None = None
        for attachment in message.attachments:
            last = await self._post_attachment(ghost, room.room_id, attachment)
        if not message.text and last is not None:
            return PostedRef(last)
        # the outbox row's key as the transaction id: a retried post shows once
        return PostedRef(
            await send_message(ghost, room.room_id, content, message.idempotency_key, "post as customer")
        )

    async def customer_typing(
        self, room: RoomRef, channel: str, external_user_id: str, name: str, active: bool
    ) -> None:
        """Show the customer's ghost typing in the room (or stop); best effort, like any typing notice."""
        ghost = await self.ghost(channel, external_user_id, f"{name} ({channel.capitalize()})")
        response = await ghost.room_typing(room.room_id, typing_state=active, timeout=CUSTOMER_TYPING_MS)
        if not isinstance(response, RoomTypingResponse):
            self.services.log.info("customer typing not shown", extra={"room": room.room_id})

    async def _upload_from(self, client: AsyncClient, url: str, name: str, mime: str | None = None) -> str:
        """Copy a file the channel serves at ``url`` into the homeserver's media repository; its mxc URI."""
        assert self._http is not None
        return await upload_from(self._http, client, url, name, mime)

    async def _post_attachment(self, ghost: AsyncClient, room_id: str, attachment: Attachment) -> str | None:
        if not attachment.url:
            return None
        mxc = await self._upload_from(
            ghost, attachment.url, attachment.name or attachment.kind, attachment.mime_type
        )
        content = attachment_content(attachment, mxc)
        response = check_response(
            await ghost.room_send(room_id, "m.room.message", content), "post attachment"
        )
        return str(response.event_id)

    # -- media from agents, served to channels ---------------------------------------------------

    def media_url(self, mxc: str) -> str:
        """A signed relaydesk URL from which a channel adapter can fetch an agent's file."""
        return self._media.link(self.services.http_base_url, mxc)

    @route("GET", MEDIA_PREFIX + "/{server}/{media_id}")
    async def media(self, request: web.Request) -> web.StreamResponse:
        """Serve an agent's file from the homeserver's (authenticated) media repository to a channel."""
        assert self._http is not None
        return await self._media.serve(request, self._http, self.homeserver, self.registration.as_token)

    async def notice(self, room: RoomRef, text: str) -> PostedRef:
        """Post an m.notice from the bot."""
        assert self._bot is not None
        response = check_response(
            await self._bot.room_send(room.room_id, "m.room.message", {"msgtype": "m.notice", "body": text}),
            "notice",
        )
        return PostedRef(response.event_id)

    async def show_card(self, room: RoomRef, card: CustomerCard) -> None:
        """Pin the customer card, or update the pinned one in place (an m.replace edit)."""
        assert self._bot is not None
        await self._cards.show(self._bot, room.room_id, card)

    # -- transactions from the homeserver ------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return hmac.compare_digest(supplied.encode(), self.registration.hs_token.encode())

    @route("POST", "/_matrix/app/v1/ping")
    async def ping(self, request: web.Request) -> web.Response:
        """Answer the homeserver's ping (sent when we ping it, to check the link both ways)."""
        if not self._authorised(request):
            return web.json_response({"errcode": "M_FORBIDDEN", "error": "bad hs_token"}, status=403)
        return web.json_response({})

    @route("PUT", "/_matrix/app/v1/transactions/{txn_id}")
    async def transaction(self, request: web.Request) -> web.Response:
        """Receive pushed events: check the hs_token, skip replays, turn agent messages into events."""
        if not self._authorised(request):
            return web.json_response({"errcode": "M_FORBIDDEN", "error": "bad hs_token"}, status=403)
        txn_id = request.match_info["txn_id"]
        if txn_id in self._seen_txns:
            return web.json_response({})
        body = await transaction_body(request)
        if body is None:
            self.log.info("malformed transaction refused", extra={"txn_id": txn_id})
            return web.json_response({"errcode": "M_NOT_JSON", "error": "malformed transaction"}, status=400)
        events, ephemerals = body
        for event in events:
            agent_event = self._agent_message(event)
            if agent_event is not None:
                await self.services.inbound(agent_event)  # stored before we answer 200
        for ephemeral in ephemerals:
            self._typing.event(ephemeral)
        self._seen_txns[txn_id] = None
        while len(self._seen_txns) > SEEN_TRANSACTIONS:
            self._seen_txns.popitem(last=False)
        return web.json_response({})

    def _agent_message(self, event: dict[str, Any]) -> AgentMessage | None:
        """An agent's message in a room, or None for everything else (our own and our ghosts' events too)."""
        return agent_message(
            self.instance_name, self._is_ours, str(event.get("room_id", "")), event, self.media_url
        )

    def _is_ours(self, sender: str) -> bool:
        return sender == self.bot_user_id or bool(self._ghost_re.match(sender))
