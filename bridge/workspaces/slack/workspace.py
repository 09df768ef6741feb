"""The Slack workspace: agents answer customers from Slack, on slack-bolt's ``AsyncApp``.

Requests from Slack (Events API, slash command, buttons, modals) all come to ``POST /slack/events`` on
relaydesk's server (``mode: http``) or over a Socket Mode WebSocket (``mode: socket``, with an app-level
token: no public URL needed; each envelope is acknowledged after the same handling) and are dispatched
by bolt, whose middleware checks the signature (``v0`` HMAC of the
body with the signing secret, timestamps more than 5 minutes off refused: 401, nothing stored), answers
Slack's URL check and drops the app's own events. ``process_before_response`` is on: Slack gets its 200
only after the listener handed the event to ``services.inbound`` (stored), so a crash loses nothing; a
Slack retry (``X-Slack-Retry-Num``) of an event already stored carries the same message ids, which the
desk's receipts relay once.

Two room models (``rooms:``): ``channel``, a private channel per customer (named ``support-anna-42``, the
agents or the user group invited, archived when the conversation closes, unarchived when the customer
writes again), where top-level messages go to the customer and thread replies are internal; or
``thread``, a thread per conversation in ``team_channel`` whose root message is the customer card
(updated in place), where thread replies go to the customer and notes are written in a modal (the
card's Note button, or the "Internal note" message shortcut on any message of the thread). Customers' messages show their name and avatar (``chat:write.customize``) and are
escaped (:mod:`bridge.workspaces.slack.text`); messages of bots, this app's included, are never relayed.
Agents act with ``/relay claim|close|transfer <team>|note <text>|...`` (channel rooms) or the card's
buttons; only the configured agents (``agents`` user ids, or members of ``agent_group``) may, and anyone
else gets an ephemeral refusal. Web API calls go through :class:`~bridge.workspaces.slack.limits.MethodLimits`.
"""

from __future__ import annotations

import asyncio
import functools
import re
import secrets
import time
from collections.abc import Awaitable
from typing import Any, Literal, Self
from urllib.parse import quote

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot_core.api import (
    CHUNK_BYTES,
    AgentCommand,
    AgentMessage,
    Attachment,
    ConversationView,
    CustomerCard,
    MessageView,
    Plugin,
    PluginKind,
    PostedRef,
    RoomRef,
    TemporaryFailure,
    Undeliverable,
    clean_display_name,
    clean_file_name,
    download_headers,
    route,
    stream,
)
from bridge.workspaces.slack import cards
from bridge.workspaces.slack.held import HeldReplies
from bridge.workspaces.slack.limits import MethodLimits, SlackError
from bridge.workspaces.slack.text import (
    attachment_lines,
    channel_name,
    chunks,
    escape,
    fold,
    plain_from_mrkdwn,
)

EVENTS_PATH = "/slack/events"
FILES_PREFIX = "/slack/files"
SLACK_ID = re.compile(r"^[A-Z0-9]{2,}$")
GROUP_TTL = 60.0  # seconds the members of the agent group are trusted before asking again
MAX_FILE_BYTES = 50 * 1024 * 1024
RELAYED_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
STATUS_REACTIONS = {"delivered": "white_check_mark", "read": "eyes"}
"""The reaction a delivery status puts on the agent's message (``show_delivery_status``)."""


SLACK_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
"""A Slack member id (``U0ANN``); Matrix ids and the like are not asked about."""


class SlackWorkspace(Plugin["SlackWorkspace.Config"]):
    """Agents answer customers from Slack: a private channel or a thread per conversation."""

    name = "slack"
    kind = PluginKind.WORKSPACE

    class Config(BaseModel):
        """Settings of the Slack workspace (the token and the signing secret come from the environment)."""

        model_config = ConfigDict(extra="forbid")
        bot_token: SecretStr  # ${SLACK_BOT_TOKEN}: the app's xoxb- token
        signing_secret: SecretStr  # ${SLACK_SIGNING_SECRET}: Basic Information → Signing Secret
        api_url: str = "https://slack.com/api/"  # the Web API (tests point it at the emulator)
        mode: Literal["http", "socket"] = "http"  # Events API over relaydesk's server, or Socket Mode
        app_token: SecretStr | None = None  # socket mode: ${SLACK_APP_TOKEN}, an app-level xapp- token
        rooms: Literal["channel", "thread"] = "channel"
        channel_prefix: str = "support"  # private channels are named <prefix>-<customer>-<id>
        team_channel: str | None = None  # thread rooms: the channel id (C...) the threads live in
        agents: list[str] = []  # Slack user ids (U...) who may answer and act
        agent_group: str | None = None  # ...and the members of this user group (S...)
        teams: list[str] = []  # the Transfer menu's teams
        command: str = "/relay"
        undo_seconds: float = Field(default=5.0, ge=0, le=60)  # 0: replies go at once, no Undo button
        fold_lines: int = Field(default=8, ge=1)  # longer customer messages are folded...
        fold_chars: int = Field(default=1200, ge=100, le=3000)  # ...as are longer than this
        rate_limits: dict[str, float] = {}  # calls per minute per Web API method, over Slack's tiers
        post_per_channel_per_minute: float = Field(default=60.0, gt=0)
        max_wait: float = Field(default=1.0, ge=0)  # a call's slot further away goes back to the outbox

        @field_validator("agents")
        @classmethod
        def _user_ids(cls, value: list[str]) -> list[str]:
            bad = [v for v in value if not SLACK_ID.match(v) or v[0] not in "UW"]
            if bad:
                raise ValueError(f"not Slack user ids (U...): {', '.join(bad)}")
            return value

        @model_validator(mode="after")
        def _consistent(self) -> Self:
            if not self.agents and not self.agent_group:
                raise ValueError("name the agents: agents (user ids) and/or agent_group (a user group id)")
            if self.mode == "socket" and (self.app_token is None or not self.app_token.get_secret_value()):
                raise ValueError("mode: socket needs app_token (an app-level token with connections:write)")
            if self.rooms == "thread" and not self.team_channel:
                raise ValueError("rooms: thread needs team_channel (the channel id the threads live in)")
            if not self.api_url.endswith("/"):
                self.api_url += "/"
            return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.config
        self.settings = config
        self.client = AsyncWebClient(
            token=config.bot_token.get_secret_value(), base_url=config.api_url, timeout=30
        )
        self.limits = MethodLimits(
            config.rate_limits,
            post_per_channel=config.post_per_channel_per_minute,
            max_wait=config.max_wait,
        )
        self.bot_user_id = ""
        self.bot_id = ""
        self._app: AsyncApp | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._http: aiohttp.ClientSession | None = None
        self._rooms = self.services.store("slack_rooms")  # room id → {"icon", "card", "customer", "archived"}
        self._state = self.services.store("slack")
        self._ops_channels: dict[str, str] = {}  # Slack channel id -> ops channel (ops-<team>)
        self._room_cache: dict[str, dict[str, Any]] = {}
        self._held = HeldReplies(self.services.store("slack_held"), self._hand_in, self.log)
        self._group: tuple[float, frozenset[str]] = (0.0, frozenset())
        self._names: dict[str, str] = {}
        self._signer: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the token (``auth.test``), build the bolt app, re-arm held replies."""
        try:
            who = await self.client.auth_test()
        except SlackApiError as exc:
            raise RuntimeError(f"slack: the bot token was refused ({exc.response.get('error')})") from None
        self.bot_user_id, self.bot_id = str(who["user_id"]), str(who.get("bot_id") or "")
        self._http = aiohttp.ClientSession()
        key = await self._state.get("file_key")
        if key is None:
            key = secrets.token_hex(32)
            await self._state.set("file_key", key)
        self._signer = self.services.downloads.signer(str(key).encode())
        self._app = self._bolt_app()
        team = self.settings.team_channel
        if self.settings.rooms == "thread" and team:
            try:
                await self.limits.call(
                    "conversations.join",
                    lambda: self.client.conversations_join(channel=team),
                )
            except SlackError as exc:  # a private team channel: the bot must be invited instead
                self.log.info("slack team channel not joined", extra={"error": exc.error})
        await self._held.resume()
        self.log.info(
            "slack workspace started", extra={"bot": self.bot_user_id, "rooms": self.settings.rooms}
        )

    async def ready(self) -> None:
        """In Socket Mode, connect once relaydesk accepts events (what Slack sends must find the bus open)."""
        token = self.settings.app_token
        if (
            self.settings.mode == "socket"
            and self._app is not None
            and token is not None
            and self._socket is None
        ):
            self._socket = AsyncSocketModeHandler(
                self._app, token.get_secret_value(), logger=self.log, web_client=self.client
            )
            await self._socket.connect_async()  # type: ignore[no-untyped-call]
            self.log.info("slack socket mode connected")

    async def closing(self) -> None:
        """Leave Socket Mode first: Slack sends what comes next to another connection (or again later)."""
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
            self._socket = None

    async def stop(self) -> None:
        """Stop the undo timers (held replies stay stored) and close the HTTP sessions."""
        await self.closing()
        await self._held.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _bolt_app(self) -> AsyncApp:
        app = AsyncApp(
            client=self.client,
            signing_secret=self.settings.signing_secret.get_secret_value(),
            process_before_response=True,  # Slack's 200 only once the event is stored
            logger=self.log,
        )
        app.event("message")(self._on_message)
        app.command(self.settings.command)(self._on_command)
        app.action(re.compile(r"^relay_"))(self._on_action)
        app.view(cards.NOTE_VIEW)(self._on_note_view)
        app.shortcut(cards.NOTE_SHORTCUT)(self._on_note_shortcut)
        app.event(re.compile(r".*"))(self._ignore)  # other events are acknowledged and dropped
        return app

    async def _ignore(self) -> None:
        """Events relaydesk does not use (member joined, ...)."""

    def _background(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- requests from Slack ---------------------------------------------------------------------

    @route("POST", EVENTS_PATH)
    async def events(self, request: web.Request) -> web.Response:
        """Events, slash commands, buttons and modals; bolt verifies the signature (401 otherwise)."""
        if self._app is None or self.settings.mode != "http":
            return web.json_response(
                {"error": "this slack workspace does not take HTTP requests"},
                status=404 if self._app else 503,
            )
        response = await self._app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(response)

    def _from_a_bot(self, message: dict[str, Any]) -> bool:
        return bool(
            message.get("bot_id")
            or message.get("subtype") == "bot_message"
            or message.get("user") in ("", None, self.bot_user_id)
        )

    async def _room_of(self, channel: str, message: dict[str, Any]) -> str | None:
        """The room a message is in if it is one the customer should get; None for internal talk."""
        thread_ts = message.get("thread_ts")
        if self.settings.rooms == "thread":
            if channel != self.settings.team_channel or not thread_ts or thread_ts == message.get("ts"):
                return None
            room = f"{channel}:{thread_ts}"
        else:
            if thread_ts and thread_ts != message.get("ts"):
                return None  # a thread reply in a customer channel: internal
            room = channel
        return room if await self._room_info(room) is not None else None

    async def _on_message(self, event: dict[str, Any]) -> None:
        """A message event: agents' top-level messages (channel rooms) or thread replies (thread rooms)."""
        subtype = event.get("subtype")
        channel = str(event.get("channel", ""))
        if subtype == "message_changed":
            inner = event.get("message") or {}
            await self._edited(channel, inner, str(event.get("ts", "")))
        elif subtype == "message_deleted":
            previous = event.get("previous_message") or {}
            await self._deleted(channel, previous, str(event.get("deleted_ts") or previous.get("ts", "")))
        elif subtype in RELAYED_SUBTYPES and not self._from_a_bot(event):
            await self._posted(channel, event)

    async def _ops_channel_of(self, slack_channel: str) -> str | None:
        """The ops channel (``ops-<team>``) whose Slack channel ``slack_channel`` is, or None (only asked for
        a ``!`` message outside customers' rooms: the store is read when the cache does not know it)."""
        known = self._ops_channels.get(slack_channel)
        if known is None:
            for key, value in (await self._state.items()).items():
                if key.startswith("ops:") and isinstance(value, str):
                    self._ops_channels[value] = key.removeprefix("ops:")
            known = self._ops_channels.get(slack_channel)
        return known

    async def _ops_command(self, channel: str, event: dict[str, Any]) -> None:
        """An agent's ``!command`` typed in an ops channel (top level): run without a conversation, the
        answer posted in that channel."""
        text = self._agent_text(str(event.get("text") or ""))
        if not text.lstrip().startswith("!") or event.get("thread_ts") not in (None, event.get("ts")):
            return
        ops_channel = await self._ops_channel_of(channel)
        user = str(event["user"])
        if ops_channel is None or not await self.is_agent(user):
            return
        await self.services.inbound(
            AgentMessage(
                workspace=self.instance_name,
                room_id=channel,
                external_message_id=f"{channel}:{event['ts']}",
                agent_id=user,
                agent_name=await self._name(user),
                text=text,
                ops_channel=ops_channel,
            )
        )

    async def _posted(self, channel: str, event: dict[str, Any]) -> None:
        room = await self._room_of(channel, event)
        if room is None:
            await self._ops_command(channel, event)
            return
        user = str(event["user"])
        if not await self.is_agent(user):
            self.log.info("slack message of a non-agent not relayed", extra={"user": user, "room": room})
            self._background(
                self._ephemeral(
                    channel, user, "Only the desk's agents reach the customer: this was not sent."
                )
            )
            return
        message_id = f"{channel}:{event['ts']}"
        message = AgentMessage(
            workspace=self.instance_name,
            room_id=room,
            external_message_id=message_id,
            agent_id=user,
            agent_name=await self._name(user),
            text=self._agent_text(str(event.get("text") or "")),
            attachments=tuple(self._attachment(f, room) for f in event.get("files") or ()),
        )
        if self.settings.undo_seconds > 0 and not message.text.lstrip().startswith("!"):
            await self._held.hold(message, self.settings.undo_seconds, user)
            text, blocks = cards.undo_blocks(self.settings.undo_seconds, message_id)
            self._background(self._ephemeral(channel, user, text, blocks, thread_ts=event.get("thread_ts")))
        else:
            await self.services.inbound(message)

    async def _edited(self, channel: str, inner: dict[str, Any], event_ts: str) -> None:
        if self._from_a_bot(inner):
            return
        room = await self._room_of(channel, inner)
        if room is None or not await self.is_agent(str(inner.get("user"))):
            return
        original = f"{channel}:{inner.get('ts')}"
        text = plain_from_mrkdwn(str(inner.get("text") or ""), self._names)
        if await self._held.edit(original, text):
            return  # still in its undo window: the customer will get the new text
        await self.services.inbound(
            AgentMessage(
                workspace=self.instance_name,
                room_id=room,
                external_message_id=f"{original}:e{event_ts}",
                agent_id=str(inner.get("user")),
                text=text,
                edit_of=original,
            )
        )

    async def _deleted(self, channel: str, previous: dict[str, Any], ts: str) -> None:
        if self._from_a_bot(previous):
            return
        room = await self._room_of(channel, {**previous, "ts": ts})
        original = f"{channel}:{ts}"
        if room is None:
            return
        if await self._held.cancel(original):
            return  # deleted inside the undo window: the customer never gets it
        await self.services.inbound(
            AgentMessage(
                workspace=self.instance_name,
                room_id=room,
                external_message_id=f"{original}:deleted",
                agent_id=str(previous.get("user", "")),
                redacts=original,
            )
        )

    def _agent_text(self, raw: str) -> str:
        """An agent's message as plain text: mentions as names for the customer, but as user ids in a
        ``!`` command (``!transfer <@U0BOB>`` → ``!transfer @U0BOB``, the id the handoff plugin knows)."""
        return plain_from_mrkdwn(raw, None if raw.lstrip().startswith("!") else self._names)

    async def _hand_in(self, message: AgentMessage) -> None:
        await self.services.inbound(message)

    async def _on_command(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        """``/relay <command> [args]``: an AgentCommand for the channel's conversation; ephemeral answers."""
        user, channel = str(command.get("user_id")), str(command.get("channel_id"))
        text = str(command.get("text") or "").strip()
        if not await self.is_agent(user):
            await ack(text=f"Only the desk's agents may use {self.settings.command}.")
            return
        word, _, rest = text.partition(" ")
        if not word:
            await ack(text=f"Usage: {self.settings.command} claim | close | transfer <team> | note <text>")
            return
        ops_channel = await self._ops_channel_of(channel)
        if ops_channel is not None:
            rest = plain_from_mrkdwn(rest.strip())
            await self.services.inbound(
                AgentCommand(
                    workspace=self.instance_name,
                    room_id=channel,
                    external_message_id=f"command:{command.get('trigger_id')}",
                    agent_id=user,
                    agent_name=await self._name(user),
                    command=word.lower(),
                    args=tuple(rest.split()),
                    raw=rest,
                    ops_channel=ops_channel,
                )
            )
            await ack(text=f"✓ {self.settings.command} {word.lower()} {rest}".rstrip())
            return
        if self.settings.rooms == "thread" or await self._room_info(channel) is None:
            await ack(
                text=(
                    f"{self.settings.command} works in a customer's channel; in thread rooms use the card's "
                    "buttons (Claim, Close, Transfer, Note)."
                )
            )
            return
        rest = plain_from_mrkdwn(rest.strip())  # mentions as user ids: /relay transfer <@U0BOB>
        await self._command(channel, user, word.lower(), rest, f"command:{command.get('trigger_id')}")
        await ack(text=f"✓ {self.settings.command} {word.lower()} {rest}".rstrip())

    async def _command(self, room: str, user: str, word: str, rest: str, message_id: str) -> None:
        await self.services.inbound(
            AgentCommand(
                workspace=self.instance_name,
                room_id=room,
                external_message_id=message_id,
                agent_id=user,
                agent_name=await self._name(user),
                command=word,
                args=tuple(rest.split()),
                raw=rest,
            )
        )

    async def _on_action(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        """The card's buttons and menu, and the Undo button."""
        await ack()
        user = str((body.get("user") or {}).get("id", ""))
        channel = str(
            (body.get("channel") or {}).get("id", "") or (body.get("container") or {}).get("channel_id", "")
        )
        action_id = str(action.get("action_id"))
        thread_ts = (body.get("container") or {}).get("thread_ts")
        if action_id == cards.UNDO:
            undone = await self._held.cancel(str(action.get("value")), agent=user)
            answer = (
                "Undone: the customer will not get this reply (it stays here; delete it if you like)."
                if undone
                else "Too late to undo: the reply was already sent."
            )
            self._background(self._ephemeral(channel, user, answer, thread_ts=thread_ts))
            return
        if not await self.is_agent(user):
            self._background(
                self._ephemeral(channel, user, "Only the desk's agents may act on conversations.")
            )
            return
        if action_id == cards.TRANSFER:
            team, _, room = str((action.get("selected_option") or {}).get("value", "")).partition(" ")
            word, rest = "transfer", team
        else:
            room, word, rest = str(action.get("value", "")), action_id.removeprefix("relay_"), ""
        if await self._room_info(room) is None:
            self._background(
                self._ephemeral(channel, user, "This card belongs to no conversation relaydesk knows.")
            )
            return
        if word == "note":
            trigger = str(body.get("trigger_id"))
            self._background(
                self.limits.call(
                    "views.open",
                    lambda: self.client.views_open(trigger_id=trigger, view=cards.note_view(room)),
                )
            )
            return
        await self._command(room, user, word, rest, f"action:{body.get('trigger_id')}")
        self._background(self._ephemeral(channel, user, f"✓ {word} {rest}".rstrip(), thread_ts=thread_ts))

    async def _on_note_shortcut(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """The "Internal note" message shortcut on any message of a conversation: the Note modal."""
        await ack()
        user = str((body.get("user") or {}).get("id", ""))
        channel = str((body.get("channel") or {}).get("id", ""))
        message = body.get("message") or {}
        if not await self.is_agent(user):
            self._background(self._ephemeral(channel, user, "Only the desk's agents may write notes."))
            return
        thread_ts = message.get("thread_ts") or message.get("ts")
        room = f"{channel}:{thread_ts}" if self.settings.rooms == "thread" else channel
        if await self._room_info(room) is None:
            self._background(
                self._ephemeral(channel, user, "This message is in no conversation relaydesk knows.")
            )
            return
        trigger = str(body.get("trigger_id"))
        self._background(
            self.limits.call(
                "views.open", lambda: self.client.views_open(trigger_id=trigger, view=cards.note_view(room))
            )
        )

    async def _on_note_view(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        """The Note modal was submitted: an internal note (never sent to the customer)."""
        user = str((body.get("user") or {}).get("id", ""))
        if not await self.is_agent(user):
            await ack(response_action="errors", errors={"note": "Only the desk's agents may write notes."})
            return
        room = str(view.get("private_metadata", ""))
        values = (view.get("state") or {}).get("values") or {}
        text = str(((values.get("note") or {}).get("text") or {}).get("value") or "").strip()
        if not text or await self._room_info(room) is None:
            await ack(response_action="errors", errors={"note": "Write a note (in a conversation's thread)."})
            return
        await self._command(room, user, "note", text, f"view:{view.get('id')}:{body.get('trigger_id', '')}")
        await ack()

    # -- who may act -----------------------------------------------------------------------------

    async def is_agent(self, user: str) -> bool:
        """Whether ``user`` is one of the configured agents or in the agent group (asked once a minute)."""
        if user in self.settings.agents:
            return True
        return user in await self._group_members()

    async def _group_members(self) -> frozenset[str]:
        group = self.settings.agent_group
        if not group:
            return frozenset()
        fetched_at, members = self._group
        if time.monotonic() - fetched_at < GROUP_TTL:
            return members
        try:
            answer = await self.limits.call(
                "usergroups.users.list", lambda: self.client.usergroups_users_list(usergroup=group)
            )
            members = frozenset(str(u) for u in answer.get("users") or ())
            self._group = (time.monotonic(), members)
        except Exception as exc:  # keep the last known members (none at first): refuse rather than guess
            self.log.warning("slack agent group not read", extra={"error": str(exc)[:200]})
        return members

    async def _invitees(self) -> list[str]:
        return sorted((set(self.settings.agents) | await self._group_members()) - {self.bot_user_id})

    async def presence(self, user_id: str) -> str | None:
        """A member's presence (``users.getPresence``): ``active`` is ``online``, ``away`` ``unavailable``
        (Slack does not tell away from offline); None for an id that is not a Slack member id, or when
        Slack does not answer (the handoff plugin then keeps the agent's status)."""
        if not SLACK_USER_ID.fullmatch(user_id):
            return None
        try:
            answer = await self.limits.call(
                "users.getPresence", lambda: self.client.users_getPresence(user=user_id)
            )
        except Exception:
            self.log.info("slack presence not read", extra={"user": user_id}, exc_info=True)
            return None
        presence = answer.get("presence")
        return {"active": "online", "away": "unavailable"}.get(str(presence))

    async def _name(self, user: str) -> str | None:
        if user not in self._names:
            try:
                answer = await self.limits.call("users.info", lambda: self.client.users_info(user=user))
                profile = answer["user"].get("profile") or {}
                self._names[user] = clean_display_name(
                    profile.get("display_name") or answer["user"].get("real_name") or user, fallback=user
                )
            except Exception:
                return None
        return self._names[user]

    async def _ephemeral(
        self,
        channel: str,
        user: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        *,
        thread_ts: str | None = None,
    ) -> None:
        """An answer only ``user`` sees (best effort: a failure is logged)."""
        try:
            await self.limits.call(
                "chat.postEphemeral",
                lambda: self.client.chat_postEphemeral(
                    channel=channel, user=user, text=text, blocks=blocks, thread_ts=thread_ts
                ),
            )
        except Exception as exc:
            self.log.info("slack ephemeral answer not posted", extra={"error": str(exc)[:200]})

    # -- rooms -----------------------------------------------------------------------------------

    async def _room_info(self, room_id: str) -> dict[str, Any] | None:
        if room_id not in self._room_cache:
            info = await self._rooms.get(room_id)
            if info is None:
                return None
            self._room_cache[room_id] = info
        return self._room_cache[room_id]

    async def _save_room(self, room_id: str, **changes: Any) -> None:
        info = {**(await self._room_info(room_id) or {}), **changes}
        self._room_cache[room_id] = info
        await self._rooms.set(room_id, info)

    @staticmethod
    def _where(room_id: str) -> tuple[str, str | None]:
        channel, _, thread_ts = room_id.partition(":")
        return channel, thread_ts or None

    async def ensure_room(self, conversation: ConversationView) -> RoomRef:
        """A private channel (agents invited) or a thread under a card in the team channel."""
        if conversation.existing_room_id:
            return RoomRef(self.instance_name, conversation.existing_room_id)
        made = await self._state.get(f"customer:{conversation.customer_id}")
        if made:  # created before a crash or a failed invite: finish it
            room_id = str(made)
        elif self.settings.rooms == "thread":
            room_id = await self._thread_room(conversation)
        else:
            room_id = await self._create_channel(
                channel_name(
                    self.settings.channel_prefix, conversation.customer_name, conversation.customer_id
                ),
                f"customer:{conversation.customer_id}",
            )
        await self._save_room(room_id, customer=conversation.customer_id, icon=conversation.avatar_url)
        if self.settings.rooms == "channel":
            await self._invite(room_id)
        await self._state.delete(f"customer:{conversation.customer_id}")
        return RoomRef(self.instance_name, room_id)

    async def _create_channel(self, name: str, intent: str) -> str:
        """Create a private channel (a taken name gets a random suffix); its id is stored under ``intent``."""
        for attempt in range(3):
            candidate = name if attempt == 0 else f"{name[:73]}-{secrets.token_hex(3)}"
            try:
                answer = await self.limits.call(
                    "conversations.create",
                    functools.partial(self.client.conversations_create, name=candidate, is_private=True),
                )
            except SlackError as exc:
                if exc.error == "name_taken":
                    continue
                raise
            channel_id = str(answer["channel"]["id"])
            await self._state.set(intent, channel_id)
            return channel_id
        raise TemporaryFailure(f"slack: channel names like {name} are all taken")

    async def _invite(self, channel: str) -> None:
        """Invite the agents; if Slack refuses the batch (one already in, one deactivated...), one by one,
        so one bad id never keeps the others out (nor the customer's message out of the room)."""
        users = await self._invitees()
        if not users:
            return
        try:
            await self.limits.call(
                "conversations.invite", lambda: self.client.conversations_invite(channel=channel, users=users)
            )
            return
        except SlackError as exc:
            if len(users) == 1 and exc.error == "already_in_channel":
                return
        for user in users:
            try:
                await self.limits.call(
                    "conversations.invite",
                    functools.partial(self.client.conversations_invite, channel=channel, users=user),
                )
            except SlackError as exc:
                if exc.error != "already_in_channel":
                    self.log.warning(
                        "slack agent not invited",
                        extra={"user": user, "channel": channel, "error": exc.error},
                    )

    async def _thread_room(self, conversation: ConversationView) -> str:
        team = str(self.settings.team_channel)
        text, blocks = cards.first_card_blocks(conversation)
        answer = await self.limits.call(
            "chat.postMessage",
            lambda: self.client.chat_postMessage(channel=team, text=text, blocks=blocks, unfurl_links=False),
            channel=team,
        )
        room_id = f"{team}:{answer['ts']}"
        await self._state.set(f"customer:{conversation.customer_id}", room_id)
        await self._save_room(room_id, card=str(answer["ts"]))
        return room_id

    async def _post(self, channel: str, **kwargs: Any) -> str:
        """chat.postMessage; a channel archived since (a closed conversation) is unarchived first."""
        for attempt in range(2):
            try:
                answer = await self.limits.call(
                    "chat.postMessage",
                    lambda: self.client.chat_postMessage(channel=channel, unfurl_links=False, **kwargs),
                    channel=channel,
                )
                return str(answer["ts"])
            except SlackError as exc:
                if exc.error != "is_archived" or attempt:
                    raise
                await self._unarchive(channel)
        raise AssertionError("unreachable")

    async def _unarchive(self, channel: str) -> None:
        try:
            await self.limits.call(
                "conversations.unarchive", lambda: self.client.conversations_unarchive(channel=channel)
            )
        except SlackError as exc:
            if exc.error != "not_archived":
                raise
        await self._save_room(channel, archived=False)

    async def post_as_customer(self, room: RoomRef, message: MessageView) -> PostedRef:
        """The customer's message under their name and avatar, escaped; long ones folded; files uploaded."""
        channel, thread_ts = self._where(room.room_id)
        info = await self._room_info(room.room_id) or {}
        label = cards.customer_label(
            clean_display_name(message.sender_name, fallback="Customer"), message.channel
        )
        if message.edit_of:
            _, _, ts = message.edit_of.partition(":")
            shown, _rest = fold(message.text, self.settings.fold_lines, self.settings.fold_chars)
            await self.limits.call(
                "chat.update",
                lambda: self.client.chat_update(channel=channel, ts=ts, text=escape(shown) + " (edited)"),
            )
            return PostedRef(message.edit_of)
        not_copied = [a for a in message.attachments if not await self._upload(channel, thread_ts, a, label)]
        text = "\n".join([message.text, *attachment_lines(tuple(not_copied))]).strip()
        if not text:
            return PostedRef(f"{channel}:{thread_ts or ''}")
        customize = {"username": label[:80], "icon_url": info.get("icon") or None}
        posted_kwargs = {"link_names": False, "mrkdwn": False, **{k: v for k, v in customize.items() if v}}
        if thread_ts is None:
            shown, whole = fold(text, self.settings.fold_lines, self.settings.fold_chars)
            ts = await self._post(channel, text=escape(shown), **posted_kwargs)
            for part in chunks(whole) if whole else ():
                await self._post(channel, text=escape(part), thread_ts=ts, **posted_kwargs)
        else:
            parts = chunks(text)
            ts = await self._post(channel, text=escape(parts[0]), thread_ts=thread_ts, **posted_kwargs)
            for part in parts[1:]:
                await self._post(channel, text=escape(part), thread_ts=thread_ts, **posted_kwargs)
        return PostedRef(f"{channel}:{ts}")

    async def _upload(self, channel: str, thread_ts: str | None, attachment: Attachment, label: str) -> bool:
        """Copy a customer's file into the room with the external upload flow; False if it could not be."""
        if not attachment.url or self._http is None:
            return False
        name = clean_file_name(attachment.name, fallback=attachment.kind)
        try:
            async with self._http.get(attachment.url, timeout=HTTP_TIMEOUT) as response:
                if response.status != 200:
                    raise TemporaryFailure(f"the customer's file answered HTTP {response.status}")
                data = await response.content.read(MAX_FILE_BYTES + 1)
            if len(data) > MAX_FILE_BYTES or not data:
                return False
            step = await self.limits.call(
                "files.getUploadURLExternal",
                lambda: self.client.files_getUploadURLExternal(filename=name, length=len(data)),
            )
            async with self._http.post(str(step["upload_url"]), data=data, timeout=HTTP_TIMEOUT) as response:
                if response.status != 200:
                    raise TemporaryFailure(f"slack upload URL answered HTTP {response.status}")
            await self.limits.call(
                "files.completeUploadExternal",
                lambda: self.client.files_completeUploadExternal(
                    files=[{"id": str(step["file_id"]), "title": name}],
                    channel_id=channel,
                    thread_ts=thread_ts,
                    initial_comment=escape(f"{label}: {name}"),
                ),
            )
        except (aiohttp.ClientError, TimeoutError, SlackError) as exc:
            self.log.warning("customer file not copied to slack", extra={"error": str(exc)[:300]})
            return False
        return True

    async def notice(self, room: RoomRef, text: str, key: str = "") -> PostedRef:
        """A notice from the bot (in thread rooms, in the thread); never sent to the customer."""
        channel, thread_ts = self._where(room.room_id)
        ts = await self._post(channel, text=escape(text), thread_ts=thread_ts, link_names=False)
        return PostedRef(f"{channel}:{ts}")

    async def show_delivery_status(
        self, room: RoomRef, workspace_message_id: str, status: str, key: str = ""
    ) -> None:
        """Mark the agent's message with a reaction (``delivered``: ✅, ``read``: 👀; reactions.add); a
        reaction there already (a retried row) is fine, and a message deleted since is left alone."""
        emoji = STATUS_REACTIONS.get(status)
        channel, _, ts = workspace_message_id.partition(":")
        if emoji is None or not ts:
            return
        try:
            await self.limits.call(
                "reactions.add",
                functools.partial(self.client.reactions_add, channel=channel, timestamp=ts, name=emoji),
            )
        except SlackError as exc:
            if exc.error not in ("already_reacted", "message_not_found"):
                raise

    async def invite(self, room: RoomRef, user_id: str) -> None:
        """Bring an agent into the conversation's channel (conversations.invite; an archived channel is
        unarchived first); in thread rooms everyone in the team channel sees the thread: nothing to do.
        Someone who is not one of the desk's agents is refused (Undeliverable)."""
        if not await self.is_agent(user_id):
            raise Undeliverable(f"slack: {user_id} is not one of this desk's agents")
        channel, thread_ts = self._where(room.room_id)
        if thread_ts is not None or self.settings.rooms == "thread":
            return
        for attempt in range(2):
            try:
                await self.limits.call(
                    "conversations.invite",
                    functools.partial(self.client.conversations_invite, channel=channel, users=user_id),
                )
                return
            except SlackError as exc:
                if exc.error == "already_in_channel":
                    return
                if exc.error in ("user_not_found", "user_is_deactivated", "cant_invite"):
                    raise Undeliverable(f"slack: {user_id} cannot be invited ({exc.error})") from None
                if exc.error != "is_archived" or attempt:
                    raise
                await self._unarchive(channel)

    async def mention(self, room: RoomRef, user_ids: tuple[str, ...], text: str, key: str = "") -> PostedRef:
        """Post ``text`` with each user id in it as a Slack mention (``<@U…>``, which notifies them); ids
        the text does not name are mentioned in front of it."""
        channel, thread_ts = self._where(room.room_id)
        shown = escape(text)
        ids = [u for u in dict.fromkeys(user_ids) if SLACK_ID.match(u)]
        missing = []
        for user in ids:
            pattern = re.compile(rf"(?<![<@\w]){re.escape(user)}(?!\w)")
            shown, found = pattern.subn(f"<@{user}>", shown)
            if not found:
                missing.append(f"<@{user}>")
        if missing:
            shown = " ".join(missing) + " " + shown
        ts = await self._post(channel, text=shown, thread_ts=thread_ts)
        return PostedRef(f"{channel}:{ts}")

    async def show_card(self, room: RoomRef, card: CustomerCard, key: str = "") -> None:
        """Post the card or update it in place; a channel room is archived once its conversation closed."""
        channel, thread_ts = self._where(room.room_id)
        info = await self._room_info(room.room_id) or {}
        blocks = cards.card_blocks(
            card, room.room_id, self.settings.teams, notes_button=thread_ts is not None
        )
        text = cards.card_text(card)
        card_ts: str | None = info.get("card")
        if self.settings.rooms == "channel" and card.state != "closed" and info.get("archived"):
            await self._unarchive(channel)
        if card_ts is not None:
            ts = card_ts
            try:
                await self.limits.call(
                    "chat.update",
                    lambda: self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks),
                )
            except SlackError as exc:
                if exc.error != "message_not_found":
                    raise
                card_ts = None
        if not card_ts:
            posted = await self._post(channel, text=text, blocks=blocks)
            await self._save_room(room.room_id, card=posted)
        if self.settings.rooms == "channel" and card.state == "closed" and not info.get("archived"):
            try:
                await self.limits.call(
                    "conversations.archive", lambda: self.client.conversations_archive(channel=channel)
                )
            except SlackError as exc:
                if exc.error != "already_archived":
                    raise
            await self._save_room(room.room_id, archived=True)

    async def post_to_channel(self, channel: str, text: str, key: str = "") -> PostedRef:
        """An ops post (alerts, digests) into ``<prefix>-<channel>``, a private channel made once.

        Slack has no idempotency key: a post whose ``key`` is recorded as made (plugin state
        ``ops_post:<key>``, written as soon as Slack answers) is not made again by a retried row.
        """
        done = await self._ops_done(key)
        if done is not None:
            return PostedRef(done)
        slack_channel = await self._ops_channel(channel)
        ts = await self._post(slack_channel, text=escape(text), link_names=False)
        return await self._ops_posted(key, f"{slack_channel}:{ts}")

    async def post_image_to_channel(
        self, channel: str, caption: str, image: bytes, name: str, key: str = ""
    ) -> PostedRef:
        """An ops post with an image (the daily digest's chart): one message, the caption as the file's
        comment, through Slack's external upload (``files.getUploadURLExternal``, the bytes to the URL it
        gives, ``files.completeUploadExternal`` into the channel); once per ``key`` like a text post."""
        done = await self._ops_done(key)
        if done is not None:
            return PostedRef(done)
        if self._http is None:
            raise TemporaryFailure("the slack workspace is not started")
        slack_channel = await self._ops_channel(channel)
        file_name = clean_file_name(name, fallback="chart.png")
        alt = caption.splitlines()[0][:1000] if caption.strip() else file_name
        step = await self.limits.call(
            "files.getUploadURLExternal",
            lambda: self.client.files_getUploadURLExternal(
                filename=file_name, length=len(image), alt_txt=alt
            ),
        )
        try:
            async with self._http.post(str(step["upload_url"]), data=image, timeout=HTTP_TIMEOUT) as response:
                if response.status != 200:
                    raise TemporaryFailure(f"slack upload URL answered HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TemporaryFailure(f"slack upload failed: {type(exc).__name__}: {exc}") from exc
        file_id = str(step["file_id"])
        await self.limits.call(
            "files.completeUploadExternal",
            lambda: self.client.files_completeUploadExternal(
                files=[{"id": file_id, "title": file_name}],
                channel_id=slack_channel,
                initial_comment=escape(caption),
            ),
        )
        return await self._ops_posted(key, f"{slack_channel}:{file_id}")

    async def _ops_channel(self, channel: str) -> str:
        """The Slack channel of ops channel ``channel``, created (and the agents invited) the first time."""
        slack_channel = await self._state.get(f"ops:{channel}")
        if slack_channel is None:
            name = channel_name(self.settings.channel_prefix, channel, 0).removesuffix("-0")
            slack_channel = await self._create_channel(name, f"ops:{channel}")
            await self._invite(str(slack_channel))
        return str(slack_channel)

    async def _ops_done(self, key: str) -> str | None:
        if not key:
            return None
        done = await self._state.get(f"ops_post:{key}")
        return None if done is None else str(done)

    async def _ops_posted(self, key: str, ref: str) -> PostedRef:
        if key:
            await self._state.set(f"ops_post:{key}", ref)
        return PostedRef(ref)

    # -- agents' files, served to channels ---------------------------------------------------------

    def _attachment(self, file: dict[str, Any], room: str) -> Attachment:
        url = str(file.get("url_private_download") or file.get("url_private") or "")
        file_id = str(file.get("id", ""))
        mime = str(file.get("mimetype") or "application/octet-stream")
        link = None
        if url and self._signer is not None:
            query = self._signer.query(f"{file_id}\n{url}", room)
            link = f"{self.services.http_base_url}{FILES_PREFIX}/{quote(file_id, safe='')}?u={quote(url, safe='')}&{query}"
        return Attachment(
            kind="image" if mime.startswith("image/") else "file",
            url=link,
            mime_type=mime,
            name=clean_file_name(str(file.get("name") or ""), fallback="file"),
            size=file.get("size") if isinstance(file.get("size"), int) else None,
            platform_file_id=file_id,
        )

    @route("GET", FILES_PREFIX + "/{file_id}")
    async def file(self, request: web.Request) -> web.StreamResponse:
        """An agent's file for the customer's channel: only with its signature, streamed with the token."""
        if self._signer is None or self._http is None:
            raise web.HTTPServiceUnavailable(text="the slack workspace is not started")
        file_id, url = request.match_info["file_id"], request.query.get("u", "")
        scope = self._signer.check(f"{file_id}\n{url}", request.query)
        await self.services.downloads.admit(request, "slack", scope)
        token = self.settings.bot_token.get_secret_value()
        async with self._http.get(
            url, headers={"Authorization": f"Bearer {token}"}, timeout=HTTP_TIMEOUT, allow_redirects=False
        ) as response:
            if response.status != 200:
                raise web.HTTPBadGateway(text=f"slack answered HTTP {response.status} for the file")
            headers = download_headers(response.content_type, url.rsplit("/", 1)[-1])
            return await stream(
                request, response.content.iter_chunked(CHUNK_BYTES), headers, response.content_length
            )
