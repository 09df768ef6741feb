"""The web chat channel: an embeddable widget served by relaydesk, over WebSocket or plain HTTP.

Routes (all on relaydesk's own HTTP server):

=============================  ==========================================================================
``GET /web/widget.js``         the widget: one script tag, an IIFE drawing into a Shadow DOM (gzip, ETag)
``GET /web/demo``              a demo shop page with the widget on it
``POST /web/api/session``      a visitor token: new, renewed, or for a verified identity (401 if not)
``GET /web/ws?token=``         the live connection (401 before the upgrade for a bad or expired token)
``GET /web/api/messages``      the history; with ``wait=`` a long poll (the fallback without WebSocket)
``POST /web/api/messages``     send a text (the fallback without WebSocket)
``POST /web/api/upload``       send an image or a file (multipart), within the size and type limits
``POST /web/api/receipts``     the visitor received / read the answers up to a message id
``GET /web/files/{id}/{name}`` an uploaded file, by signed link (for the agents' workspace)
=============================  ==========================================================================

A message from the widget is acknowledged once :attr:`PluginServices.inbound` stored it on the bus.
An answer is stored before the outbox calls :meth:`WebChannel.send`; ``send`` pushes it to the
visitor's open connections and succeeds whether or not one is open: a visitor who comes back reads it
from the history, which is always read from the database.

Delivery states shown on the customer's own messages: *sent* (relaydesk stored it), *pending* (not in
the agents' room yet, minutes late: the workspace is down and relaydesk keeps trying), *delivered* (the
agents' room shows it: the outbox tells :meth:`WebChannel.delivery_state` as the room takes it, nothing
polls), *read* (an agent has answered since), *undelivered* (given up: the room could not take it
within the outbox's retry window, or refused it for good). For answers, the widget reports what it
received and what was on screen while the page was visible; relaydesk keeps both as per-visitor
watermarks (``delivered_upto``, ``read_upto``), which give the unread count on any device, and reports
each answer they pass to the core as a :class:`DeliveryStatus` (``delivered``, ``read``), so the
agents' room shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from aiohttp import WSMsgType, web
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from bot_core.api import (
    CHUNK_BYTES,
    LOCALE,
    TIMEZONE,
    Attachment,
    ChannelCapabilities,
    CustomerMessage,
    Delivery,
    DeliveryStatus,
    NotAccepting,
    Plugin,
    PluginKind,
    SentRef,
    TranscriptEntry,
    customer_transcript,
    download_headers,
    route,
    utcnow,
)
from bridge.channels.web.multipart import read_upload_form
from bridge.channels.web.ratelimit import RateLimited
from bridge.channels.web.sessions import CLAIM_FIELDS, BadSession, SessionSigner, VisitorSession, derive_key
from bridge.channels.web.uploads import (
    DEFAULT_TYPES,
    FileStore,
    PartialFile,
    StoredFile,
    UploadRefused,
    check_type,
    describe_types,
)
from bridge.channels.web.validation import (
    BadInput,
    int_param,
    int_value,
    parse_object,
    read_body,
    seconds_param,
    text_value,
)

CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{8,64}\Z")
LISTENER_BACKLOG = 256  # frames queued for one connection before it is told to resync instead
TYPING_REPEAT_SECONDS = 2.5  # a visitor's "still typing" is passed on at most this often
TOO_FAST = "You are sending messages faster than we can read them"
TOO_MANY_CONNECTIONS = "Too many open chat connections: close another tab of this chat"
MAX_CLAIM_FIELD_CHARS = 1000  # a claimed user id, email or name (what is kept of it is shorter still)
MAX_POLL_WAIT = 30.0
MAX_FRAME_BYTES = 64 * 1024
MAX_HINT_CHARS = 64  # a time zone or locale the browser gives with a message (the core checks it)
WS_RESTARTING = 1012  # "service restart": the widget reconnects


class WebConfig(BaseModel):
    """Settings of the web chat channel."""

    model_config = ConfigDict(extra="forbid")
    # Signs visitor sessions and file links. Empty: use (or create) dev_secret_file, if set.
    secret: SecretStr | None = None
    # Shared with the site's backend, which sends HMAC-SHA256(identity_secret, the claim as sorted JSON)
    # for its logged-in users (see sessions.py). Empty: every visitor is anonymous (a claim is refused).
    identity_secret: SecretStr | None = None
    identity_max_age_seconds: float = Field(default=86400.0, gt=0)  # how long a claim's hash is good for
    dev_secret_file: Path | None = None  # for demos: a generated secret kept here when `secret` is empty
    title: str = "Chat with us"
    welcome: str = "Hi! Ask us anything: an agent answers right here."
    bot_name: str = "Assistant"
    session_days: float = Field(default=30.0, gt=0)
    max_text_length: int = Field(default=4000, ge=1, le=100_000)
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    upload_types: list[str] = Field(default_factory=lambda: list(DEFAULT_TYPES))
    upload_dir: Path = Path("var/web/uploads")
    history_limit: int = Field(default=200, ge=1, le=2000)
    allowed_origins: list[str] = ["*"]  # pages allowed to embed the widget ("*": any)
    messages_per_minute: int = Field(default=30, ge=1)  # per visitor (texts and files), also the burst
    sessions_per_minute: int = Field(default=30, ge=1)  # new sessions per client address (not renewals)
    # a widget that fell back to long polling tries the WebSocket again this often (and after an outage)
    websocket_retry_seconds: float = Field(default=30.0, ge=1, le=3600)
    max_connections_per_visitor: int = Field(default=10, ge=1)  # WebSockets and long polls, per worker
    upload_quota_bytes: int = Field(default=1024**3, ge=1)  # the whole upload_dir; beyond it files get 507


@dataclass(eq=False)
class _Listener:
    """One open connection (a WebSocket, or a long poll) of a visitor: frames wait in its queue."""

    queue: asyncio.Queue[dict[str, Any] | None] = field(
        default_factory=lambda: asyncio.Queue(LISTENER_BACKLOG)
    )

    def put(self, frame: dict[str, Any] | None) -> None:
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:  # a stalled client: drop the backlog, it reloads the history instead
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait({"type": "resync"})


class WebChannel(Plugin[WebConfig]):
    """Customers chat from a widget on the company's own site."""

    name = "web"
    kind = PluginKind.CHANNEL

    capabilities = ChannelCapabilities(
        max_text_length=4000, media_kinds=frozenset({"image", "file"}), edits=True, deletes=True
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.config
        self.settings = config
        self.capabilities = ChannelCapabilities(
            max_text_length=config.max_text_length,
            media_kinds=frozenset({"image", "file"}),
            edits=True,
            deletes=True,
        )
        self._listeners: dict[str, set[_Listener]] = {}
        self._sockets: set[web.WebSocketResponse] = set()
        self._closing = False  # relaydesk is stopping: live connections are ended and refused
        self._typing: dict[str, tuple[str, float]] = {}
        self._fanout_off: Callable[[], None] | None = None
        self._typing_reported: dict[str, float] = {}  # visitor typing -> when the agents were last told
        self._files = FileStore(config.upload_dir, config.upload_quota_bytes)
        self._widget_js = WidgetScript.of(b"")
        self._demo_html = b""

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Resolve the secret, load the widget's files, listen to the fan-out."""
        secret = await asyncio.to_thread(self._resolve_secret)
        self._signer = SessionSigner(secret, self.settings.session_days * 86400)
        self._file_signer = self.services.downloads.signer(derive_key(secret, "files"))
        self._identity_secret = (
            self.settings.identity_secret.get_secret_value() if self.settings.identity_secret else ""
        )
        self._widget_js, self._demo_html = await asyncio.to_thread(_load_static)
        await asyncio.to_thread(self._files.sweep_partials)
        # Pushes go through the desk's fan-out, so a visitor connected to another worker gets them too.
        self._fanout_off = await self.services.fanout.subscribe(self._fanout_topic, self._on_fanout)

    @property
    def _fanout_topic(self) -> str:
        return f"web:{self.instance_name}"

    def _on_fanout(self, message: dict[str, Any]) -> None:
        subject, frame = message.get("subject"), message.get("frame")
        if isinstance(subject, str) and isinstance(frame, dict):
            self._publish_here(subject, frame)

    async def ready(self) -> None:
        """Say where the demo page is (``make run`` prints it with the agent's login), at the public URL."""
        public = self.services.public_url.rstrip("/") or self.base_url
        self.services.announce(
            f"Web chat demo: {public}/web/demo  (open it in a browser and write as a customer;\n"
            f'  on your own site add <script src="{public}/web/widget.js" async></script>)'
        )

    async def closing(self) -> None:
        """relaydesk is stopping: end every long poll and WebSocket now and refuse new ones (503).

        The widget reconnects, to this relaydesk once it is back or to another worker, and reads what it
        missed from the history; nothing a visitor sent is lost (a send is acknowledged only once stored).
        """
        self._closing = True
        await self._end_connections()

    async def _end_connections(self) -> None:
        for listeners in self._listeners.values():
            for listener in listeners:
                listener.put(None)
        for ws in list(self._sockets):
            await ws.close(code=WS_RESTARTING, message=b"relaydesk is restarting")

    def _restarting(self, request: web.Request) -> web.StreamResponse:
        response = self._error(request, 503, "relaydesk is restarting; try again in a moment")
        response.headers["Retry-After"] = "1"
        return response

    async def stop(self) -> None:
        """Close every connection (visitors reconnect to the next relaydesk) and leave the fan-out."""
        if self._fanout_off is not None:
            self._fanout_off()
            self._fanout_off = None
        self._closing = True
        await self._end_connections()

    async def reconfigure(self, config: WebConfig) -> None:
        """Apply new texts and limits live; a new secret or upload directory needs a restart."""
        self.config = self.settings = config
        self._files.quota_bytes = config.upload_quota_bytes
        self.capabilities = ChannelCapabilities(
            max_text_length=config.max_text_length,
            media_kinds=frozenset({"image", "file"}),
            edits=True,
            deletes=True,
        )

    def _resolve_secret(self) -> bytes:
        value = self.settings.secret.get_secret_value() if self.settings.secret else ""
        if value:
            return value.encode()
        path = self.settings.dev_secret_file
        if path is None:
            raise ValueError(
                f"plugin '{self.instance_name}': no secret: set secret: \"${{RELAYDESK_WEB_SECRET}}\" "
                "(or dev_secret_file, for a demo)"
            )
        if path.exists():
            stored = path.read_text(encoding="utf-8").strip()
            note = "using"
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            stored = secrets.token_urlsafe(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(stored + "\n")
            note = "generated"
        self.log.warning(
            "the web channel's secret is not set: %s the development secret in %s "
            "(set RELAYDESK_WEB_SECRET in production)",
            note,
            path,
        )
        return stored.encode()

    @property
    def base_url(self) -> str:
        """The bind address (links to uploaded files start here: the workspace fetches them in-process)."""
        return self.services.http_base_url.rstrip("/")

    # -- Channel protocol ------------------------------------------------------------------------

    async def send(self, delivery: Delivery) -> SentRef:
        """Push an answer (or an edit or deletion of one) to the visitor's open connections.

        It is stored already, so it counts as sent whether or not the visitor is connected now:
        the widget reads the history when it (re)connects.
        """
        subject = delivery.external_user_id
        target = delivery.edit_of or delivery.delete_of
        if target:
            key = _key_of_sent(target)
            deleted = delivery.delete_of is not None
            frame = {
                "type": "update",
                "key": key,
                "text": "" if deleted else delivery.text,
                "edited": not deleted,
                "deleted": deleted,
            }
            await self._publish(subject, frame)
            return SentRef(target)
        if delivery.message_id is not None:
            ref, key, message_id = f"m{delivery.message_id}", f"m:{delivery.message_id}", delivery.message_id
        else:
            ref, key, message_id = f"o{delivery.outbox_id}", f"o:{delivery.outbox_id}", None
        side = "agent" if delivery.agent_name else "bot"
        message = {
            "key": key,
            "id": message_id,
            "side": side,
            "author": delivery.agent_name if side == "agent" else self.settings.bot_name,
            "text": delivery.text,
            "attachments": [self._attachment_json(a) for a in delivery.attachments],
            "at": utcnow().isoformat(),
            "edited": False,
            "deleted": False,
        }
        if side == "agent":
            self._typing.pop(subject, None)
        await self._publish(subject, {"type": "message", "message": message})
        return SentRef(ref)

    async def typing(self, external_user_id: str, agent_name: str, active: bool) -> None:
        """Show (or stop showing) that ``agent_name`` is typing to this visitor."""
        if active:
            self._typing[external_user_id] = (agent_name, time.monotonic() + 30)
        else:
            self._typing.pop(external_user_id, None)
        await self._publish(external_user_id, {"type": "typing", "agent": agent_name, "active": active})

    # -- live connections ------------------------------------------------------------------------

    def _subscribe(self, subject: str) -> _Listener:
        listener = _Listener()
        self._listeners.setdefault(subject, set()).add(listener)
        return listener

    def _unsubscribe(self, subject: str, listener: _Listener) -> None:
        listeners = self._listeners.get(subject)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[subject]

    async def _publish(self, subject: str, frame: dict[str, Any]) -> None:
        """Push ``frame`` to the visitor's open connections, in whichever worker they are."""
        await self.services.fanout.publish(self._fanout_topic, {"subject": subject, "frame": frame})

    def _publish_here(self, subject: str, frame: dict[str, Any]) -> None:
        for listener in self._listeners.get(subject, ()):
            listener.put(frame)

    def connected(self, subject: str) -> int:
        """How many connections the visitor has open now."""
        return len(self._listeners.get(subject, ()))

    def _typing_of(self, subject: str) -> str | None:
        current = self._typing.get(subject)
        if current is None or current[1] < time.monotonic():
            return None
        return current[0]

    # -- messages in -----------------------------------------------------------------------------

    def _checked(self, client_id: Any, text: Any, *, with_file: bool = False) -> tuple[str, str]:
        """A message's client id and text as sent, checked (raises :class:`BadInput`)."""
        if not isinstance(client_id, str) or not CLIENT_ID.match(client_id):
            raise BadInput("bad client_id")
        text = text_value(text, "text").strip()
        if not text and not with_file:
            raise BadInput("The message is empty.")
        if len(text) > self.settings.max_text_length:
            raise BadInput(f"The message is too long (at most {self.settings.max_text_length} characters).")
        return client_id, text

    async def _accept(
        self,
        session: VisitorSession,
        client_id: Any,
        text: Any,
        files: list[StoredFile],
        browser: dict[str, Any] | None = None,
    ) -> None:
        """Hand a visitor's message to the engine; returns once it is stored (raises BadInput if invalid).

        ``browser`` is the message's body: its ``timezone`` and ``locale`` (what the visitor's browser
        says) become customer attributes, checked by the core."""
        client_id, text = self._checked(client_id, text, with_file=bool(files))
        external_id = f"{session.subject}/{client_id}"
        attributes = {"email": session.email} if session.verified and session.email else {}
        for key in (TIMEZONE, LOCALE):
            value = (browser or {}).get(key)
            if isinstance(value, str) and value.strip() and value.isascii() and value.isprintable():
                attributes[key] = value.strip()[:MAX_HINT_CHARS]
        await self.services.inbound(
            CustomerMessage(
                channel=self.instance_name,
                external_user_id=session.subject,
                external_message_id=external_id,
                text=text,
                attachments=tuple(self._attachment_of(f, session.subject) for f in files),
                display_name=session.name,
                attributes=attributes,
            )
        )
        self.log.info("web message accepted", extra={"chars": len(text), "files": len(files)})

    # -- history -----------------------------------------------------------------------------------

    async def history(self, subject: str, *, after: int = 0) -> list[dict[str, Any]]:
        """The visitor's messages as the widget shows them (newest ``history_limit``, ids above ``after``)."""
        entries = await customer_transcript(
            self.instance_name, subject, after=after, limit=self.settings.history_limit
        )
        last_agent = max((e.message_id for e in entries if e.side == "agent"), default=0)
        return [self._entry_json(e, last_agent) for e in entries]

    async def delivery_state(self, external_user_id: str, channel_message_id: str, state: str) -> None:
        """Show the outbox's news on a visitor's message: ``pending`` (late), ``delivered`` (the agents'
        room shows it; told by the outbox as the room takes it) or ``undelivered`` (given up)."""
        client_id = channel_message_id.rsplit("/", 1)[-1]
        await self._publish(external_user_id, {"type": "state", "client_id": client_id, "state": state})

    def _entry_json(self, entry: TranscriptEntry, last_agent: int) -> dict[str, Any]:
        data: dict[str, Any] = {
            "key": f"m:{entry.message_id}",
            "id": entry.message_id,
            "side": entry.side,
            "author": entry.author if entry.side == "agent" else self.settings.bot_name,
            "text": entry.text,
            "attachments": [self._attachment_json(a) for a in entry.attachments],
            "at": entry.at.isoformat(),
            "edited": entry.edited,
            "deleted": entry.deleted,
        }
        if entry.side == "customer":
            client_id = (entry.channel_message_id or "").rsplit("/", 1)[-1]
            data["key"] = f"c:{client_id}"
            data["client_id"] = client_id
            data["author"] = ""
            if entry.room_delivery and not entry.in_room:
                data["state"] = entry.room_delivery  # pending or undelivered: not seen by an agent
            else:
                data["state"] = (
                    "read" if entry.message_id < last_agent else "delivered" if entry.in_room else "sent"
                )
        return data

    def _attachment_of(self, stored: StoredFile, visitor: str) -> Attachment:
        """The attachment of an upload: an expiring link signed for this file and visitor."""
        url = (
            f"{self.base_url}/web/files/{stored.file_id}/{quote(stored.name)}"
            f"?{self._file_signer.query(stored.file_id, visitor)}"
        )
        return Attachment(
            kind="image" if stored.kind == "image" else "file",
            url=url,
            mime_type=stored.mime_type,
            name=stored.name,
            size=stored.size,
        )

    def _attachment_json(self, attachment: Attachment) -> dict[str, Any]:
        url = attachment.url or ""
        if url.startswith(self.base_url + "/"):
            url = url[len(self.base_url) :]  # relative: the widget puts its own relaydesk address first
        elif not url.startswith(("http://", "https://")):
            url = ""
        return {
            "kind": attachment.kind,
            "name": attachment.name or attachment.kind,
            "mime_type": attachment.mime_type or "",
            "size": attachment.size,
            "url": url,
        }

    async def _watermarks(self, subject: str) -> dict[str, int]:
        store = self.services.store(f"visitor:{subject}")
        return {
            "delivered_upto": int(await store.get("delivered_upto", 0) or 0),
            "read_upto": int(await store.get("read_upto", 0) or 0),
        }

    async def _receipt(self, subject: str, delivered: Any, read: Any) -> None:
        """Raise the visitor's delivered/read watermarks (they never go back); raises BadInput first.

        The answers a watermark passes are reported to the core first (:meth:`_report_statuses`), so
        the agents see them delivered or read; ``NotAccepting`` (relaydesk stopping) leaves the
        watermarks where they were."""
        marks = (
            ("delivered_upto", int_value(delivered, "delivered")),
            ("read_upto", int_value(read, "read")),
        )
        store = self.services.store(f"visitor:{subject}")
        raised: dict[str, tuple[int, int]] = {}
        for key, value in marks:
            if value is not None and value > 0:
                old = int(await store.get(key, 0) or 0)
                if value > old:
                    raised[key] = (old, value)
        if not raised:
            return
        await self._report_statuses(subject, raised)
        for key, (_old, value) in raised.items():
            await store.set(key, value)

    async def _report_statuses(self, subject: str, raised: dict[str, tuple[int, int]]) -> None:
        """Tell the core what the widget received (``delivered``) and showed (``read``): one
        :class:`DeliveryStatus` per answer between a watermark's old and new place (at most the newest
        ``history_limit``). The ids are the ones :meth:`send` returned (``m<message id>``)."""
        read_from, read_to = raised.get("read_upto", (0, 0))
        got_from, got_to = raised.get("delivered_upto", (0, 0))
        after = min(old for old, _new in raised.values())
        entries = await customer_transcript(
            self.instance_name, subject, after=after, limit=self.settings.history_limit
        )
        for entry in entries:
            if entry.side == "customer":
                continue
            if read_from < entry.message_id <= read_to:
                status: Literal["delivered", "read"] = "read"
            elif got_from < entry.message_id <= got_to:
                status = "delivered"
            else:
                continue
            await self.services.inbound(
                DeliveryStatus(
                    channel=self.instance_name,
                    external_user_id=subject,
                    channel_message_id=f"m{entry.message_id}",
                    status=status,
                )
            )

    # -- HTTP helpers ------------------------------------------------------------------------------

    def _cors(self, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = self.settings.allowed_origins
        if origin and ("*" in allowed or origin in allowed):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    def _json(self, request: web.Request, data: Any, status: int = 200) -> web.StreamResponse:
        response = web.json_response(data, status=status, headers={"Cache-Control": "no-store"})
        return self._cors(request, response)

    def _error(self, request: web.Request, status: int, message: str) -> web.StreamResponse:
        """A refusal: ``{"error": message}``, logged once (one line, no traceback)."""
        self.log.info(
            "web request refused",
            extra={"path": request.path, "status": status, "reason": message, "client": request.remote},
        )
        return self._json(request, {"error": message}, status)

    def _too_fast(self, request: web.Request, exc: RateLimited) -> web.StreamResponse:
        response = self._error(request, 429, str(exc))
        response.headers["Retry-After"] = str(exc.retry_after)
        return response

    async def _take(self, bucket: str, key: str, per_minute: int, what: str) -> None:
        """Take a token from this channel's ``bucket`` for ``key`` (shared by every worker), or raise
        :class:`RateLimited` saying ``what``."""
        wait = await self.services.rate_limits.take(f"{self.instance_name}:{bucket}", key, per_minute)
        if wait > 0:
            raise RateLimited(what, wait)

    async def _message_token(self, visitor: VisitorSession) -> None:
        """One of the visitor's ``messages_per_minute`` (texts, files and WebSocket sends alike)."""
        await self._take("messages", visitor.subject, self.settings.messages_per_minute, TOO_FAST)

    def _session_of(self, request: web.Request) -> VisitorSession:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return self._signer.verify(token or request.query.get("token", ""))

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        """The whole JSON object body (raises :class:`BadInput`)."""
        return parse_object(await read_body(request, MAX_FRAME_BYTES))

    # -- routes: page and script -----------------------------------------------------------------

    @route("GET", "/web/widget.js")
    async def widget_js(self, request: web.Request) -> web.StreamResponse:
        """The widget script: gzipped when the browser takes it, with an ETag (304 when unchanged).

        ``/web/widget.js`` (the tag sites embed) is cached for five minutes, then revalidated;
        ``/web/widget.js?v=<version>`` (this exact version) for a year.
        """
        script = self._widget_js
        zipped = "gzip" in request.headers.get("Accept-Encoding", "").lower()
        etag = f'"{script.version}-gz"' if zipped else f'"{script.version}"'
        forever = request.query.get("v") == script.version
        headers = {
            "Cache-Control": "public, max-age=31536000, immutable" if forever else "public, max-age=300",
            "ETag": etag,
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
        }
        if _etag_matches(request.headers.get("If-None-Match", ""), etag):
            return web.Response(status=304, headers=headers)
        if zipped:
            headers["Content-Encoding"] = "gzip"
        return web.Response(
            body=script.gzipped if zipped else script.body,
            content_type="application/javascript",
            charset="utf-8",
            headers=headers,
        )

    @route("GET", "/web/demo")
    async def demo_page(self, request: web.Request) -> web.StreamResponse:
        """A demo shop page with the widget on it."""
        return web.Response(
            body=self._demo_html,
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-store"},
        )

    @route("OPTIONS", "/web/api/{tail:.*}")
    async def preflight(self, request: web.Request) -> web.StreamResponse:
        """CORS preflight of the widget's API calls from other sites."""
        response = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        response.headers["Access-Control-Max-Age"] = "600"
        return self._cors(request, response)

    # -- routes: the API -------------------------------------------------------------------------

    @route("POST", "/web/api/session")
    async def session(self, request: web.Request) -> web.StreamResponse:
        """A token: for a verified identity, renewed from a valid token, or for a new visitor.

        Only new sessions count against ``sessions_per_minute`` of the client's address: a renewal
        shows a valid token already.
        """
        try:
            claims, user_hash, token = _session_request(await self._body(request))
        except BadInput as exc:
            return self._error(request, exc.status, str(exc))
        if token and not (user_hash or "user_id" in claims or "email" in claims):
            try:
                visitor = self._signer.renewed(self._signer.verify(token))
            except BadSession as exc:
                return self._error(request, 401, f"Session not valid: {exc}.")
        else:
            try:
                await self._take(
                    "sessions",
                    request.remote or "",
                    self.settings.sessions_per_minute,
                    "Too many new chat sessions from your address",
                )
            except RateLimited as exc:
                return self._too_fast(request, exc)
            if user_hash or "user_id" in claims or "email" in claims:
                try:
                    visitor = self._signer.verified(
                        self._identity_secret,
                        claims,
                        user_hash,
                        max_age=self.settings.identity_max_age_seconds,
                    )
                except BadSession as exc:
                    return self._error(request, 401, f"Identity not verified: {exc}.")
            else:
                visitor = self._signer.anonymous()
        settings = self.settings
        return self._json(
            request,
            {
                "token": self._signer.issue(visitor),
                "expires_at": int(visitor.expires_at),
                "name": visitor.name,
                "verified": visitor.verified,
                **await self._watermarks(visitor.subject),
                "config": {
                    "title": settings.title,
                    "welcome": settings.welcome,
                    "bot_name": settings.bot_name,
                    "max_text_length": settings.max_text_length,
                    "max_upload_bytes": settings.max_upload_bytes,
                    "upload_types": settings.upload_types,
                    "upload_types_text": describe_types(settings.upload_types),
                    "websocket_retry_seconds": settings.websocket_retry_seconds,
                },
            },
        )

    @route("GET", "/web/api/messages")
    async def get_messages(self, request: web.Request) -> web.StreamResponse:
        """The history after ``after``; with ``wait`` (seconds) it first waits for news newer than ``newest``."""
        try:
            visitor = self._session_of(request)
        except BadSession as exc:
            return self._error(request, 401, f"Session not valid: {exc}.")
        try:
            after = int_param(request.query, "after")
            newest = max(after, int_param(request.query, "newest"))
            wait = seconds_param(request.query, "wait", MAX_POLL_WAIT)
        except BadInput as exc:
            return self._error(request, exc.status, str(exc))
        if wait > 0 and self._closing:
            return self._restarting(request)
        if wait > 0:
            if self.connected(visitor.subject) >= self.settings.max_connections_per_visitor:
                return self._error(request, 429, TOO_MANY_CONNECTIONS)
            listener = self._subscribe(visitor.subject)
            try:
                news = await customer_transcript(self.instance_name, visitor.subject, after=newest, limit=1)
                if not news:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(listener.queue.get(), wait)
            finally:
                self._unsubscribe(visitor.subject, listener)
        return self._json(
            request,
            {
                "messages": await self.history(visitor.subject, after=after),
                "typing": self._typing_of(visitor.subject),
                **await self._watermarks(visitor.subject),
            },
        )

    @route("POST", "/web/api/messages")
    async def post_message(self, request: web.Request) -> web.StreamResponse:
        """Send a text: ``{"client_id", "text"}``; answered once relaydesk stored it."""
        try:
            visitor = self._session_of(request)
        except BadSession as exc:
            return self._error(request, 401, f"Session not valid: {exc}.")
        try:
            body = await self._body(request)
            client_id, text = self._checked(body.get("client_id"), body.get("text"))
            await self._message_token(visitor)
            await self._accept(visitor, client_id, text, [], body)
        except RateLimited as exc:
            return self._too_fast(request, exc)
        except BadInput as exc:
            return self._error(request, exc.status, str(exc))
        except NotAccepting:
            return self._error(request, 503, "relaydesk is restarting: try again in a moment")
        return self._json(request, {"client_id": client_id, "state": "sent"})

    @route("POST", "/web/api/upload")
    async def upload(self, request: web.Request) -> web.StreamResponse:
        """Send a file (multipart: ``client_id``, optional ``text``, then ``file``), within the limits.

        The file is stored only once everything else about the message is known to be acceptable, and
        removed again if the engine does not take the message after all.
        """
        try:
            visitor = self._session_of(request)
        except BadSession as exc:
            return self._error(request, 401, f"Session not valid: {exc}.")
        try:
            await self._message_token(visitor)  # before anything is read or stored
        except RateLimited as exc:
            return self._too_fast(request, exc)
        partial: PartialFile | None = None
        stored: StoredFile | None = None
        try:
            form = await read_upload_form(request, self.settings.max_upload_bytes, self._files)
            partial = form.file
            client_id, text = self._checked(form.client_id, form.text, with_file=True)
            mime = check_type(form.name, form.declared_type, partial.head, self.settings.upload_types)
            stored = await asyncio.to_thread(self._files.commit, partial, form.name, mime)
            await self._accept(visitor, client_id, text, [stored])
        except (BadInput, UploadRefused) as exc:
            await self._drop_upload(partial, stored)
            return self._error(request, exc.status, str(exc))
        except NotAccepting:
            await self._drop_upload(partial, stored)
            return self._error(request, 503, "relaydesk is restarting: try again in a moment")
        except BaseException:
            await self._drop_upload(partial, stored)
            raise
        attachment = self._attachment_json(self._attachment_of(stored, visitor.subject))
        return self._json(request, {"client_id": client_id, "state": "sent", "attachment": attachment})

    async def _drop_upload(self, partial: PartialFile | None, stored: StoredFile | None) -> None:
        """Remove the file of an upload whose message was refused: nothing of it stays on disk."""
        if stored is not None:
            await asyncio.to_thread(self._files.remove, stored.file_id)
        elif partial is not None:
            await asyncio.to_thread(partial.discard)

    @route("POST", "/web/api/receipts")
    async def receipts(self, request: web.Request) -> web.StreamResponse:
        """The widget received (``delivered``) and showed (``read``) the answers up to these message ids."""
        try:
            visitor = self._session_of(request)
        except BadSession as exc:
            return self._error(request, 401, f"Session not valid: {exc}.")
        try:
            body = await self._body(request)
            await self._receipt(visitor.subject, body.get("delivered"), body.get("read"))
        except BadInput as exc:
            return self._error(request, exc.status, str(exc))
        except NotAccepting:
            return self._restarting(request)
        return self._json(request, await self._watermarks(visitor.subject))

    @route("GET", "/web/files/{file_id}/{name}")
    async def file(self, request: web.Request) -> web.StreamResponse:
        """An uploaded file, for whoever holds its signed, unexpired link (the agents' workspace, the widget).

        Streamed from disk with the safe download headers (an attachment unless a plain raster image),
        within the desk's downloads per address and minute.
        """
        file_id = request.match_info["file_id"]
        scope = self._file_signer.check(file_id, request.query)
        await self.services.downloads.admit(request, f"{self.instance_name}-files", scope)
        stored = await asyncio.to_thread(self._files.load, file_id)
        if stored is None:
            raise web.HTTPNotFound(text="no such file")
        return web.FileResponse(
            stored.path, chunk_size=CHUNK_BYTES, headers=download_headers(stored.mime_type, stored.name)
        )

    # -- the WebSocket ---------------------------------------------------------------------------

    @route("GET", "/web/ws")
    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """The widget's live connection: ``sync``, ``send`` and ``receipt`` frames in; history, acks, answers out."""
        try:
            visitor = self._signer.verify(request.query.get("token", ""))
        except BadSession as exc:
            return self._error(request, 401, f"Session not valid: {exc}.")
        origin = request.headers.get("Origin")
        allowed = self.settings.allowed_origins
        if origin and "*" not in allowed and origin not in allowed:
            return self._error(request, 403, "this site may not embed the widget")
        if self._closing:
            return self._restarting(request)
        if self.connected(visitor.subject) >= self.settings.max_connections_per_visitor:
            return self._error(request, 429, TOO_MANY_CONNECTIONS)
        listener = self._subscribe(visitor.subject)  # before the handshake's await: the cap holds
        ws = web.WebSocketResponse(heartbeat=25.0, max_msg_size=MAX_FRAME_BYTES)
        pump: asyncio.Task[None] | None = None
        try:
            await ws.prepare(request)
            self._sockets.add(ws)
            pump = asyncio.create_task(self._pump(ws, listener), name=f"{self.instance_name}-ws-out")
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                try:
                    await self._on_frame(visitor, listener, parse_object(msg.data, "a frame"))
                except BadInput as exc:
                    self.log.info("web frame refused", extra={"reason": str(exc), "client": request.remote})
                    listener.put({"type": "error", "message": str(exc)})
        finally:
            self._unsubscribe(visitor.subject, listener)
            self._sockets.discard(ws)
            if visitor.subject in self._typing_reported:  # gone while typing: the agents stop seeing it
                await self._customer_typing(visitor.subject, False)
            if pump is not None:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
        return ws

    async def _customer_typing(self, subject: str, active: bool) -> None:
        """Tell the agents the visitor types: state changes at once, repeats of *typing* at most every few s."""
        now = time.monotonic()
        if active:
            since = self._typing_reported.get(subject)
            if since is not None and now - since < TYPING_REPEAT_SECONDS:
                return
            self._typing_reported[subject] = now
        else:
            self._typing_reported.pop(subject, None)
        await self.services.customer_typing(subject, active)

    @staticmethod
    async def _pump(ws: web.WebSocketResponse, listener: _Listener) -> None:
        while True:
            frame = await listener.queue.get()
            if frame is None:
                await ws.close(code=WS_RESTARTING, message=b"relaydesk is restarting")
                return
            try:
                await ws.send_json(frame)
            except (ConnectionError, RuntimeError):
                return

    async def _on_frame(self, visitor: VisitorSession, listener: _Listener, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "sync":
            after = int_value(frame.get("after"), "after") or 0
            listener.put(
                {
                    "type": "history",
                    "after": after,
                    "messages": await self.history(visitor.subject, after=after),
                    "typing": self._typing_of(visitor.subject),
                    **await self._watermarks(visitor.subject),
                }
            )
        elif kind == "send":
            client_id = frame.get("client_id") if isinstance(frame.get("client_id"), str) else ""
            try:
                checked_id, text = self._checked(client_id, frame.get("text"))
                await self._message_token(visitor)
                await self._accept(visitor, checked_id, text, [], frame)
            except BadInput as exc:
                listener.put({"type": "error", "client_id": client_id, "message": str(exc)})
            except RateLimited as exc:  # the widget offers to send it again
                frame = {"type": "error", "client_id": client_id, "message": str(exc)}
                listener.put({**frame, "retry_after": exc.retry_after})
            except NotAccepting:
                listener.put({"type": "retry", "client_id": client_id})
            else:
                listener.put({"type": "ack", "client_id": client_id, "state": "sent"})
        elif kind == "typing":
            await self._customer_typing(visitor.subject, frame.get("active") is True)
        elif kind == "receipt":
            try:
                await self._receipt(visitor.subject, frame.get("delivered"), frame.get("read"))
            except NotAccepting:  # relaydesk is stopping: the watermarks stay, the next receipt covers these
                return

        elif kind == "ping":
            listener.put({"type": "pong"})


def _session_request(body: dict[str, Any]) -> tuple[dict[str, str | int], str, str]:
    """The claimed identity fields (non-empty, with ``issued_at``), the ``user_hash`` and the ``token``
    of a session request, checked (raises :class:`BadInput`)."""
    claims: dict[str, str | int] = {}
    for key in CLAIM_FIELDS:
        value = text_value(body.get(key), key, single_line=True)
        if len(value) > MAX_CLAIM_FIELD_CHARS:
            raise BadInput(f"{key} is too long")
        if value:
            claims[key] = value
    issued_at = int_value(body.get("issued_at"), "issued_at")
    if issued_at is not None:
        claims["issued_at"] = issued_at
    user_hash = text_value(body.get("user_hash"), "user_hash", single_line=True)[:MAX_CLAIM_FIELD_CHARS]
    token = text_value(body.get("token"), "token", single_line=True)
    return claims, user_hash, token


def _key_of_sent(ref: str) -> str:
    """The widget's key of an answer from the platform id :meth:`WebChannel.send` returned for it."""
    return f"m:{ref[1:]}" if ref.startswith("m") else f"o:{ref[1:]}"


@dataclass(frozen=True)
class WidgetScript:
    """The widget script as served: its bytes, gzipped once, and the version (a hash) naming both."""

    body: bytes
    gzipped: bytes
    version: str

    @classmethod
    def of(cls, body: bytes) -> WidgetScript:
        """The script ``body`` with its compressed form and version."""
        version = hashlib.sha256(body).hexdigest()[:16]
        return cls(body, gzip.compress(body, compresslevel=9, mtime=0), version)


def _load_static() -> tuple[WidgetScript, bytes]:
    """The widget script (its stylesheet and locale texts inlined) and the demo page (loading that
    script's version, so it may be cached for good)."""
    static = resources.files("bridge.channels.web") / "static"
    script = (static / "widget.js").read_text(encoding="utf-8")
    css = (static / "widget.css").read_text(encoding="utf-8")
    locales = {
        entry.name.removesuffix(".json"): json.loads(entry.read_text(encoding="utf-8"))
        for entry in sorted((static / "locales").iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".json")
    }
    script = script.replace('"__RELAYDESK_CSS__"', json.dumps(css))
    script = script.replace('"__RELAYDESK_LOCALES__"', json.dumps(locales, ensure_ascii=False))
    widget = WidgetScript.of(script.encode())
    demo = (static / "demo.html").read_text(encoding="utf-8")
    demo = demo.replace('src="/web/widget.js"', f'src="/web/widget.js?v={widget.version}"')
    return widget, demo.encode()


def _etag_matches(header: str, etag: str) -> bool:
    """Whether an If-None-Match header names ``etag`` (weakly compared, as for a GET)."""
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))
