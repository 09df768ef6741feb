"""A local WhatsApp Business Cloud API (Graph API) for tests: real HTTP on loopback, Meta's shapes and errors.

The channel is pointed at it with its ``api_base`` setting. What it does, as the real API does it:

- ``POST /{version}/{phone_number_id}/messages`` with a bearer token (a wrong one: 401, ``OAuthException``
  code 190): text, image/document/audio/video by ``link`` or uploaded ``id``, interactive, reaction,
  template (only approved templates in an approved language: 132001 otherwise) and "mark as read"
  (``{"status": "read", "message_id"}``). An accepted message answers ``{"messaging_product", "contacts",
  "messages": [{"id": "wamid..."}]}``.
- The 24-hour window: a free-form message to a customer who has not written for 24 hours (or never) is
  refused with 131047 (the emulator's clock can be moved forward with :meth:`WhatsAppEmulator.advance`);
  templates are allowed. The pair rate: with ``pair_interval`` set, a second message to the same customer
  sooner than that is refused with 131056.
- ``POST /{version}/{phone_number_id}/media`` (multipart ``file``, ``type``, ``messaging_product``) and
  ``GET /{version}/{media_id}`` (a short-lived ``url``), whose bytes are fetched with the same token.
- Errors in Graph's shape ``{"error": {"message", "type", "code", "error_data": {"messaging_product",
  "details"}, "fbtrace_id"}}``: switches to inject 130429 (throughput), 131056 (pair rate), 131026
  (undeliverable), 131047 (window), other codes, 5xx and hangs, and an outage until the test ends it.
- The webhook: the customer's messages (every type the channel reads) and the statuses of sent messages
  (``sent``, ``delivered``, ``read``; ``failed`` with its errors) are POSTed to the configured URL, signed with
  ``X-Hub-Signature-256`` (HMAC-SHA256 of the raw body with the app secret), after ``status_delay``
  seconds for statuses; one not answered 200 is retried. The verification GET is made by :meth:`verify`.

Everything received is recorded in :attr:`WhatsAppEmulator.calls` (tests wait on it).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

WINDOW_SECONDS = 24 * 3600
VERSION = "v21.0"

ERRORS: dict[int, tuple[int, str, str]] = {
    # code: (HTTP status, message, details)
    130429: (400, "(#130429) Rate limit hit", "Cloud API message throughput has been reached."),
    131056: (
        400,
        "(#131056) (Business Account, Consumer Account) pair rate limit hit",
        "Too many messages sent from the sender phone number to the same recipient phone number "
        "in a short period of time.",
    ),
    131026: (400, "(#131026) Message Undeliverable", "Message Undeliverable."),
    131047: (
        400,
        "(#131047) Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer last "
        "replied to this number.",
    ),
    132001: (404, "(#132001) Template name does not exist in the translation", "template name not found"),
    131051: (400, "(#131051) Unsupported message type", "Message type is not currently supported."),
    100: (400, "(#100) Invalid parameter", "Invalid parameter"),
    1: (500, "An unknown error occurred", ""),
    2: (503, "Service temporarily unavailable", ""),
    190: (401, "Invalid OAuth access token - Cannot parse access token", ""),
}


class GraphError(Exception):
    """An error answer of the Graph API."""

    def __init__(self, code: int, status: int | None = None, message: str | None = None) -> None:
        default_status, default_message, self.details = ERRORS.get(code, (400, f"(#{code}) Error", ""))
        super().__init__(message or default_message)
        self.code = code
        self.status = status or default_status
        self.message = message or default_message

    def body(self) -> dict[str, Any]:
        """The JSON the Graph API answers."""
        error: dict[str, Any] = {
            "message": self.message,
            "type": "OAuthException",
            "code": self.code,
            "fbtrace_id": "A" + secrets.token_hex(10),
        }
        if self.details:
            error["error_data"] = {"messaging_product": "whatsapp", "details": self.details}
        if self.status >= 500:
            error["is_transient"] = True
        return {"error": error}


@dataclass
class Call:
    """One request the emulator received, with what it answered."""

    path: str
    body: dict[str, Any]
    status: int = 0
    response: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)


@dataclass
class Injected:
    """An error (or a hang, when ``error`` is None) for the next ``times`` message sends."""

    error: GraphError | None
    times: int


@dataclass
class WebhookDelivery:
    """One POST of the webhook sender and how relaydesk answered it."""

    kind: str  # "message" or "status"
    body: bytes
    status: int


@dataclass
class Media:
    """A file the emulator holds (uploaded by the business or sent by a customer)."""

    media_id: str
    mime_type: str
    data: bytes


class WhatsAppEmulator:
    """The Cloud API of one business phone number, with its customers, media and webhook."""

    def __init__(
        self,
        access_token: str,
        app_secret: str,
        *,
        phone_number_id: str = "106540352242922",
        display_phone_number: str = "15550783881",
        version: str = VERSION,
    ) -> None:
        self.access_token = access_token
        self.app_secret = app_secret
        self.phone_number_id = phone_number_id
        self.display_phone_number = display_phone_number
        self.version = version
        self.webhook_url: str | None = None
        self.calls: list[Call] = []
        self.webhook_deliveries: list[WebhookDelivery] = []
        self.sent: list[dict[str, Any]] = []  # accepted outbound messages (with "id")
        self.read_marks: list[str] = []
        self.media: dict[str, Media] = {}
        self.last_inbound: dict[str, float] = {}  # wa_id -> emulator time of their last message
        self.templates: dict[str, dict[str, str]] = {}  # name -> language code -> body with {{1}}...
        self.pair_interval = 0.0  # refuse a second message to one customer sooner than this (131056)
        self.status_delay = 0.05
        self.read_statuses = False  # also send "read" after "delivered"
        self.undeliverable_async: set[str] = set()  # wa_ids whose messages fail later (status 131026)
        self.duplicate_webhooks = False
        self.offset = 0.0  # seconds added to the clock (see advance)
        self._last_to: dict[str, float] = {}
        self._injected: list[Injected] = []
        self._outage: GraphError | None = None
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._hang = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._webhook_lock = asyncio.Lock()
        self.port = 0

    # -- server -----------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """What the channel's ``api_base`` takes (the Graph host, without the version)."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application(client_max_size=100 * 1024**2)
        app.router.add_post("/{version}/{phone}/messages", self._messages)
        app.router.add_post("/{version}/{phone}/media", self._upload)
        app.router.add_get("/{version}/{media_id}", self._media_info)
        app.router.add_get("/download/{media_id}", self._download)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._http = aiohttp.ClientSession()

    async def stop(self) -> None:
        """Stop pending webhook posts and the server."""
        self._hang.set()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def now(self) -> float:
        """The emulator's clock (wall time plus :meth:`advance`)."""
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward (the 24-hour window closes without waiting a day)."""
        self.offset += seconds

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds (checked after every change); TimeoutError with the calls otherwise."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
            except TimeoutError:
                seen = [
                    (c.path.rsplit("/", 1)[-1], c.status, c.response.get("error", {}).get("code"))
                    for c in self.calls
                ]
                raise TimeoutError(f"condition not met in {timeout}s; calls: {seen}") from None

    # -- switches ---------------------------------------------------------------------------------

    def fail(self, code: int, *, times: int = 1, status: int | None = None) -> None:
        """Answer the next ``times`` message sends with Graph error ``code`` (HTTP ``status``)."""
        self._injected.append(Injected(GraphError(code, status), times))

    def hang(self, *, times: int = 1) -> None:
        """Never answer the next ``times`` message sends (until the emulator stops)."""
        self._injected.append(Injected(None, times))

    def outage(self, status: int = 503) -> None:
        """Answer every message send with a 5xx until :meth:`restore`."""
        self._outage = GraphError(2 if status == 503 else 1, status)

    def restore(self) -> None:
        """End the outage started by :meth:`outage`."""
        self._outage = None

    def approve_template(self, name: str, language: str, body: str) -> None:
        """An approved template (``body`` with ``{{1}}``... placeholders) in one language."""
        self.templates.setdefault(name, {})[language] = body

    # -- the customer's side ----------------------------------------------------------------------

    def _envelope(self, value: dict[str, Any]) -> dict[str, Any]:
        return {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "102290129340398",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": self.display_phone_number,
                                    "phone_number_id": self.phone_number_id,
                                },
                                **value,
                            },
                        }
                    ],
                }
            ],
        }

    def store_media(self, data: bytes, mime_type: str) -> Media:
        """Keep a file under a new media id."""
        media = Media(str(1000000000 + next(self._ids)), mime_type, data)
        self.media[media.media_id] = media
        return media

    async def customer_sends(
        self,
        wa_id: str,
        name: str,
        kind: str = "text",
        content: dict[str, Any] | list[Any] | None = None,
        *,
        text: str | None = None,
        context: str | None = None,
    ) -> dict[str, Any]:
        """The customer ``wa_id`` sends a message of ``kind`` (``text`` with ``text=``, or ``content`` as the
        webhook carries it under the type's key); it is POSTed to the webhook. Returns the message."""
        message: dict[str, Any] = {
            "from": wa_id,
            "id": f"wamid.HBgL{wa_id}{secrets.token_hex(8).upper()}",
            "timestamp": str(int(self.now())),
            "type": kind,
        }
        if kind == "text":
            message["text"] = {"body": text or ""}
        elif content is not None:
            message[kind] = content
        if context:
            message["context"] = {"from": self.display_phone_number, "id": context}
        self.last_inbound[wa_id] = self.now()
        body = self._envelope(
            {"contacts": [{"profile": {"name": name}, "wa_id": wa_id}], "messages": [message]}
        )
        await self.post_webhook("message", body)
        return message

    async def customer_sends_media(
        self, wa_id: str, name: str, kind: str, data: bytes, mime_type: str, **extra: Any
    ) -> dict[str, Any]:
        """The customer sends a file (``image``, ``document``, ``audio``, ``video``, ``sticker``)."""
        media = self.store_media(data, mime_type)
        content = {
            "id": media.media_id,
            "mime_type": mime_type,
            "sha256": hashlib.sha256(data).hexdigest(),
            **extra,
        }
        return await self.customer_sends(wa_id, name, kind, content)

    def sign(self, body: bytes, secret: str | None = None) -> str:
        """The ``X-Hub-Signature-256`` header Meta sends for ``body``."""
        digest = hmac.new((secret or self.app_secret).encode(), body, hashlib.sha256).hexdigest()
        return f"sha256={digest}"

    async def post_webhook(self, kind: str, payload: dict[str, Any]) -> int:
        """POST a notification to the webhook, signed, until it is answered 200 (at most 20 tries)."""
        assert self._http is not None and self.webhook_url, "set webhook_url first"
        raw = json.dumps(payload, separators=(",", ":")).encode()
        status = 0
        async with self._webhook_lock:  # in order, like Meta's per-number delivery
            for _ in range(1 + int(self.duplicate_webhooks)):
                for _attempt in range(20):
                    status = await self._post_once(raw)
                    self.webhook_deliveries.append(WebhookDelivery(kind, raw, status))
                    await self._notify()
                    if status == 200:
                        break
                    await asyncio.sleep(0.1)
        return status

    async def _post_once(self, raw: bytes) -> int:
        assert self._http is not None and self.webhook_url
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": self.sign(raw)}
        try:
            async with self._http.post(self.webhook_url, data=raw, headers=headers) as resp:
                await resp.read()
                return resp.status
        except aiohttp.ClientError:
            return 0

    async def verify(self, verify_token: str, challenge: str = "1158201444") -> tuple[int, str]:
        """The verification GET Meta makes when the webhook is configured in the app dashboard."""
        assert self._http is not None and self.webhook_url
        params = {"hub.mode": "subscribe", "hub.verify_token": verify_token, "hub.challenge": challenge}
        async with self._http.get(self.webhook_url, params=params) as resp:
            return resp.status, await resp.text()

    def _status(
        self, message_id: str, wa_id: str, status: str, errors: list[dict[str, Any]] | None
    ) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": message_id,
            "status": status,
            "timestamp": str(int(self.now())),
            "recipient_id": wa_id,
        }
        if status in ("sent", "delivered"):
            item["conversation"] = {"id": "CONVERSATION_ID", "origin": {"type": "service"}}
            item["pricing"] = {"billable": True, "pricing_model": "CBP", "category": "service"}
        if errors:
            item["errors"] = errors
        return self._envelope({"statuses": [item]})

    def _later_statuses(self, message_id: str, wa_id: str) -> None:
        async def send() -> None:
            await asyncio.sleep(self.status_delay)
            if wa_id in self.undeliverable_async:
                error = GraphError(131026)
                errors = [
                    {
                        "code": 131026,
                        "title": "Message undeliverable",
                        "message": "Message undeliverable",
                        "error_data": {"details": error.details},
                    }
                ]
                await self.post_webhook("status", self._status(message_id, wa_id, "failed", errors))
                return
            await self.post_webhook("status", self._status(message_id, wa_id, "sent", None))
            await self.post_webhook("status", self._status(message_id, wa_id, "delivered", None))
            if self.read_statuses:
                await self.post_webhook("status", self._status(message_id, wa_id, "read", None))

        if self.webhook_url:
            task = asyncio.create_task(send())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- what the business sent ---------------------------------------------------------------------

    def messages_to(self, wa_id: str) -> list[dict[str, Any]]:
        """The messages the API accepted for ``wa_id``, in order."""
        return [m for m in self.sent if m.get("to") == wa_id]

    def texts_to(self, wa_id: str) -> list[str]:
        """What ``wa_id`` received as text (a template as ``template:<name>:<lang>:<variables>``)."""
        out = []
        for m in self.messages_to(wa_id):
            kind = m.get("type", "text")
            if kind == "text":
                out.append(m["text"]["body"])
            elif kind == "template":
                t = m["template"]
                variables = [
                    p.get("text", "") for c in t.get("components", []) for p in c.get("parameters", [])
                ]
                out.append(f"template:{t['name']}:{t['language']['code']}:{'|'.join(variables)}")
            elif kind in ("image", "document", "audio", "video", "sticker"):
                out.append(f"{kind}:{m[kind].get('caption', '')}")
            else:
                out.append(kind)
        return out

    # -- the API ------------------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.access_token}".encode())

    def _error(self, call: Call, error: GraphError) -> web.Response:
        call.status, call.response = error.status, error.body()
        return web.json_response(call.response, status=error.status)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        call = Call(request.path, body if isinstance(body, dict) else {})
        self.calls.append(call)
        try:
            if not self._authorised(request):
                return self._error(call, GraphError(190))
            if request.match_info["phone"] != self.phone_number_id:
                return self._error(call, GraphError(100, message="(#100) Invalid phone number id"))
            if self._outage is not None:
                return self._error(call, self._outage)
            if body.get("messaging_product") != "whatsapp":
                return self._error(
                    call, GraphError(100, message="(#100) The parameter messaging_product is required.")
                )
            if body.get("status") == "read":
                self.read_marks.append(str(body.get("message_id")))
                call.status, call.response = 200, {"success": True}
                return web.json_response(call.response)
            injected = self._take_injected()
            if injected is not None and injected.error is None:
                await self._hang.wait()
                raise web.HTTPServiceUnavailable()
            if injected is not None and injected.error is not None:
                return self._error(call, injected.error)
            return self._accept(call, body)
        finally:
            await self._notify()

    def _accept(self, call: Call, body: dict[str, Any]) -> web.Response:
        to = str(body.get("to", ""))
        kind = body.get("type", "text")
        if not to.isdigit():
            return self._error(call, GraphError(100, message="(#100) Invalid parameter: to"))
        if kind == "template":
            template = body.get("template", {})
            languages = self.templates.get(template.get("name", ""), {})
            if template.get("language", {}).get("code") not in languages:
                return self._error(call, GraphError(132001))
        elif kind == "text":
            text = body.get("text", {}).get("body")
            if not isinstance(text, str) or not text or len(text) > 4096:
                return self._error(call, GraphError(100, message="(#100) Invalid parameter: text.body"))
        elif kind in ("image", "document", "audio", "video", "sticker"):
            media = body.get(kind, {})
            if "id" in media and media["id"] not in self.media:
                return self._error(call, GraphError(100, message="(#100) Invalid parameter: media id"))
            if "id" not in media and "link" not in media:
                return self._error(call, GraphError(100, message=f"(#100) {kind} needs id or link"))
        elif kind not in ("interactive", "reaction", "location", "contacts"):
            return self._error(call, GraphError(131051))
        now = self.now()
        if kind != "template" and now - self.last_inbound.get(to, float("-inf")) > WINDOW_SECONDS:
            return self._error(call, GraphError(131047))
        if self.pair_interval and now - self._last_to.get(to, float("-inf")) < self.pair_interval:
            return self._error(call, GraphError(131056))
        self._last_to[to] = now
        message_id = f"wamid.HBgL{to}{secrets.token_hex(10).upper()}"
        self.sent.append({**body, "id": message_id})
        call.status = 200
        call.response = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": message_id}],
        }
        self._later_statuses(message_id, to)
        return web.json_response(call.response)

    def _take_injected(self) -> Injected | None:
        if not self._injected:
            return None
        item = self._injected[0]
        item.times -= 1
        if item.times <= 0:
            self._injected.pop(0)
        return item

    async def _upload(self, request: web.Request) -> web.Response:
        call = Call(request.path, {})
        self.calls.append(call)
        if not self._authorised(request):
            return self._error(call, GraphError(190))
        if self._outage is not None:
            return self._error(call, self._outage)
        form = await request.post()
        upload = form.get("file")
        if form.get("messaging_product") != "whatsapp" or not isinstance(upload, web.FileField):
            return self._error(
                call, GraphError(100, message="(#100) file and messaging_product are required")
            )
        data = upload.file.read()
        media = self.store_media(data, str(form.get("type") or upload.content_type))
        call.body = {"type": media.mime_type, "size": len(data)}
        call.status, call.response = 200, {"id": media.media_id}
        await self._notify()
        return web.json_response(call.response)

    async def _media_info(self, request: web.Request) -> web.Response:
        call = Call(request.path, {})
        self.calls.append(call)
        if not self._authorised(request):
            return self._error(call, GraphError(190))
        media = self.media.get(request.match_info["media_id"])
        if media is None:
            return self._error(call, GraphError(100, message="(#100) Unsupported get request."))
        call.status, call.response = (
            200,
            {
                "messaging_product": "whatsapp",
                "url": f"{self.base_url}/download/{media.media_id}?ext=1&hash={secrets.token_hex(4)}",
                "mime_type": media.mime_type,
                "sha256": hashlib.sha256(media.data).hexdigest(),
                "file_size": len(media.data),
                "id": media.media_id,
            },
        )
        return web.json_response(call.response)

    async def _download(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.Response(status=401, text="unauthorised")
        media = self.media.get(request.match_info["media_id"])
        if media is None:
            return web.Response(status=404)
        return web.Response(body=media.data, content_type=media.mime_type)
