"""Matrix workspace as an application service: a portal room per customer, the customer as a ghost user.

Synapse pushes room events to ``PUT /_matrix/app/v1/transactions/{txnId}``; the hs_token is checked on
every push (403 otherwise). Agent messages become :class:`AgentMessage` events; the bridge's own events
and its ghosts' events are never echoed back. Every push is handled by its events, never skipped by its
transaction id: a homeserver numbers its transactions from 1 again after some restarts (Synapse on
SQLite, a re-created database, a changed registration). An event seen before is dropped here, and
again by the engine's receipts (source = this workspace, id = the Matrix event id).

Posts are idempotent across relaydesk's restarts: each ghost logs in with the same device every time
(the homeserver de-duplicates transaction ids per device), and every room post uses the outbox row's
key as its transaction id. Ghosts' posts carry an empty ``m.mentions``: a customer typing an agent's
name never notifies anyone.
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

from bot_core.api import (
    AgentMessage,
    Attachment,
    ConversationView,
    CustomerCard,
    MessageView,
    Plugin,
    PluginKind,
    PostedRef,
    RoomRef,
    clean_display_name,
    clean_file_name,
    route,
)
from bridge.workspaces.matrix.agent_events import agent_message
from bridge.workspaces.matrix.card import PinnedCards
from bridge.workspaces.matrix.devserver import DevHomeserver, load_registration, prepare_dev_files
from bridge.workspaces.matrix.errors import MatrixError, check_response
from bridge.workspaces.matrix.media import MediaLinks, attachment_content, upload_from
from bridge.workspaces.matrix.ops_rooms import OpsRooms, upload_image
from bridge.workspaces.matrix.portal import PortalRooms
from bridge.workspaces.matrix.roster import AgentRoster, invite_agent, portal_power_levels, read_presence
from bridge.workspaces.matrix.send import mention_content, send_message, status_reaction
from bridge.workspaces.matrix.transactions import transaction_body
from bridge.workspaces.matrix.typing_relay import TypingRelay

SEEN_TRANSACTIONS = 1000
SEEN_EVENTS = 10_000
GHOST_DEVICE = "RELAYDESK"  # every ghost's one device: the homeserver scopes transaction ids to it
NO_MENTIONS: dict[str, Any] = {}  # m.mentions of a ghost's post: customers' text notifies no one
MEDIA_PREFIX = "/matrix/media"
CUSTOMER_TYPING_MS = 10_000  # the widget repeats "typing" every few seconds while the customer types


class DevHomeserverSettings(BaseModel):
    """Where the throwaway Synapse keeps its state, and its port (``homeserver`` is then ignored)."""

    model_config = ConfigDict(extra="forbid")
    data_dir: Path = Path("var/matrix/synapse")
    port: int = 8008


class MatrixWorkspace(Plugin["MatrixWorkspace.Config"]):
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
        self.settings = config
        self.homeserver = config.homeserver
        self._dev_server: DevHomeserver | None = None
        self._bot: AsyncClient | None = None
        self._ghosts: dict[str, AsyncClient] = {}
        self._ghost_lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None
        self._seen_txns: OrderedDict[str, frozenset[str]] = OrderedDict()  # txn id -> its event ids
        self._seen_events: OrderedDict[str, None] = OrderedDict()
        self._portals = PortalRooms(self.instance_name, self.log)
        self._cards = PinnedCards()
        self._bot_device = ""

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
        self._media = MediaLinks(MEDIA_PREFIX, self.registration.hs_token.encode(), self.services.downloads)
        self._bot = self._client(self.bot_user_id, self.registration.as_token)
        self._roster = AgentRoster(self.settings.agents, self.settings.space, self._is_ours)
        self._ops = OpsRooms(self.instance_name, self.log)
        self._typing = TypingRelay(self.services.agent_typing, self._not_an_agent)
        await self._roster.start(self._bot)
        self._bot_device = await self._ensure_bot_device()
        self._cards.device_id = self._bot_device

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

    async def _ensure_bot_device(self) -> str:
        """Give the appservice's own user the device its posts name (made once); "" when impossible.

        Its as_token has no device, so the homeserver would remember the bot's transaction ids (the
        notices', the card's) only in memory, until it restarts; posting "from" a device keeps them
        in its database. Without the device the bot still posts, with that shorter memory.
        """
        assert self._http is not None
        headers = {"Authorization": f"Bearer {self.registration.as_token}"}
        base = self.homeserver.rstrip("/")
        try:
            async with self._http.get(
                f"{base}/_matrix/client/v3/devices/{GHOST_DEVICE}", headers=headers
            ) as resp:
                if resp.status == 200:
                    return GHOST_DEVICE
            login = {
                "type": "m.login.application_service",
                "identifier": {"type": "m.id.user", "user": self.registration.sender_localpart},
                "device_id": GHOST_DEVICE,
                "initial_device_display_name": "relaydesk",
            }
            async with self._http.post(
                f"{base}/_matrix/client/v3/login", json=login, headers=headers
            ) as resp:
                if resp.status == 200:
                    return GHOST_DEVICE  # the session's token is not needed: the as_token names the device
                reason = f"HTTP {resp.status}"
        except aiohttp.ClientError as exc:
            reason = str(exc)
        self.log.warning(
            "the bot has no device: its notices are de-duplicated in memory only", extra={"error": reason}
        )
        return ""

    async def _ghost_token(self, localpart: str) -> str:
        assert self._http is not None
        headers = {"Authorization": f"Bearer {self.registration.as_token}"}
        base = self.homeserver.rstrip("/")
        body = {
            "type": "m.login.application_service",
            "username": localpart,
            "inhibit_login": False,
            "device_id": GHOST_DEVICE,
        }
        async with self._http.post(f"{base}/_matrix/client/v3/register", json=body, headers=headers) as resp:
            data = await resp.json()
            if resp.status == 200:
                return str(data["access_token"])
            if data.get("errcode") != "M_USER_IN_USE":
                raise MatrixError(f"register ghost {localpart}: {data.get('errcode')} {data.get('error')}")
        login = {
            "type": "m.login.application_service",
            "identifier": {"type": "m.id.user", "user": localpart},
            "device_id": GHOST_DEVICE,  # the same device at every start: retried posts are recognised
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
        name = clean_display_name(conversation.customer_name, fallback="Customer")
        display = ghost_name(conversation.customer_name, conversation.channel)
        ghost = await self.ghost(conversation.channel, conversation.external_user_id, display)
        if conversation.avatar_url:
            try:
                mxc = await self._upload_from(ghost, conversation.avatar_url, "avatar")
                check_response(await ghost.set_avatar(mxc), "set ghost avatar")
            except (MatrixError, aiohttp.ClientError) as exc:
                self.log.warning("customer avatar not copied", extra={"error": str(exc)})
        bot = self._bot

        async def create(marker: dict[str, Any]) -> str:
            agents = await self._roster.invitees(bot)
            response = await bot.room_create(
                name=display,
                topic=f"Support conversation with {name} on {channel}, relayed by relaydesk",
                federate=False,
                preset=RoomPreset.private_chat,
                invite=[ghost.user_id, *agents],
                initial_state=[marker],
                # the creator (the bot) is omitted: room version 12 gives creators unlimited power
                power_level_override=portal_power_levels(agents),
            )
            if isinstance(response, RoomCreateError):
                check_response(response, "create portal room")
            return str(response.room_id)

        room_id, _created = await self._portals.get_or_create(bot, conversation.customer_id, create)
        check_response(await ghost.join(room_id), "ghost joins portal room")
        return RoomRef(self.instance_name, room_id)

    async def post_as_customer(self, room: RoomRef, message: MessageView) -> PostedRef:
        """Post the customer's message as their ghost (an edit replaces the earlier event)."""
        ghost = await self.ghost(
            message.channel, message.external_user_id, ghost_name(message.sender_name, message.channel)
        )
        # the plain body only, and no one mentioned: what a customer types never notifies an agent
        content: dict[str, Any] = {"msgtype": "m.text", "body": message.text, "m.mentions": NO_MENTIONS}
        if message.reply_to and not message.edit_of:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": message.reply_to}}
        if message.edit_of:
            content = {
                "msgtype": "m.text",
                "body": f"* {message.text}",
                "m.mentions": NO_MENTIONS,
                "m.new_content": {"msgtype": "m.text", "body": message.text, "m.mentions": NO_MENTIONS},
                "m.relates_to": {"rel_type": "m.replace", "event_id": message.edit_of},
            }

        async def post() -> PostedRef:
            last: str | None = None
            for index, attachment in enumerate(message.attachments):
                txn = f"{message.idempotency_key}:file{index}" if message.idempotency_key else ""
                last = await self._post_attachment(ghost, room.room_id, attachment, txn)
            if not message.text and last is not None:
                return PostedRef(last)
            # the outbox row's key as the transaction id: a retried post shows once
            return PostedRef(
                await send_message(ghost, room.room_id, content, message.idempotency_key, "post as customer")
            )

        try:
            return await post()
        except MatrixError as exc:
            # a customer linked across channels writes from another identity: its ghost is not in the
            # room yet (checked only on this refusal, so the usual post costs nothing more)
            if "M_FORBIDDEN" not in str(exc):
                raise
            await self._ghost_joins(ghost, room.room_id)
            return await post()

    async def _ghost_joins(self, ghost: AsyncClient, room_id: str) -> None:
        """Invite ``ghost`` into the portal room (only relaydesk may invite) and join it there."""
        assert self._bot is not None
        await self._bot.room_invite(room_id, ghost.user_id)  # refused when invited already: the join says
        check_response(await ghost.join(room_id), "ghost joins portal room")

    async def customer_typing(
        self, room: RoomRef, channel: str, external_user_id: str, name: str, active: bool
    ) -> None:
        """Show the customer's ghost typing in the room (or stop); best effort, like any typing notice."""
        ghost = await self.ghost(channel, external_user_id, ghost_name(name, channel))
        response = await ghost.room_typing(room.room_id, typing_state=active, timeout=CUSTOMER_TYPING_MS)
        if not isinstance(response, RoomTypingResponse):
            self.services.log.info("customer typing not shown", extra={"room": room.room_id})

    async def _upload_from(self, client: AsyncClient, url: str, name: str, mime: str | None = None) -> str:
        """Copy a file the channel serves at ``url`` into the homeserver's media repository; its mxc URI."""
        assert self._http is not None
        return await upload_from(self._http, client, url, name, mime)

    async def _post_attachment(
        self, ghost: AsyncClient, room_id: str, attachment: Attachment, txn: str
    ) -> str | None:
        if not attachment.url:
            return None
        name = clean_file_name(attachment.name, fallback=attachment.kind)
        mxc = await self._upload_from(ghost, attachment.url, name, attachment.mime_type)
        content = {**attachment_content(attachment, mxc), "m.mentions": NO_MENTIONS}
        return await send_message(ghost, room_id, content, txn, "post attachment")

    # -- media from agents, served to channels ---------------------------------------------------

    def media_url(self, mxc: str, room_id: str = "") -> str:
        """A signed, expiring relaydesk URL from which a channel adapter can fetch an agent's file."""
        return self._media.link(self.services.http_base_url, mxc, room_id)

    @route("GET", MEDIA_PREFIX + "/{server}/{media_id}")
    async def media(self, request: web.Request) -> web.StreamResponse:
        """Serve an agent's file from the homeserver's (authenticated) media repository to a channel."""
        assert self._http is not None
        return await self._media.serve(request, self._http, self.homeserver, self.registration.as_token)

    async def notice(self, room: RoomRef, text: str, key: str = "") -> PostedRef:
        """Post an m.notice from the bot (``key``, the outbox row's, is its transaction id)."""
        assert self._bot is not None
        content = {"msgtype": "m.notice", "body": text}
        return PostedRef(
            await send_message(self._bot, room.room_id, content, key, "notice", self._bot_device)
        )

    async def show_delivery_status(
        self, room: RoomRef, workspace_message_id: str, status: str, key: str = ""
    ) -> None:
        """React to the agent's message with ``✓ delivered`` / ``✓✓ read`` as the bot (``key``: the
        transaction id, so a retried mark shows once)."""
        content = status_reaction(workspace_message_id, status)
        if content is None or self._bot is None:
            return
        await send_message(
            self._bot, room.room_id, content, key, "delivery status", self._bot_device, "m.reaction"
        )

    async def post_to_channel(self, channel: str, text: str, key: str = "") -> PostedRef:
        """Post ``text`` into ``channel``'s ops room (made once, by its alias; the agents invited)."""
        bot = self._bot
        assert bot is not None
        room_id = await self._ops.room(bot, channel, lambda: self._roster.invitees(bot))
        content = {"msgtype": "m.text", "body": text}  # m.text: an alert should notify the agents
        return PostedRef(await send_message(bot, room_id, content, key, "ops post", self._bot_device))

    async def presence(self, user_id: str) -> str | None:
        """An agent's Matrix presence, as the homeserver tells the bridge's bot (see :func:`read_presence`)."""
        if self._bot is None:
            return None
        return await read_presence(self._bot, user_id, self.log)

    async def mention(self, room: RoomRef, user_ids: tuple[str, ...], text: str, key: str = "") -> PostedRef:
        """Post ``text`` from the bot mentioning ``user_ids`` (an m.text with ``m.mentions``: they are notified)."""
        assert self._bot is not None
        content = mention_content(user_ids, text)
        return PostedRef(
            await send_message(self._bot, room.room_id, content, key, "mention", self._bot_device)
        )

    async def invite(self, room: RoomRef, user_id: str) -> None:
        """Invite an agent to the portal room (a hand-over), unless they are in it or invited already."""
        assert self._bot is not None
        await invite_agent(self._bot, self._roster, room.room_id, user_id)

    async def post_image_to_channel(
        self, channel: str, caption: str, image: bytes, name: str, key: str = ""
    ) -> PostedRef:
        """Post ``caption``, then the uploaded image, into ``channel``'s ops room (``key`` and ``key:image``)."""
        bot = self._bot
        assert bot is not None
        room_id = await self._ops.room(bot, channel, lambda: self._roster.invitees(bot))
        text = {"msgtype": "m.text", "body": caption}
        await send_message(bot, room_id, text, key, "ops post", self._bot_device)
        content = await upload_image(bot, image, name)
        image_key = f"{key}:image" if key else ""
        return PostedRef(await send_message(bot, room_id, content, image_key, "ops image", self._bot_device))

    async def show_card(self, room: RoomRef, card: CustomerCard, key: str = "") -> None:
        """Pin the customer card, or update the pinned one in place (an m.replace edit)."""
        assert self._bot is not None
        await self._cards.show(self._bot, room.room_id, card, key)

    # -- transactions from the homeserver ------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ")
        # aiohttp keeps bytes that are not UTF-8 as lone surrogates: encoded back as they came, never a 500
        return hmac.compare_digest(
            supplied.encode("utf-8", "surrogateescape"), self.registration.hs_token.encode()
        )

    @route("POST", "/_matrix/app/v1/ping")
    async def ping(self, request: web.Request) -> web.Response:
        """Answer the homeserver's ping (sent when we ping it, to check the link both ways)."""
        if not self._authorised(request):
            return web.json_response({"errcode": "M_FORBIDDEN", "error": "bad hs_token"}, status=403)
        return web.json_response({})

    @route("PUT", "/_matrix/app/v1/transactions/{txn_id}")
    async def transaction(self, request: web.Request) -> web.Response:
        """Receive pushed events: check the hs_token, turn agent messages into events.

        Handled by its events, whatever its transaction id: an id seen before may carry new events
        (the homeserver numbers from 1 again after a restart). Events seen before are skipped.
        """
        if not self._authorised(request):
            return web.json_response({"errcode": "M_FORBIDDEN", "error": "bad hs_token"}, status=403)
        txn_id = request.match_info["txn_id"]
        body = await transaction_body(request)
        if body is None:
            self.log.info("malformed transaction refused", extra={"txn_id": txn_id})
            return web.json_response({"errcode": "M_NOT_JSON", "error": "malformed transaction"}, status=400)
        events, ephemerals = body
        ids = frozenset(str(e["event_id"]) for e in events if isinstance(e.get("event_id"), str))
        fields = {"txn_id": txn_id, "events": len(events), "workspace": self.instance_name}
        earlier = self._seen_txns.get(txn_id)
        if earlier is not None and earlier == ids:
            self.log.debug("replayed transaction", extra=fields)
        elif ids and all(i in self._seen_events for i in ids):
            self.log.info("transaction of events seen before", extra=fields)
        elif earlier is not None:
            self.log.info("transaction id reused with new events (the homeserver restarted?)", extra=fields)
        for event in events:
            event_id = event.get("event_id")
            if isinstance(event_id, str) and event_id in self._seen_events:
                continue
            agent_event = self._agent_message(event)
            if agent_event is not None and await self._from_an_agent(agent_event):
                agent_event = await self._ops.tag(agent_event)
                await self.services.inbound(agent_event)  # stored before we answer 200
            if isinstance(event_id, str):
                self._remember(self._seen_events, event_id, None, SEEN_EVENTS)
        for ephemeral in ephemerals:
            self._typing.event(ephemeral)
        self._remember(self._seen_txns, txn_id, ids, SEEN_TRANSACTIONS)
        return web.json_response({})

    @staticmethod
    def _remember(seen: OrderedDict[str, Any], key: str, value: Any, limit: int) -> None:
        seen[key] = value
        seen.move_to_end(key)
        while len(seen) > limit:
            seen.popitem(last=False)

    def _agent_message(self, event: dict[str, Any]) -> AgentMessage | None:
        """An agent's message in a room, or None for everything else (our own and our ghosts' events too)."""
        return agent_message(
            self.instance_name, self._is_ours, str(event.get("room_id", "")), event, self.media_url
        )

    async def _from_an_agent(self, message: AgentMessage) -> bool:
        """Whether the sender is an agent; if not, the room is told (once per sender) and it is dropped."""
        assert self._bot is not None
        room = RoomRef(self.instance_name, message.room_id)
        return await self._roster.admit(
            self._bot, message.room_id, message.agent_id, lambda text: self.notice(room, text), self.log
        )

    def _is_ours(self, sender: str) -> bool:
        return sender == self.bot_user_id or bool(self._ghost_re.match(sender))

    def _not_an_agent(self, sender: str) -> bool:
        return self._is_ours(sender) or not self._roster.known_agent(sender)


def ghost_name(name: str, channel: str) -> str:
    """A ghost's display name (and the room's name): ``Alice (Telegram)``, control and bidi characters removed."""
    return f"{clean_display_name(name, fallback='Customer')} ({channel.capitalize()})"
