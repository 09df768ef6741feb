"""A local Slack server for tests: the Web API subset relaydesk uses and a sender of signed requests.

slack_sdk's ``AsyncWebClient(base_url=emulator.api_url)`` (and slack-bolt through it) talks to it. What it
does, as Slack does it:

- ``POST /api/<method>`` with form-encoded, query or JSON parameters and ``Authorization: Bearer <token>``;
  answers ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}`` with HTTP 200 (``not_authed``,
  ``invalid_auth``, ``missing_scope`` with ``needed``/``provided``, ``channel_not_found``,
  ``not_in_channel``, ``is_archived``, ``name_taken``, ``invalid_name_specials``, ``already_in_channel``,
  ``message_not_found``, ``user_not_found``, ``no_such_subgroup``, ...).
- Methods: ``auth.test``; ``chat.postMessage`` / ``update`` / ``delete`` / ``postEphemeral``;
  ``conversations.create`` / ``invite`` / ``archive`` / ``unarchive`` / ``info`` / ``join``;
  ``reactions.add`` (kept on the message as ``reactions``; ``already_reacted``, ``invalid_name``); ``users.info``;
  ``users.getPresence`` (``active`` / ``away`` as :meth:`SlackEmulator.set_presence` sets it; a member never
  set is ``away``, as Slack reports someone not connected);
  ``usergroups.users.list``; ``files.getUploadURLExternal`` → ``POST`` the bytes to the returned URL →
  ``files.completeUploadExternal`` (``channel_id`` or ``channels``; ``initial_comment`` wins over ``blocks``;
  the file's ``filetype``/``mimetype`` read from its bytes; ``alt_txt`` kept; the share is a ``file_share``
  message, :meth:`SlackEmulator.shared_files`); ``views.open``. ``files.upload`` answers ``method_deprecated``.
- Rate limits per method (:class:`Limit`: a rate per minute and a burst; ``chat.postMessage`` per channel
  too): a call over the limit is answered HTTP 429 with ``Retry-After`` (whole seconds, rounded up, as
  Slack does; ``fractional_retry_after`` for scaled-down tiers) and ``{"ok": false, "error": "ratelimited"}``.
- Scopes: each method checks the token's scopes (``chat:write.customize`` for a post with ``username`` or
  ``icon_url``); :attr:`SlackEmulator.scopes_needed` records every scope a call needed.
- Mentions: every post records who it would notify (``<!channel>``, ``<!here>``, ``<!everyone>``,
  ``<@U..>``, ``<!subteam^..>`` in mrkdwn text; bare ``@here`` words only with ``link_names``) and the
  text a person sees (:func:`rendered`).
- Socket Mode: ``apps.connections.open`` with the app-level token (``xapp-``) answers a ``ws://`` URL;
  the connection gets ``hello``, then the same payloads as envelopes (``events_api``, ``slash_commands``,
  ``interactive``) that the app must acknowledge with their ``envelope_id`` within ``ack_timeout``
  (resent with ``retry_attempt`` otherwise). :attr:`SlackEmulator.socket_mode` switches the sender to it.
- A sender (:meth:`SlackEmulator.deliver`) of Events API, interactivity and slash-command requests to the
  app's URL, signed like Slack (``v0`` HMAC-SHA256 of ``v0:<timestamp>:<body>`` with the signing secret in
  ``X-Slack-Signature``, the time in ``X-Slack-Request-Timestamp``); a request not answered 200 within
  ``ack_timeout`` (3 s) is retried up to 3 times with ``X-Slack-Retry-Num`` and ``X-Slack-Retry-Reason``.
  People act through it: :meth:`user_posts`, :meth:`user_edits`, :meth:`user_deletes`, :meth:`user_uploads`,
  :meth:`slash_command`, :meth:`click`. A bot's own post is echoed to the app as a message event
  (``bot_id`` set), as Slack does for channels the app reads.

Deviations: the upload URL and private file URLs are plain http on loopback; retries come after
``retry_delays`` (Slack waits about 1 minute, then 5); channel ids start with ``C``, message ts are
``<seconds>.<6 digits>`` from a counter (unique and ordered, like Slack's).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import math
import re
import secrets
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

NAME_RULE = re.compile(r"^[a-z0-9_-]{1,80}$")
MENTION_TOKEN = re.compile(r"<(!channel|!here|!everyone|@[UW][A-Z0-9]+|!subteam\^[A-Z0-9]+)(\|[^>]*)?>")
BARE_MENTION = re.compile(r"(?<![\w@])@(here|channel|everyone)\b")
ANY_TOKEN = re.compile(r"<([^>|]*)(?:\|([^>]*))?>")

# what each method needs (Slack's documented bot scopes); private channels are "groups" scopes
METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    "auth.test": (),
    "chat.postMessage": ("chat:write",),
    "chat.update": ("chat:write",),
    "chat.delete": ("chat:write",),
    "chat.postEphemeral": ("chat:write",),
    "conversations.create": ("groups:write",),
    "conversations.invite": ("groups:write",),
    "conversations.archive": ("groups:write",),
    "conversations.unarchive": ("groups:write",),
    "conversations.info": ("groups:read",),
    "conversations.join": ("channels:join",),
    "reactions.add": ("reactions:write",),
    "users.info": ("users:read",),
    "users.getPresence": ("users:read",),
    "usergroups.users.list": ("usergroups:read",),
    "files.getUploadURLExternal": ("files:write",),
    "files.completeUploadExternal": ("files:write",),
    "views.open": (),
    "apps.connections.open": (),
}
DEFAULT_SCOPES = frozenset(s for scopes in METHOD_SCOPES.values() for s in scopes) | {
    "chat:write.customize",
    "files:read",
    "groups:history",
    "channels:history",
    "commands",
}


@dataclass
class Limit:
    """A rate limit: ``per_minute`` calls on average, ``burst`` at once (a token bucket)."""

    per_minute: float
    burst: int = 1


# Slack's tiers (Tier 1 ~1/min, 2 ~20/min, 3 ~50/min, 4 ~100/min); chat.postMessage ~1/s per channel
SLACK_TIERS: dict[str, Limit] = {
    "auth.test": Limit(100, 10),
    "chat.postMessage": Limit(600, 30),  # app-wide; plus per channel below
    "chat.update": Limit(50, 5),
    "chat.delete": Limit(50, 5),
    "chat.postEphemeral": Limit(100, 10),
    "conversations.create": Limit(20, 3),
    "conversations.invite": Limit(50, 5),
    "conversations.archive": Limit(20, 3),
    "conversations.unarchive": Limit(20, 3),
    "conversations.info": Limit(100, 10),
    "conversations.join": Limit(50, 5),
    "reactions.add": Limit(50, 5),  # Tier 3
    "users.info": Limit(100, 10),
    "users.getPresence": Limit(50, 5),  # Tier 3
    "usergroups.users.list": Limit(20, 3),
    "files.getUploadURLExternal": Limit(20, 3),
    "files.completeUploadExternal": Limit(20, 3),
    "views.open": Limit(100, 10),
}
POST_PER_CHANNEL = Limit(60, 3)


def scaled(tiers: Mapping[str, Limit], factor: float) -> dict[str, Limit]:
    """The tiers ``factor`` times faster (a benchmark that should not take 25 minutes)."""
    return {name: Limit(limit.per_minute * factor, limit.burst) for name, limit in tiers.items()}


class _Bucket:
    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self.tokens = float(limit.burst)
        self.at = time.monotonic()

    def take(self) -> float:
        """Take a token; 0 when taken, else the seconds until one is there."""
        now = time.monotonic()
        rate = self.limit.per_minute / 60.0
        self.tokens = min(float(self.limit.burst), self.tokens + (now - self.at) * rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png", "image/png"),
    (b"\xff\xd8\xff", "jpg", "image/jpeg"),
    (b"GIF8", "gif", "image/gif"),
)


def _file_type(name: str, data: bytes) -> tuple[str, str]:
    """Slack's ``filetype`` and ``mimetype`` of an upload: from its first bytes, else its name, else binary."""
    for magic, filetype, mimetype in _MAGIC:
        if data.startswith(magic):
            return filetype, mimetype
    if name.lower().endswith((".txt", ".log")):
        return "text", "text/plain"
    if name.lower().endswith(".pdf"):
        return "pdf", "application/pdf"
    return "binary", "application/octet-stream"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's request signature: ``v0=`` + hex HMAC-SHA256 of ``v0:<timestamp>:<body>``."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def mentions(text: str, link_names: bool = False) -> list[str]:
    """Who a post with this mrkdwn text notifies: ``!channel``, ``@U123``, ``!subteam^S1``..."""
    found = [m.group(1) for m in MENTION_TOKEN.finditer(text)]
    if link_names:
        found += [f"!{m.group(1)}" for m in BARE_MENTION.finditer(text)]
    return found


def rendered(text: str) -> str:
    """What a person sees of mrkdwn ``text``: tokens shown as their label, entities decoded."""

    def label(m: re.Match[str]) -> str:
        inner, shown = m.group(1), m.group(2)
        if shown is not None:
            return shown
        if inner.startswith("!"):
            return "@" + inner[1:].split("^")[0]
        return inner

    return ANY_TOKEN.sub(label, text).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


@dataclass
class Channel:
    """A Slack channel as the emulator keeps it."""

    id: str
    name: str
    is_private: bool
    creator: str
    members: set[str] = field(default_factory=set)
    is_archived: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Attempt:
    """One try of delivering a request to the app: its retry number, status and how long it took."""

    retry_num: int
    status: int
    seconds: float
    body: str = ""


class SlackApiCallError(Exception):
    """An error answer of a Web API method (inside the emulator)."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


class SlackEmulator:
    """A Slack workspace on loopback; start with ``await emulator.start()``, point clients at :attr:`api_url`."""

    def __init__(
        self,
        *,
        token: str = "xoxb-test-token",
        signing_secret: str = "test-signing-secret",
        scopes: frozenset[str] | None = None,
        limits: Mapping[str, Limit] | None = None,
        post_per_channel: Limit | None = None,
        fractional_retry_after: bool = False,
        ack_timeout: float = 3.0,
        retry_delays: tuple[float, ...] = (0.0, 0.2, 0.5),
        echo_bot_messages: bool = True,
        app_token: str = "xapp-1-test-app-token",
    ) -> None:
        self.token = token
        self.app_token = app_token
        self.socket_mode = False  # True: requests go over the app's Socket Mode WebSocket, not to request_url
        self._sockets: list[web.WebSocketResponse] = []
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.socket_connections = 0
        self.signing_secret = signing_secret
        self.scopes = DEFAULT_SCOPES if scopes is None else scopes
        self.limits = dict(limits or {})
        self.post_per_channel = post_per_channel
        self.fractional_retry_after = fractional_retry_after
        self.ack_timeout = ack_timeout
        self.retry_delays = retry_delays
        self.echo_bot_messages = echo_bot_messages
        self.team_id = "T0EMU"
        self.app_id = "A0EMU"
        self.bot_user_id = "U0BOT"
        self.bot_id = "B0BOT"
        self.users: dict[str, dict[str, Any]] = {}
        self.usergroups: dict[str, list[str]] = {}
        self.channels: dict[str, Channel] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.ephemerals: list[dict[str, Any]] = []
        self.views: list[dict[str, Any]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.timeline: list[tuple[float, str, bool]] = []  # (monotonic time, method, rate limited) per call
        self.rate_limited: dict[str, int] = {}
        self.scopes_needed: set[str] = set()
        self.deliveries: list[tuple[str, list[Attempt]]] = []
        self.response_urls: list[dict[str, Any]] = []
        self.public_files: dict[str, bytes] = {}  # served at /public/<name> (a customer's file elsewhere)
        self.request_url = ""  # the app's Events API / interactivity / commands URL
        self._buckets: dict[str, _Bucket] = {}
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.base_url = ""
        self.add_user(self.bot_user_id, "relaydesk", is_bot=True)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve on a free loopback port."""
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)  # slack_sdk reads users.info and the like with GET
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files-pri/{file_id}/{name}", self._download)
        app.router.add_post("/response/{n}", self._response_url)
        app.router.add_get("/public/{name}", self._public_file)
        app.router.add_get("/_emulator/state", self._state)
        app.router.add_get("/socket-mode", self._socket)
        app.router.add_post("/_emulator/setup", self._setup)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        """Stop serving and sending; open Socket Mode connections are closed first ("going away"),
        as a server shutting down does (an open one would hold the server's shutdown up)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for ws in list(self._sockets):
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutdown")
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        """The Web API base URL for ``AsyncWebClient(base_url=...)``."""
        return self.base_url + "/api/"

    # -- the workspace's people ----------------------------------------------------------------

    def add_user(
        self, user_id: str, name: str, *, real_name: str = "", is_bot: bool = False, image: str = ""
    ) -> None:
        """A member of the workspace."""
        self.users[user_id] = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "real_name": real_name or name,
            "is_bot": is_bot,
            "deleted": False,
            "profile": {
                "display_name": name,
                "real_name": real_name or name,
                "image_72": image or f"https://avatars.example/{user_id}.png",
            },
        }

    def set_presence(self, user_id: str, presence: str) -> None:
        """The member is ``active`` (connected, not idle) or ``away``, as ``users.getPresence`` reports."""
        assert presence in ("active", "away")
        self.users[user_id]["presence"] = presence

    def add_usergroup(self, group_id: str, members: list[str]) -> None:
        """A user group (``S...``) with these members."""
        self.usergroups[group_id] = list(members)

    def add_channel(self, name: str, members: list[str], *, private: bool = False) -> str:
        """A channel made by a person (e.g. the team channel of the thread model); returns its id."""
        channel = Channel(self._channel_id(), name, private, members[0] if members else "")
        channel.members.update(members)
        self.channels[channel.id] = channel
        return channel.id

    def channel_named(self, name: str) -> Channel:
        """The channel with this name (KeyError if none)."""
        for channel in self.channels.values():
            if channel.name == name:
                return channel
        raise KeyError(name)

    def messages(
        self, channel: str, *, thread_ts: str | None = None, top: bool = False
    ) -> list[dict[str, Any]]:
        """The channel's live messages (not deleted); ``thread_ts``: that thread's replies; ``top``: top-level."""
        found = [m for m in self.channels[channel].messages if not m.get("deleted")]
        if thread_ts is not None:
            return [m for m in found if m.get("thread_ts") == thread_ts and m["ts"] != thread_ts]
        if top:
            return [m for m in found if m.get("thread_ts") in (None, m["ts"])]
        return found

    def _channel_id(self) -> str:
        return f"C{next(self._ids):08d}"

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    # -- Web API -------------------------------------------------------------------------------

    def limit(self, method: str, limit: Limit | None) -> None:
        """Set (or with None remove) the rate limit of ``method``."""
        if limit is None:
            self.limits.pop(method, None)
        else:
            self.limits[method] = limit
        self._buckets = {k: v for k, v in self._buckets.items() if not k.startswith(method)}

    def _over_limit(self, method: str, args: Mapping[str, Any]) -> float:
        wait = 0.0
        limit = self.limits.get(method)
        if limit is not None:
            wait = self._buckets.setdefault(method, _Bucket(limit)).take()
        if wait == 0.0 and method == "chat.postMessage" and self.post_per_channel is not None:
            key = f"{method}:{args.get('channel')}"
            wait = self._buckets.setdefault(key, _Bucket(self.post_per_channel)).take()
        return wait

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            body = await request.json()
            args.update(body if isinstance(body, dict) else {})
        elif request.method == "POST":
            args.update(dict(await request.post()))
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return web.json_response({"ok": False, "error": "not_authed"})
        given = auth[7:].encode()
        if method == "apps.connections.open":
            if hmac.compare_digest(given, self.token.encode()):
                return web.json_response({"ok": False, "error": "not_allowed_token_type"})
            if not hmac.compare_digest(given, self.app_token.encode()):
                return web.json_response({"ok": False, "error": "invalid_auth"})
            ticket = secrets.token_hex(8)
            return web.json_response(
                {"ok": True, "url": f"ws{self.base_url[4:]}/socket-mode?ticket={ticket}"}
            )
        if not hmac.compare_digest(given, self.token.encode()):
            return web.json_response({"ok": False, "error": "invalid_auth"})
        self.calls.append((method, args))
        wait = self._over_limit(method, args)
        self.timeline.append((time.monotonic(), method, wait > 0))
        if wait > 0:
            self.rate_limited[method] = self.rate_limited.get(method, 0) + 1
            after = f"{wait:.3f}" if self.fractional_retry_after else str(max(1, math.ceil(wait)))
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": after}
            )
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            if method == "files.upload":
                return web.json_response({"ok": False, "error": "method_deprecated"})
            return web.json_response({"ok": False, "error": "unknown_method"})
        needed = set(METHOD_SCOPES.get(method, ()))
        if method == "chat.postMessage" and (args.get("username") or args.get("icon_url")):
            needed.add("chat:write.customize")
        if method == "conversations.create" and not _truthy(args.get("is_private")):
            needed = {"channels:manage"}
        missing = needed - self.scopes
        if missing:
            return web.json_response(
                {
                    "ok": False,
                    "error": "missing_scope",
                    "needed": ",".join(sorted(missing)),
                    "provided": ",".join(sorted(self.scopes)),
                }
            )
        self.scopes_needed |= needed
        try:
            result = await handler(args)
        except SlackApiCallError as exc:
            return web.json_response({"ok": False, "error": exc.error, **exc.extra})
        return web.json_response({"ok": True, **result})

    def _channel(self, args: Mapping[str, Any], key: str = "channel", *, member: bool = True) -> Channel:
        channel = self.channels.get(str(args.get(key, "")))
        if channel is None:
            raise SlackApiCallError("channel_not_found")
        if member and self.bot_user_id not in channel.members:
            raise SlackApiCallError("not_in_channel")
        return channel

    async def _m_auth_test(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://emulated.slack.com/",
            "team": "Emulated",
            "user": "relaydesk",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    async def _m_chat_postMessage(self, args: Mapping[str, Any]) -> dict[str, Any]:
        channel = self._channel(args)
        if channel.is_archived:
            raise SlackApiCallError("is_archived")
        text = str(args.get("text") or "")
        blocks = _json_arg(args.get("blocks"))
        if not text and not blocks:
            raise SlackApiCallError("no_text")
        thread_ts = args.get("thread_ts") or None
        if thread_ts and not any(m["ts"] == thread_ts for m in channel.messages):
            raise SlackApiCallError("thread_not_found")
        message = {
            "type": "message",
            "ts": self._next_ts(),
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "text": text,
            "blocks": blocks or [],
            "username": args.get("username"),
            "icon_url": args.get("icon_url"),
            "thread_ts": thread_ts,
            "mentions": mentions(text, _truthy(args.get("link_names"))),
            "seen": rendered(text),
        }
        channel.messages.append(message)
        if self.echo_bot_messages and (self.request_url or self.socket_mode):
            echo = {
                "type": "message",
                "channel": channel.id,
                "user": self.bot_user_id,
                "bot_id": self.bot_id,
                "app_id": self.app_id,
                "text": text,
                "ts": message["ts"],
            }
            if thread_ts:
                echo["thread_ts"] = thread_ts
            self._spawn(self.deliver_event(echo))
        return {"channel": channel.id, "ts": message["ts"], "message": _public(message)}

    async def _m_chat_update(self, args: Mapping[str, Any]) -> dict[str, Any]:
        channel = self._channel(args)
        message = self._message(channel, str(args.get("ts", "")))
        if message.get("bot_id") != self.bot_id:
            raise SlackApiCallError("cant_update_message")
        if "text" in args:
            message["text"] = str(args["text"])
            message["seen"] = rendered(message["text"])
            message["mentions"] = mentions(message["text"])
        if "blocks" in args:
            message["blocks"] = _json_arg(args["blocks"]) or []
        message["edited"] = True
        return {"channel": channel.id, "ts": message["ts"], "text": message["text"]}

    async def _m_chat_delete(self, args: Mapping[str, Any]) -> dict[str, Any]:
        channel = self._channel(args)
        message = self._message(channel, str(args.get("ts", "")))
        if message.get("bot_id") != self.bot_id:
            raise SlackApiCallError("cant_delete_message")
        message["deleted"] = True
        return {"channel": channel.id, "ts": message["ts"]}

    async def _m_chat_postEphemeral(self, args: Mapping[str, Any]) -> dict[str, Any]:
        channel = self._channel(args)
        user = str(args.get("user", ""))
        if user not in self.users:
            raise SlackApiCallError("user_not_found")
        if user not in channel.members:
            raise SlackApiCallError("user_not_in_channel")
        self.ephemerals.append(
            {
                "channel": channel.id,
                "user": user,
                "text": str(args.get("text") or ""),
                "blocks": _json_arg(args.get("blocks")) or [],
                "thread_ts": args.get("thread_ts"),
            }
        )
        return {"message_ts": self._next_ts()}

    def _message(self, channel: Channel, ts: str) -> dict[str, Any]:
        for message in channel.messages:
            if message["ts"] == ts and not message.get("deleted"):
                return message
        raise SlackApiCallError("message_not_found")

    async def _m_conversations_create(self, args: Mapping[str, Any]) -> dict[str, Any]:
        name = str(args.get("name", ""))
        if not name:
            raise SlackApiCallError("invalid_name_required")
        if len(name) > 80:
            raise SlackApiCallError("invalid_name_maxlength")
        if not NAME_RULE.match(name):
            raise SlackApiCallError("invalid_name_specials")
        if any(c.name == name for c in self.channels.values()):
            raise SlackApiCallError("name_taken")
        channel = Channel(self._channel_id(), name, _truthy(args.get("is_private")), self.bot_user_id)
        channel.members.add(self.bot_user_id)
        self.channels[channel.id] = channel
        return {"channel": self._info(channel)}

    def _info(self, channel: Channel) -> dict[str, Any]:
        return {
            "id": channel.id,
            "name": channel.name,
            "is_channel": True,
            "is_private": channel.is_private,
            "is_archived": channel.is_archived,
            "is_member": self.bot_user_id in channel.members,
            "creator": channel.creator,
        }

    async def _m_conversations_invite(self, args: Mapping[str, Any]) -> dict[str, Any]:
        channel = self._channel(args)
        if channel.is_archived:
            raise SlackApiCallError("is_archived")
        users = [u for u in str(args.get("users", "")).split(",") if u]
        if not users:
            raise SlackApiCallError("no_user")
        errors = []
        for user in users:
            if user not in self.users:
                errors.append({"user": user, "ok": False, "error": "user_not_found"})
            elif user == self.bot_user_id:
                errors.append({"user": user, "ok": False, "error": "cant_invite_self"})
            elif user in channel.members:
                errors.append({"user": user, "ok": False, "error": "already_in_channel"})
        if errors:
            raise SlackApiCallError(str(errors[0]["error"]), errors=errors)
        channel.members.update(users)
        return {"channel": self._info(channel)}

    async def _m_conversations_archive(self, args: Mapping[str, Any]) -> dict[str, Any]:
        channel = self._channel(args)
        if channel.is_archived:
            raise SlackApiCallError("already_archived")
        channel.is_archived = True
        return {}

    async def _m_conversations_unarchive(self, args: Mapping[str, Any]) -> dict[str, Any]:
        channel = self._channel(args)
        if not channel.is_archived:
            raise SlackApiCallError("not_archived")
        channel.is_archived = False
        return {}

    async def _m_conversations_info(self, args: Mapping[str, Any]) -> dict[str, Any]:
        channel = self._channel(args, member=False)
        if channel.is_private and self.bot_user_id not in channel.members:
            raise SlackApiCallError("channel_not_found")
        return {"channel": self._info(channel)}

    async def _m_conversations_join(self, args: Mapping[str, Any]) -> dict[str, Any]:
        channel = self._channel(args, member=False)
        if channel.is_private:
            raise SlackApiCallError("method_not_supported_for_channel_type")
        if channel.is_archived:
            raise SlackApiCallError("is_archived")
        channel.members.add(self.bot_user_id)
        return {"channel": self._info(channel)}

    async def _m_reactions_add(self, args: Mapping[str, Any]) -> dict[str, Any]:
        channel = self._channel(args)
        name = str(args.get("name", "")).strip(":")
        if not name:
            raise SlackApiCallError("no_reaction")
        if not re.fullmatch(r"[a-z0-9_+\-']+", name):
            raise SlackApiCallError("invalid_name")
        message = self._message(channel, str(args.get("timestamp", "")))
        reactions: list[dict[str, Any]] = message.setdefault("reactions", [])
        reaction = next((r for r in reactions if r["name"] == name), None)
        if reaction is None:
            reaction = {"name": name, "users": [], "count": 0}
            reactions.append(reaction)
        if self.bot_user_id in reaction["users"]:
            raise SlackApiCallError("already_reacted")
        reaction["users"].append(self.bot_user_id)
        reaction["count"] += 1
        return {}

    async def _m_users_info(self, args: Mapping[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(args.get("user", "")))
        if user is None:
            raise SlackApiCallError("user_not_found")
        return {"user": user}

    async def _m_users_getPresence(self, args: Mapping[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(args.get("user", "")))
        if user is None:
            raise SlackApiCallError("user_not_found")
        return {"presence": user.get("presence", "away")}

    async def _m_usergroups_users_list(self, args: Mapping[str, Any]) -> dict[str, Any]:
        group = self.usergroups.get(str(args.get("usergroup", "")))
        if group is None:
            raise SlackApiCallError("no_such_subgroup")
        return {"users": list(group)}

    async def _m_files_getUploadURLExternal(self, args: Mapping[str, Any]) -> dict[str, Any]:
        name = str(args.get("filename", ""))
        try:
            length = int(args.get("length", ""))
        except ValueError:
            raise SlackApiCallError("invalid_arguments") from None
        if not name or length <= 0:
            raise SlackApiCallError("invalid_arguments")
        file_id = f"F{next(self._ids):08d}"
        self.files[file_id] = {
            "id": file_id,
            "name": name,
            "length": length,
            "data": None,
            "shared": [],
            "alt_txt": args.get("alt_txt") or None,
        }
        return {"upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    async def _upload(self, request: web.Request) -> web.Response:
        file = self.files.get(request.match_info["file_id"])
        if file is None or file["data"] is not None:
            return web.Response(status=404, text="unknown upload")
        data = await request.read()
        if request.content_type.startswith("multipart/"):
            return web.Response(status=400, text="send the raw bytes")
        if len(data) != file["length"]:
            return web.Response(status=400, text="length does not match")
        file["data"] = data
        file["filetype"], file["mimetype"] = _file_type(file["name"], data)
        return web.Response(text=f"OK - {len(data)}")

    async def _m_files_completeUploadExternal(self, args: Mapping[str, Any]) -> dict[str, Any]:
        entries = _json_arg(args.get("files"))
        if not isinstance(entries, list) or not entries:
            raise SlackApiCallError("invalid_arguments")
        done = []
        for entry in entries:
            file = self.files.get(str(entry.get("id", "")))
            if file is None or file["data"] is None:
                raise SlackApiCallError("file_not_found")
            file["title"] = entry.get("title") or file["name"]
            done.append(
                {
                    "id": file["id"],
                    "name": file["name"],
                    "title": file["title"],
                    "filetype": file.get("filetype", "binary"),
                    "mimetype": file.get("mimetype", "application/octet-stream"),
                    "size": len(file["data"]),
                }
            )
        # channel_id, or channels (comma-separated ids); the initial comment wins over blocks, as Slack says
        targets = [str(args["channel_id"])] if args.get("channel_id") else []
        channels_arg = args.get("channels")
        if isinstance(channels_arg, list):
            targets += [str(c) for c in channels_arg]
        elif channels_arg:
            targets += [c.strip() for c in str(channels_arg).split(",") if c.strip()]
        if args.get("thread_ts") and len(targets) > 1:
            raise SlackApiCallError("invalid_arguments")
        comment = str(args.get("initial_comment") or "")
        blocks = None if comment else _json_arg(args.get("blocks"))
        found = [self._channel({"channel": target}) for target in targets]
        for channel in found:
            if channel.is_archived:
                raise SlackApiCallError("is_archived")
        for channel in found:
            message = {
                "type": "message",
                "subtype": "file_share",
                "ts": self._next_ts(),
                "user": self.bot_user_id,
                "bot_id": self.bot_id,
                "text": comment,
                "blocks": blocks if isinstance(blocks, list) else None,
                "files": [f["id"] for f in done],
                "thread_ts": args.get("thread_ts") or None,
                "mentions": mentions(comment),
                "seen": rendered(comment),
            }
            channel.messages.append(message)
            for f in done:
                self.files[f["id"]]["shared"].append(channel.id)
        return {"files": done}

    def shared_files(self, channel_id: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Each file shared into a channel, in order: (the message that shared it, the file with its bytes)."""
        channel = self.channels[channel_id]
        return [(m, self.files[f]) for m in channel.messages for f in m.get("files") or () if f in self.files]

    async def _download(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        file = self.files.get(request.match_info["file_id"])
        if auth != f"Bearer {self.token}" or "files:read" not in self.scopes:
            return web.Response(status=302, headers={"Location": "https://emulated.slack.com/signin"})
        if file is None or file["data"] is None:
            return web.Response(status=404)
        return web.Response(body=file["data"], content_type=file.get("mimetype", "application/octet-stream"))

    async def _m_views_open(self, args: Mapping[str, Any]) -> dict[str, Any]:
        view = _json_arg(args.get("view"))
        if not args.get("trigger_id") or not isinstance(view, dict):
            raise SlackApiCallError("invalid_arguments")
        self.views.append(view)
        return {"view": {"id": f"V{next(self._ids):08d}", **view}}

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        """A Socket Mode connection: ``hello`` first, then envelopes; the app answers each with its id."""
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.socket_connections += 1
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": 1,
                "connection_info": {"app_id": self.app_id},
                "debug_info": {},
            }
        )
        self._sockets.append(ws)
        try:
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                answer = json.loads(frame.data)
                future = self._acks.pop(str(answer.get("envelope_id")), None)
                if future is not None and not future.done():
                    future.set_result(answer)
        finally:
            self._sockets.remove(ws)
        return ws

    async def _over_socket(self, kind: str, payload: Mapping[str, Any], label: str) -> list[Attempt]:
        """Send an envelope over the newest Socket Mode connection; resent (``retry_attempt``) until acked."""
        deadline = time.monotonic() + 10
        while not self._sockets:
            if time.monotonic() > deadline:
                raise AssertionError("the app opened no Socket Mode connection")
            await asyncio.sleep(0.02)
        attempts: list[Attempt] = []
        for retry in range(len(self.retry_delays) + 1):
            if retry:
                await asyncio.sleep(self.retry_delays[retry - 1])
            envelope_id = secrets.token_hex(8)
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._acks[envelope_id] = future
            envelope = {
                "envelope_id": envelope_id,
                "type": kind,
                "payload": dict(payload),
                "accepts_response_payload": kind != "events_api",
                "retry_attempt": retry,
                "retry_reason": "timeout" if retry else "",
            }
            started = time.monotonic()
            status, text = 0, ""
            try:
                await self._sockets[-1].send_json(envelope)
                answer = await asyncio.wait_for(future, self.ack_timeout)
                status, text = 200, json.dumps(answer.get("payload") or {})
            except (TimeoutError, ConnectionError):
                self._acks.pop(envelope_id, None)
            attempts.append(Attempt(retry, status, time.monotonic() - started, text))
            if status == 200:
                break
        self.deliveries.append((label, attempts))
        return attempts

    async def _state(self, request: web.Request) -> web.Response:
        """What a test in another process reads: calls per method, 429s, channels and their posts."""
        counts: dict[str, int] = {}
        for method, _args in self.calls:
            counts[method] = counts.get(method, 0) + 1
        channels = [
            {
                "id": c.id,
                "name": c.name,
                "posts": [[m["text"], m.get("username")] for m in self.messages(c.id)],
            }
            for c in self.channels.values()
        ]
        return web.json_response({"calls": counts, "rate_limited": self.rate_limited, "channels": channels})

    async def _setup(self, request: web.Request) -> web.Response:
        """Set the app's URL and add people (``{"request_url", "users": [id, ...]}``) from another process."""
        body = await request.json()
        self.request_url = str(body.get("request_url", self.request_url))
        for user in body.get("users", []):
            self.add_user(str(user), str(user).lower())
        return web.json_response({"ok": True})

    async def _public_file(self, request: web.Request) -> web.Response:
        data = self.public_files.get(request.match_info["name"])
        return web.Response(status=404) if data is None else web.Response(body=data)

    async def _response_url(self, request: web.Request) -> web.Response:
        self.response_urls.append({"n": request.match_info["n"], **(await request.json())})
        return web.Response(text="ok")

    # -- the sender: what Slack sends the app --------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until every echo and retry the emulator started has finished."""
        deadline = time.monotonic() + timeout
        while self._tasks:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self._tasks)} emulator sends still running")
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def deliver(
        self,
        body: bytes,
        content_type: str,
        *,
        label: str = "",
        secret: str | None = None,
        timestamp: float | None = None,
        envelope: tuple[str, Mapping[str, Any]] | None = None,
    ) -> list[Attempt]:
        """POST a request to the app signed like Slack, retrying (up to 3 times) when not answered 200
        within ``ack_timeout``; returns every attempt. In Socket Mode ``envelope`` (its type and payload)
        goes over the app's WebSocket instead."""
        if self.socket_mode and envelope is not None:
            return await self._over_socket(envelope[0], envelope[1], label)
        assert self._session is not None and self.request_url, "start() and set request_url first"
        attempts: list[Attempt] = []
        for retry in range(len(self.retry_delays) + 1):
            if retry:
                await asyncio.sleep(self.retry_delays[retry - 1])
            stamp = str(int(time.time() if timestamp is None else timestamp))
            headers = {
                "Content-Type": content_type,
                "X-Slack-Request-Timestamp": stamp,
                "X-Slack-Signature": sign(secret or self.signing_secret, stamp, body),
            }
            if retry:
                headers["X-Slack-Retry-Num"] = str(retry)
                headers["X-Slack-Retry-Reason"] = "http_timeout" if attempts[-1].status == 0 else "http_error"
            started = time.monotonic()
            status, text = 0, ""
            try:
                async with self._session.post(
                    self.request_url,
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.ack_timeout),
                ) as response:
                    status, text = response.status, await response.text()
            except TimeoutError:
                status = 0  # Slack gave up waiting
            except aiohttp.ClientError as exc:
                status, text = 0, str(exc)
            attempts.append(Attempt(retry, status, time.monotonic() - started, text))
            if status == 200:
                break
        self.deliveries.append((label, attempts))
        return attempts

    def event_envelope(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """An ``event_callback`` as the Events API sends it."""
        return {
            "token": "deprecated-verification-token",
            "team_id": self.team_id,
            "api_app_id": self.app_id,
            "event": dict(event),
            "type": "event_callback",
            "event_id": f"Ev{secrets.token_hex(5).upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }

    async def deliver_event(self, event: Mapping[str, Any], **kwargs: Any) -> list[Attempt]:
        """Send one event (wrapped in its envelope) to the app."""
        envelope = self.event_envelope(event)
        body = json.dumps(envelope).encode()
        return await self.deliver(
            body,
            "application/json",
            label=str(event.get("type")),
            envelope=("events_api", envelope),
            **kwargs,
        )

    async def user_posts(
        self,
        user: str,
        channel: str,
        text: str,
        *,
        thread_ts: str | None = None,
        files: list[str] | None = None,
    ) -> tuple[str, list[Attempt]]:
        """A person posts ``text`` (in a thread with ``thread_ts``); the app gets the message event."""
        target = self.channels[channel]
        if user not in target.members:
            raise AssertionError(f"{user} is not in {channel}")
        ts = self._next_ts()
        message: dict[str, Any] = {
            "type": "message",
            "ts": ts,
            "user": user,
            "text": text,
            "thread_ts": thread_ts,
        }
        target.messages.append(message)
        event: dict[str, Any] = {
            "type": "message",
            "channel": channel,
            "channel_type": "group" if target.is_private else "channel",
            "user": user,
            "text": text,
            "ts": ts,
            "team": self.team_id,
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
        if files:
            event["subtype"] = "file_share"
            event["files"] = [self._file_object(f) for f in files]
        return ts, await self.deliver_event(event)

    async def user_uploads(
        self, user: str, channel: str, name: str, data: bytes, mimetype: str, text: str = "", **kwargs: Any
    ) -> tuple[str, list[Attempt]]:
        """A person shares a file in the channel (with ``text`` as its message)."""
        file_id = f"F{next(self._ids):08d}"
        self.files[file_id] = {
            "id": file_id,
            "name": name,
            "length": len(data),
            "data": data,
            "mimetype": mimetype,
            "shared": [channel],
        }
        return await self.user_posts(user, channel, text, files=[file_id], **kwargs)

    def _file_object(self, file_id: str) -> dict[str, Any]:
        file = self.files[file_id]
        return {
            "id": file_id,
            "name": file["name"],
            "title": file["name"],
            "mimetype": file.get("mimetype", "application/octet-stream"),
            "size": file["length"],
            "url_private": f"{self.base_url}/files-pri/{file_id}/{urllib.parse.quote(file['name'])}",
            "url_private_download": f"{self.base_url}/files-pri/{file_id}/{urllib.parse.quote(file['name'])}",
        }

    async def user_edits(self, user: str, channel: str, ts: str, text: str) -> list[Attempt]:
        """A person edits their message; the app gets ``message_changed``."""
        message = self._message(self.channels[channel], ts)
        previous = dict(message)
        message["text"] = text
        event = {
            "type": "message",
            "subtype": "message_changed",
            "channel": channel,
            "hidden": True,
            "ts": self._next_ts(),
            "message": {
                "type": "message",
                "user": user,
                "text": text,
                "ts": ts,
                "edited": {"user": user},
                **({"thread_ts": previous["thread_ts"]} if previous.get("thread_ts") else {}),
            },
            "previous_message": {"type": "message", "user": user, "text": previous["text"], "ts": ts},
        }
        return await self.deliver_event(event)

    async def user_deletes(self, user: str, channel: str, ts: str) -> list[Attempt]:
        """A person deletes their message; the app gets ``message_deleted``."""
        message = self._message(self.channels[channel], ts)
        message["deleted"] = True
        previous = {"type": "message", "user": message.get("user"), "text": message["text"], "ts": ts}
        if message.get("thread_ts"):
            previous["thread_ts"] = message["thread_ts"]
        event = {
            "type": "message",
            "subtype": "message_deleted",
            "channel": channel,
            "hidden": True,
            "ts": self._next_ts(),
            "deleted_ts": ts,
            "previous_message": previous,
        }
        return await self.deliver_event(event)

    async def slash_command(
        self, user: str, channel: str, command: str, text: str, **kwargs: Any
    ) -> list[Attempt]:
        """A person types ``/command text`` in ``channel`` (form-encoded, as Slack sends it)."""
        form = {
            "token": "deprecated",
            "team_id": self.team_id,
            "team_domain": "emulated",
            "channel_id": channel,
            "channel_name": self.channels[channel].name if channel in self.channels else "",
            "user_id": user,
            "user_name": self.users.get(user, {}).get("name", user),
            "command": command,
            "text": text,
            "api_app_id": self.app_id,
            "response_url": f"{self.base_url}/response/{next(self._ids)}",
            "trigger_id": f"{next(self._ids)}.trigger",
        }
        body = urllib.parse.urlencode(form).encode()
        return await self.deliver(
            body,
            "application/x-www-form-urlencoded",
            label=command,
            envelope=("slash_commands", form),
            **kwargs,
        )

    async def click(
        self,
        user: str,
        channel: str,
        message_ts: str,
        action_id: str,
        *,
        value: str = "",
        selected: str = "",
        thread_ts: str | None = None,
        **kwargs: Any,
    ) -> list[Attempt]:
        """A person clicks a button (or picks ``selected`` in a menu) of the bot's message ``message_ts``."""
        message = self._message(self.channels[channel], message_ts)
        action: dict[str, Any] = {"action_id": action_id, "block_id": "b", "action_ts": str(time.time())}
        if selected:
            action.update(
                type="static_select",
                selected_option={"value": selected, "text": {"type": "plain_text", "text": selected}},
            )
        else:
            action.update(type="button", value=value)
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
        }
        if thread_ts:
            container["thread_ts"] = thread_ts
        payload = {
            "type": "block_actions",
            "user": {
                "id": user,
                "username": self.users.get(user, {}).get("name", user),
                "team_id": self.team_id,
            },
            "api_app_id": self.app_id,
            "token": "deprecated",
            "container": container,
            "trigger_id": f"{next(self._ids)}.trigger",
            "team": {"id": self.team_id, "domain": "emulated"},
            "channel": {"id": channel, "name": self.channels[channel].name},
            "message": _public(message),
            "response_url": f"{self.base_url}/response/{next(self._ids)}",
            "actions": [action],
        }
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        return await self.deliver(
            body,
            "application/x-www-form-urlencoded",
            label=action_id,
            envelope=("interactive", payload),
            **kwargs,
        )

    async def message_shortcut(
        self, user: str, channel: str, message_ts: str, callback_id: str
    ) -> list[Attempt]:
        """A person picks the app's message shortcut ``callback_id`` on message ``message_ts``."""
        message = self._message(self.channels[channel], message_ts)
        payload = {
            "type": "message_action",
            "callback_id": callback_id,
            "trigger_id": f"{next(self._ids)}.trigger",
            "action_ts": str(time.time()),
            "team": {"id": self.team_id, "domain": "emulated"},
            "user": {"id": user, "name": self.users.get(user, {}).get("name", user), "team_id": self.team_id},
            "channel": {"id": channel, "name": self.channels[channel].name},
            "message_ts": message_ts,
            "message": _public(message),
            "response_url": f"{self.base_url}/response/{next(self._ids)}",
            "token": "deprecated",
        }
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        return await self.deliver(
            body, "application/x-www-form-urlencoded", label=callback_id, envelope=("interactive", payload)
        )

    async def submit_view(
        self, user: str, view: Mapping[str, Any], values: Mapping[str, str]
    ) -> list[Attempt]:
        """A person submits a modal the app opened (``values``: input block id → the text typed)."""
        state = {
            block: {"text": {"type": "plain_text_input", "value": text}} for block, text in values.items()
        }
        payload = {
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": "emulated"},
            "user": {
                "id": user,
                "username": self.users.get(user, {}).get("name", user),
                "team_id": self.team_id,
            },
            "api_app_id": self.app_id,
            "token": "deprecated",
            "trigger_id": f"{next(self._ids)}.trigger",
            "view": {**view, "id": f"V{next(self._ids):08d}", "state": {"values": state}},
        }
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        return await self.deliver(
            body,
            "application/x-www-form-urlencoded",
            label="view_submission",
            envelope=("interactive", payload),
        )


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true")


def _json_arg(value: Any) -> Any:
    """A structured argument: JSON bodies carry it as is, form bodies as a JSON string."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise SlackApiCallError("invalid_arguments") from None
    return value


def _public(message: Mapping[str, Any]) -> dict[str, Any]:
    """A message as the API shows it (without the emulator's bookkeeping)."""
    hidden = {"mentions", "seen", "deleted"}
    return {k: v for k, v in message.items() if k not in hidden and v is not None}


async def _serve(speedup: float, port_file: str) -> None:
    """Run an emulator with Slack's tiers ``speedup`` times faster until killed; write its URL to a file."""
    tiers = scaled(SLACK_TIERS, speedup)
    per_channel = Limit(POST_PER_CHANNEL.per_minute * speedup, POST_PER_CHANNEL.burst)
    emulator = SlackEmulator(limits=tiers, post_per_channel=per_channel, fractional_retry_after=True)
    await emulator.start()
    with open(port_file, "w", encoding="utf-8") as fh:
        fh.write(emulator.base_url)
    await asyncio.Event().wait()


if __name__ == "__main__":  # python -m tests.emulators.slack SPEEDUP URL_FILE (the burst benchmark)
    import sys

    asyncio.run(_serve(float(sys.argv[1]), sys.argv[2]))
