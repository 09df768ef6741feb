"""Matrix workspace in bot mode: one ordinary account relays for every customer.

For teams that cannot register an application service. The bot logs in with a password (or uses an
access token), creates a private room per customer and posts the customer's messages itself, naming
the customer in a bold prefix ("**Alice (Telegram)**: text"). Agents' messages reach relaydesk through
a ``/sync`` loop and become :class:`AgentMessage` events: text, files, edits (``m.replace``) and
deletions (redactions); commands starting with ``!`` are recognised by the engine, as in appservice
mode. A customer's files are copied into the media repository and posted by the bot, captioned with the
customer's name; an agent's file reaches the channel through a signed relaydesk link (the signing key
is kept in the database, so links waiting in the outbox survive a restart).

Nothing is lost and nothing is replayed: the sync token only moves past a batch once every agent
message in it was accepted by the bus, and it is stored in the database so that a restart resumes
where the last process stopped (messages written while relaydesk was down are relayed then). When a
room had more new events than one sync returns, the gap is paged in with ``/messages``. Events that
are pushed twice (a batch retried after a failure) are dropped by the engine's receipts.

Nothing is doubled either: the bot logs in with the same device at every start (its id derives from
the workspace instance and the account), so the homeserver recognises a post retried after a crash by its transaction id, which is
the outbox row's key for every post (customer messages, files, notices, the card); portal rooms are
made exactly once per customer (:mod:`bridge.workspaces.matrix.portal`).
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import re
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Self

import aiohttp
from aiohttp import web
from nio import (
    AsyncClient,
    AsyncClientConfig,
    LoginResponse,
    MessageDirection,
    RoomCreateError,
    RoomMessagesResponse,
    RoomPreset,
    RoomSendResponse,
    SyncResponse,
    WhoamiResponse,
)
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from bot_core.api import (
    AgentMessage,
    Attachment,
    ConversationView,
    CustomerCard,
    MessageView,
    NotAccepting,
    Plugin,
    PluginKind,
    PostedRef,
    ReceiveLoop,
    RoomRef,
    clean_display_name,
    clean_file_name,
    route,
)
from bridge.workspaces.matrix.agent_events import agent_message
from bridge.workspaces.matrix.card import PinnedCards
from bridge.workspaces.matrix.errors import MatrixError, check_response
from bridge.workspaces.matrix.media import MediaLinks, attachment_content, upload_from
from bridge.workspaces.matrix.ops_rooms import OpsRooms, upload_image
from bridge.workspaces.matrix.portal import PortalRooms
from bridge.workspaces.matrix.roster import AgentRoster, invite_agent, portal_power_levels, read_presence
from bridge.workspaces.matrix.send import mention_content, status_reaction
from bridge.workspaces.matrix.typing_relay import TypingRelay

REQUEST_TIMEOUT = 30.0  # seconds for every request but the long-polling sync
GAP_PAGE = 100  # events per /messages page when a sync's timeline was cut short
GAP_MAX_PAGES = 50  # at most this many pages per room and sync (5000 events), then a warning
PUSHED_MEMORY = 2000  # event ids remembered as pushed, so a retried batch is not pushed again
NOT_ACCEPTING_WAIT = 0.2  # the desk is starting (or stopping): try the batch again soon
USER_ID = re.compile(r"^@[^:\s]+:\S+$")
MEDIA_PREFIX = "/matrix-bot/media"


class MatrixBotWorkspace(Plugin["MatrixBotWorkspace.Config"]):
    """Agents answer customers from Matrix rooms run by one bot account (no application service needed)."""

    name = "matrix_bot"
    kind = PluginKind.WORKSPACE

    class Config(BaseModel):
        """Settings of the Matrix bot workspace: the bot's account, the agents, the sync tuning."""

        model_config = ConfigDict(extra="forbid")
        homeserver: str  # client API base URL, e.g. https://matrix.example.com
        user_id: str  # the bot account, e.g. @relaybot:example.com
        password: SecretStr | None = None  # log in with this...
        access_token: SecretStr | None = None  # ...or use this token (exactly one of the two)
        agents: list[str] = []  # user ids invited to every portal room
        space: str | None = None  # ...and the members of this Matrix space (alias or room id; invite the bot)
        sync_timeout_ms: int = Field(default=30_000, ge=0, le=300_000)  # long-poll duration of one /sync
        timeline_limit: int = Field(
            default=50, ge=1, le=1000
        )  # events per room and sync before paging the gap

        @field_validator("user_id")
        @classmethod
        def _full_user_id(cls, value: str) -> str:
            if not USER_ID.match(value):
                raise ValueError("must be a full Matrix user id such as @relaybot:example.com")
            return value

        @field_validator("agents")
        @classmethod
        def _agent_ids(cls, value: list[str]) -> list[str]:
            bad = [v for v in value if not USER_ID.match(v)]
            if bad:
                raise ValueError(f"not full Matrix user ids: {', '.join(bad)}")
            return value

        @model_validator(mode="after")
        def _one_credential(self) -> Self:
            given = [s for s in (self.password, self.access_token) if s is not None and s.get_secret_value()]
            if len(given) != 1:
                raise ValueError("give exactly one of password and access_token")
            return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.config
        self.settings = config
        self.user_id = config.user_id
        self._client: AsyncClient | None = None
        self._logged_in_here = False  # a password login made a device; stop() logs it out again
        self._since: str | None = None
        self._sync: ReceiveLoop | None = None
        self._pushed: OrderedDict[str, None] = OrderedDict()
        self._cards = PinnedCards()
        self._creator_in_power_levels = False  # older room versions want the creator listed
        self._state = self.services.store("matrix_bot")
        self._http: aiohttp.ClientSession | None = None
        self._media: MediaLinks | None = None
        self._roster = AgentRoster(config.agents, config.space, self._is_ours)
        self._typing = TypingRelay(self.services.agent_typing, self._not_an_agent)
        self._portals = PortalRooms(self.instance_name, self.log)
        self._ops = OpsRooms(self.instance_name, self.log)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Log in (or check the token) and find where to sync from; :meth:`ready` starts the sync loop.

        Raises :class:`MatrixError` when the credentials are refused or belong to another user.
        """
        self._client = AsyncClient(
            self.settings.homeserver,
            self.settings.user_id,
            config=AsyncClientConfig(
                max_limit_exceeded=0,  # hand 429s to the outbox (RetryAfter) instead of sleeping here
                max_timeouts=2,  # a few quick retries, then the error reaches the outbox or the loop
                request_timeout=REQUEST_TIMEOUT,
                encryption_enabled=False,
            ),
        )
        self._http = aiohttp.ClientSession()
        try:
            await self._authenticate()
            await self._roster.start(self._client)
            key = await self._state.get("media_key")
            if key is None:
                key = secrets.token_hex(32)
                await self._state.set("media_key", key)
            self._media = MediaLinks(MEDIA_PREFIX, str(key).encode(), self.services.downloads)
            self._since = await self._state.get(self._token_key())
            if self._since is None:
                # First start with this account: begin at "now", so earlier history is not relayed.
                first = check_response(
                    await self._client.sync(timeout=0, sync_filter=self._filter(1)), "initial sync"
                )
                assert isinstance(first, SyncResponse)
                self._since = first.next_batch
                await self._state.set(self._token_key(), self._since)
        except BaseException:
            await self._client.close()
            self._client = None
            await self._http.close()
            raise
        self.log.info("matrix bot started", extra={"user": self.user_id, "workspace": self.instance_name})

    async def ready(self) -> None:
        """Start the sync loop once relaydesk accepts events (what it pushes must find the bus open)."""
        if self._sync is None and self._client is not None:
            self._sync = self.services.receivers.loop("sync", self._sync_loop)
            self._sync.start()

    async def stop(self) -> None:
        """Stop the sync loop, log out a session made by :meth:`start`, close the client."""
        if self._sync is not None:
            await self._sync.stop()
            self._sync = None
        await self._typing.close()
        if self._client is not None:
            if self._logged_in_here:
                try:
                    await self._client.logout()
                except Exception:  # the homeserver may be gone; the device just stays listed
                    self.log.warning("matrix bot could not log out", exc_info=True)
            await self._client.close()
            self._client = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _authenticate(self) -> None:
        client = self._require_client()
        password, token = self.settings.password, self.settings.access_token
        if password is not None and password.get_secret_value():
            # the same device at every start: a post retried after a crash keeps its transaction id's scope
            client.device_id = self._device_id()
            login = await client.login(password.get_secret_value(), device_name="relaydesk")
            if not isinstance(login, LoginResponse):
                raise MatrixError(f"matrix bot login as {self.settings.user_id} refused: {login.message}")
            self._logged_in_here = True
            actual = login.user_id
        else:
            assert token is not None
            client.access_token = token.get_secret_value()
            whoami = await client.whoami()
            if not isinstance(whoami, WhoamiResponse):
                raise MatrixError(f"matrix bot access token refused: {getattr(whoami, 'message', whoami)}")
            client.device_id = whoami.device_id or ""
            actual = whoami.user_id
        if actual != self.settings.user_id:
            # The bot tells its own events apart by user id: a mismatch would relay them to customers.
            raise MatrixError(f"the matrix bot credentials belong to {actual}, not {self.settings.user_id}")
        client.user_id = actual
        self.user_id = actual

    def _device_id(self) -> str:
        """This bot's device: the same at every start of this workspace instance (no storage needed)."""
        digest = hashlib.sha256(f"{self.instance_name}\n{self.settings.user_id}".encode()).hexdigest()
        return f"RELAYDESK{digest[:8].upper()}"

    def _token_key(self) -> str:
        return f"sync_token:{self.user_id}"

    def _require_client(self) -> AsyncClient:
        if self._client is None:
            raise MatrixError("the matrix bot is not started")
        return self._client

    def _filter(self, timeline_limit: int) -> dict[str, Any]:
        """A sync filter: room timelines, state and typing (no presence, receipts, account data)."""
        return {
            "presence": {"types": []},
            "account_data": {"types": []},
            "room": {
                "timeline": {"limit": timeline_limit},
                "ephemeral": {"types": ["m.typing"]},
                "account_data": {"types": []},
            },
        }

    # -- the sync loop -------------------------------------------------------------------------

    async def _sync_loop(self, loop: ReceiveLoop) -> None:
        """Sync forever; a failed batch is fetched again from the same token after the loop's backoff."""
        while True:
            try:
                await self._sync_once()
            except NotAccepting:
                await asyncio.sleep(NOT_ACCEPTING_WAIT)
                continue
            except Exception as exc:
                await loop.failed("matrix bot sync failed, retrying", exc)
                continue
            loop.ok()

    async def _sync_once(self) -> None:
        """One /sync: push every agent message of the batch, then (only then) store the new token."""
        client = self._require_client()
        since = self._since
        response = await client.sync(
            timeout=self.settings.sync_timeout_ms,
            since=since,
            sync_filter=self._filter(self.settings.timeline_limit),
        )
        if not isinstance(response, SyncResponse):
            if getattr(response, "status_code", None) == "M_UNKNOWN_TOKEN" and self._logged_in_here:
                self.log.warning("matrix bot session ended, logging in again")
                await self._authenticate()
            check_response(response, "sync")
            raise MatrixError(f"sync: unexpected response {type(response).__name__}")
        rooms = {**response.rooms.leave, **response.rooms.join}
        for room_id, info in rooms.items():
            events = [e.source for e in info.timeline.events]
            if info.timeline.limited and info.timeline.prev_batch and since:
                events = await self._missed(room_id, info.timeline.prev_batch, since) + events
            await self._push(
                [
                    await self._ops.tag(m)
                    for m in self._agent_messages(room_id, events)
                    if await self._from_an_agent(m)
                ]
            )
        for room_id, joined in response.rooms.join.items():
            for ephemeral in joined.ephemeral:
                users = getattr(ephemeral, "users", None)
                if isinstance(users, list):  # nio's TypingNoticeEvent
                    self._typing.seen(room_id, users)
        if response.next_batch != since:
            await self._state.set(self._token_key(), response.next_batch)
        self._since = response.next_batch

    async def _missed(self, room_id: str, prev_batch: str, since: str) -> list[dict[str, Any]]:
        """The events a cut-short timeline left out (between ``since`` and ``prev_batch``), oldest first."""
        client = self._require_client()
        collected: list[dict[str, Any]] = []
        token = prev_batch
        for _ in range(GAP_MAX_PAGES):
            page = check_response(
                await client.room_messages(
                    room_id, start=token, end=since, direction=MessageDirection.back, limit=GAP_PAGE
                ),
                "page in missed events",
            )
            assert isinstance(page, RoomMessagesResponse)
            collected.extend(e.source for e in page.chunk)
            if not page.chunk or not page.end or page.end == token:
                break
            token = page.end
        else:
            self.log.warning(
                "matrix bot skipped older missed events", extra={"room": room_id, "kept": len(collected)}
            )
        collected.reverse()
        return collected

    def _is_ours(self, sender: str) -> bool:
        return sender == self.user_id

    def _not_an_agent(self, sender: str) -> bool:
        return self._is_ours(sender) or not self._roster.known_agent(sender)

    async def _from_an_agent(self, message: AgentMessage) -> bool:
        """Whether the sender is an agent; if not, the room is told (once per sender) and it is dropped."""
        room = RoomRef(self.instance_name, message.room_id)
        return await self._roster.admit(
            self._require_client(),
            message.room_id,
            message.agent_id,
            lambda text: self.notice(room, text),
            self.log,
        )

    def _agent_messages(self, room_id: str, events: Iterable[dict[str, Any]]) -> list[AgentMessage]:
        seen: set[str] = set()
        found: list[AgentMessage] = []
        for event in events:
            message = agent_message(self.instance_name, self._is_ours, room_id, event, self.media_url)
            if message is not None and message.external_message_id not in seen:
                seen.add(message.external_message_id)
                found.append(message)
        return found

    async def _push(self, messages: list[AgentMessage]) -> None:
        """Hand the messages to the bus in order (each stored before the next is pushed)."""
        for message in messages:
            if message.external_message_id in self._pushed:
                continue
            await self.services.inbound(message)
            self._pushed[message.external_message_id] = None
            while len(self._pushed) > PUSHED_MEMORY:
                self._pushed.popitem(last=False)

    # -- Workspace protocol --------------------------------------------------------------------

    async def ensure_room(self, conversation: ConversationView) -> RoomRef:
        """Create the customer's private room, named after them, with the agents invited."""
        if conversation.existing_room_id:
            return RoomRef(self.instance_name, conversation.existing_room_id)
        client = self._require_client()
        channel = conversation.channel.capitalize()

        async def create(marker: dict[str, Any]) -> str:
            return await self._create_room(client, conversation, channel, marker)

        room_id, _created = await self._portals.get_or_create(client, conversation.customer_id, create)
        return RoomRef(self.instance_name, room_id)

    async def _create_room(
        self, client: AsyncClient, conversation: ConversationView, channel: str, marker: dict[str, Any]
    ) -> str:
        agents = await self._roster.invitees(client)
        for _ in range(2):
            power = portal_power_levels(agents, self.user_id if self._creator_in_power_levels else None)
            response = await client.room_create(
                name=customer_label(conversation.customer_name, conversation.channel),
                topic=(
                    f"Support conversation with {clean_display_name(conversation.customer_name, fallback='Customer')} "
                    f"on {channel}, "
                    "relayed by relaydesk"
                ),
                federate=False,
                preset=RoomPreset.private_chat,
                invite=agents,
                initial_state=[marker],
                power_level_override=power,
            )
            if (
                isinstance(response, RoomCreateError)
                and not self._creator_in_power_levels
                and "power_level_content_override" in (response.message or "")
            ):
                # Room versions before 12 need the creator listed (version 12 refuses it): list it.
                self._creator_in_power_levels = True
                continue
            break
        check_response(response, "create room")
        return str(response.room_id)

    async def post_as_customer(self, room: RoomRef, message: MessageView) -> PostedRef:
        """Post the customer's message with their name in bold before it, then their files.

        An edit replaces the earlier text. A file that cannot be copied is listed in the text with its link.
        """
        client = self._require_client()
        label = customer_label(message.sender_name, message.channel)
        file_events: list[str] = []
        not_copied: list[Attachment] = []
        for index, attachment in enumerate(() if message.edit_of else message.attachments):
            try:
                file_events.append(
                    await self._post_attachment(room.room_id, message, index, attachment, label)
                )
            except (MatrixError, aiohttp.ClientError) as exc:
                self.log.warning("customer file not copied", extra={"error": str(exc)[:300]})
                not_copied.append(attachment)
        if not message.text and not not_copied and file_events:
            return PostedRef(file_events[-1])
        plain, rich = customer_message_text(
            message, not_copied if not message.edit_of else message.attachments
        )
        content: dict[str, Any] = {
            "msgtype": "m.text",
            "body": plain,
            "format": "org.matrix.custom.html",
            "formatted_body": rich,
        }
        if message.reply_to and not message.edit_of:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": message.reply_to}}
        if message.edit_of:
            content = {
                "msgtype": "m.text",
                "body": f"* {plain}",
                "format": "org.matrix.custom.html",
                "formatted_body": f"* {rich}",
                "m.new_content": content,
                "m.relates_to": {"rel_type": "m.replace", "event_id": message.edit_of},
            }
        # A retried post (e.g. after a timeout the homeserver had in fact accepted, or a crash before the
        # row was marked sent) reuses its transaction id, the outbox row's key, so the homeserver answers
        # with the same event instead of posting it twice. Without a key, edits get random ids (an edit
        # back to an earlier text must be posted again).
        tx_id = message.idempotency_key or (
            None if message.edit_of else f"relaydesk-{self.instance_name}-{message.message_id}"
        )
        response = check_response(
            await client.room_send(room.room_id, "m.room.message", content, tx_id=tx_id),
            "post as customer",
        )
        assert isinstance(response, RoomSendResponse)
        return PostedRef(response.event_id)

    async def _post_attachment(
        self, room_id: str, message: MessageView, index: int, attachment: Attachment, label: str
    ) -> str:
        """Copy one customer file into the media repository and post it, captioned with the customer."""
        client = self._require_client()
        if not attachment.url or self._http is None:
            raise MatrixError("the channel gave no URL for this file")
        name = clean_file_name(attachment.name, fallback=attachment.kind)
        mxc = await upload_from(self._http, client, attachment.url, name, attachment.mime_type)
        content = attachment_content(attachment, mxc, body=f"{label}: {name}")
        tx_id = (
            f"{message.idempotency_key}:file{index}"
            if message.idempotency_key
            else f"relaydesk-{self.instance_name}-{message.message_id}-file{index}"
        )
        response = check_response(
            await client.room_send(room_id, "m.room.message", content, tx_id=tx_id), "post customer file"
        )
        return str(response.event_id)

    # -- media from agents, served to channels ---------------------------------------------------

    def media_url(self, mxc: str, room_id: str = "") -> str:
        """A signed, expiring relaydesk URL from which a channel adapter can fetch an agent's file."""
        if self._media is None:
            raise MatrixError("the matrix bot is not started")
        return self._media.link(self.services.http_base_url, mxc, room_id)

    @route("GET", MEDIA_PREFIX + "/{server}/{media_id}")
    async def media(self, request: web.Request) -> web.StreamResponse:
        """Serve an agent's file from the homeserver's (authenticated) media repository to a channel."""
        client = self._require_client()
        if self._media is None or self._http is None:
            raise web.HTTPServiceUnavailable(text="the matrix bot is not started")
        return await self._media.serve(request, self._http, self.settings.homeserver, client.access_token)

    async def show_delivery_status(
        self, room: RoomRef, workspace_message_id: str, status: str, key: str = ""
    ) -> None:
        """React to the agent's message with ``✓ delivered`` / ``✓✓ read`` (``key``: the transaction id)."""
        content = status_reaction(workspace_message_id, status)
        if content is None:
            return
        client = self._require_client()
        check_response(
            await client.room_send(room.room_id, "m.reaction", content, tx_id=key or None),
            "delivery status",
        )

    async def post_to_channel(self, channel: str, text: str, key: str = "") -> PostedRef:
        """Post ``text`` into ``channel``'s ops room (made once, the agents invited); ``key`` as for notices."""
        client = self._require_client()
        room_id = await self._ops.room(client, channel, lambda: self._roster.invitees(client))
        response = check_response(
            await client.room_send(
                room_id, "m.room.message", {"msgtype": "m.text", "body": text}, tx_id=key or None
            ),
            "ops post",
        )
        return PostedRef(response.event_id)

    async def post_image_to_channel(
        self, channel: str, caption: str, image: bytes, name: str, key: str = ""
    ) -> PostedRef:
        """Post ``caption``, then the uploaded image, into ``channel``'s ops room (``key`` and ``key:image``)."""
        client = self._require_client()
        room_id = await self._ops.room(client, channel, lambda: self._roster.invitees(client))
        check_response(
            await client.room_send(
                room_id, "m.room.message", {"msgtype": "m.text", "body": caption}, tx_id=key or None
            ),
            "ops post",
        )
        content = await upload_image(client, image, name)
        response = check_response(
            await client.room_send(room_id, "m.room.message", content, tx_id=f"{key}:image" if key else None),
            "ops image",
        )
        return PostedRef(response.event_id)

    async def notice(self, room: RoomRef, text: str, key: str = "") -> PostedRef:
        """Post an m.notice from the bot (agents' clients show it as a bot message).

        ``key``, the outbox row's, is the transaction id: a notice retried after a crash shows once.
        """
        client = self._require_client()
        response = check_response(
            await client.room_send(
                room.room_id, "m.room.message", {"msgtype": "m.notice", "body": text}, tx_id=key or None
            ),
            "notice",
        )
        return PostedRef(response.event_id)

    async def presence(self, user_id: str) -> str | None:
        """An agent's Matrix presence, as the homeserver tells the bot (see :func:`read_presence`)."""
        return await read_presence(self._require_client(), user_id, self.log)

    async def mention(self, room: RoomRef, user_ids: tuple[str, ...], text: str, key: str = "") -> PostedRef:
        """Post ``text`` mentioning ``user_ids`` (an m.text with ``m.mentions``: they are notified)."""
        client = self._require_client()
        content = mention_content(user_ids, text)
        response = check_response(
            await client.room_send(room.room_id, "m.room.message", content, tx_id=key or None), "mention"
        )
        return PostedRef(response.event_id)

    async def invite(self, room: RoomRef, user_id: str) -> None:
        """Invite an agent to the portal room (a hand-over), unless they are in it or invited already."""
        await invite_agent(self._require_client(), self._roster, room.room_id, user_id)

    async def show_card(self, room: RoomRef, card: CustomerCard, key: str = "") -> None:
        """Pin the customer card, or update the pinned one in place (an m.replace edit)."""
        await self._cards.show(self._require_client(), room.room_id, card, key)


# -- message formats -------------------------------------------------------------------------------


def customer_label(name: str, channel: str) -> str:
    """How the bot names a customer: ``Alice (Telegram)`` (control and bidi characters removed)."""
    return f"{clean_display_name(name, fallback='Customer')} ({channel.capitalize()})"


def customer_message_text(
    message: MessageView, listed: Iterable[Attachment] | None = None
) -> tuple[str, str]:
    """The customer's message as (plain body, HTML body), prefixed with their name; all input escaped.

    ``listed`` are the attachments named in the text with their link (default: all of them).
    """
    label = customer_label(message.sender_name, message.channel)
    lines = [message.text] if message.text else []
    for attachment in message.attachments if listed is None else listed:
        what = clean_file_name(attachment.name, fallback="") or attachment.mime_type or attachment.kind
        lines.append(f"[{attachment.kind}: {what}]" + (f" {attachment.url}" if attachment.url else ""))
    text = "\n".join(lines)
    plain = f"{label}: {text}"
    rich = f"<b>{html.escape(label)}</b>: " + html.escape(text).replace("\n", "<br>")
    return plain, rich
