"""A local WhatsApp Business Cloud API (Graph API) for tests: real HTTP on loopback, Meta's shapes and errors.

The channel is pointed at it with its ``api_base`` setting. What it does, as the real API does it:

- ``POST /{version}/{phone_number_id}/messages`` with a bearer token (a wrong one: 401, ``OAuthException``
  code 190): text, image/document/audio/video by ``link`` or uploaded ``id``, interactive, reaction,
  template (only approved templates in an approved language: 132001 otherwise) and "mark as read"
  (interactive reply buttons and lists are checked against the platform's limits, 131009 with the
  details of what is wrong: see :func:`interactive_problem`; a reaction must point at a message a
  customer sent)
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
  (``sent``, ``delivered``, ``read``; ``failed`` with its errors: 131026 for ``undeliverable_async``,
  131047 for ``window_closes_async``, the window the platform closed before relaydesk's clock did) are POSTed to the configured URL, signed with
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
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.emulators.server import LoopbackServer

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
    131009: (400, "(#131009) Parameter value is not valid", "Parameter value is not valid"),
    131051: (400, "(#131051) Unsupported message type", "Message type is not currently supported."),
    100: (400, "(#100) Invalid parameter", "Invalid parameter"),
    1: (500, "An unknown error occurred", ""),
    2: (503, "Service temporarily unavailable", ""),
    190: (401, "Invalid OAuth access token - Cannot parse access token", ""),
}


class GraphError(Exception):
    """An error answer of the Graph API."""

    def __init__(
        self, code: int, status: int | None = None, message: str | None = None, details: str | None = None
    ) -> None:
        default_status, default_message, default_details = ERRORS.get(code, (400, f"(#{code}) Error", ""))
        self.details = details if details is not None else default_details
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


def _length(value: Any, low: int, high: int) -> bool:
    return isinstance(value, str) and low <= len(value) <= high


def interactive_problem(interactive: Any) -> str:
    """What the Cloud API refuses in an ``interactive`` object (reply buttons or a list), as the details of
    its 131009 error; "" when it is valid. The limits: a body of 1-1024 characters with buttons (4096 with
    a list), 1-3 reply buttons with unique ids (up to 256 characters) and unique titles of 1-20
    characters; a list's button label of 1-20 characters, 1-10 sections (titled when more than one, up to
    24 characters), 1-10 rows in all with unique ids (up to 200 characters), titles of 1-24 and
    descriptions of up to 72 characters; a header and a footer of up to 60 characters."""
    if not isinstance(interactive, dict):
        return "Param interactive is required"
    kind = interactive.get("type")
    if kind not in ("button", "list"):
        return f"Interactive type {kind!r} is not supported here"
    body = interactive.get("body")
    body_max = 1024 if kind == "button" else 4096
    if not isinstance(body, dict) or not _length(body.get("text"), 1, body_max):
        return f"Body text length invalid. Min length: 1, Max length: {body_max}"
    footer = interactive.get("footer")
    if footer is not None and not (isinstance(footer, dict) and _length(footer.get("text"), 1, 60)):
        return "Footer text length invalid. Min length: 1, Max length: 60"
    header = interactive.get("header")
    if header is not None and not (isinstance(header, dict) and _length(header.get("text"), 1, 60)):
        return "Header text length invalid. Min length: 1, Max length: 60"
    action = interactive.get("action")
    if not isinstance(action, dict):
        return "Param interactive['action'] is required"
    if kind == "button":
        buttons = action.get("buttons")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            return "Invalid buttons count. Min allowed buttons: 1, Max allowed buttons: 3"
        ids, titles = [], []
        for button in buttons:
            reply = button.get("reply") if isinstance(button, dict) else None
            if not isinstance(button, dict) or button.get("type") != "reply" or not isinstance(reply, dict):
                return "Button type must be reply"
            if not _length(reply.get("id"), 1, 256):
                return "Button id length invalid. Min length: 1, Max length: 256"
            if not _length(reply.get("title"), 1, 20):
                return "Button title length invalid. Min length: 1, Max length: 20"
            ids.append(reply["id"])
            titles.append(reply["title"])
        if len(set(ids)) != len(ids):
            return "Button ids must be unique"
        if len(set(titles)) != len(titles):
            return "Button title must be unique"
        return ""
    if not _length(action.get("button"), 1, 20):
        return "Button text length invalid. Min length: 1, Max length: 20"
    sections = action.get("sections")
    if not isinstance(sections, list) or not 1 <= len(sections) <= 10:
        return "Invalid sections count. Min allowed sections: 1, Max allowed sections: 10"
    row_ids: list[str] = []
    for section in sections:
        if not isinstance(section, dict) or not isinstance(section.get("rows"), list):
            return "Param interactive['action']['sections'][0]['rows'] is required"
        title = section.get("title")
        if (len(sections) > 1 or title is not None) and not _length(title, 1, 24):
            return "Section title length invalid. Min length: 1, Max length: 24"
        for row in section["rows"]:
            if not isinstance(row, dict) or not _length(row.get("id"), 1, 200):
                return "Row id length invalid. Min length: 1, Max length: 200"
            if not _length(row.get("title"), 1, 24):
                return "Row title length invalid. Min length: 1, Max length: 24"
            if "description" in row and not _length(row["description"], 0, 72):
                return "Row description length invalid. Max length: 72"
            row_ids.append(row["id"])
    if not 1 <= len(row_ids) <= 10:
        return "Total row count exceed max allowed count: 10" if row_ids else "Rows are required"
    if len(set(row_ids)) != len(row_ids):
        return "Row ids must be unique"
    return ""


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


class WhatsAppEmulator(LoopbackServer):
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
        super().__init__()
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
        self.customer_message_ids: set[str] = set()  # what a reaction may point at
        self.templates: dict[str, dict[str, str]] = {}  # name -> language code -> body with {{1}}...
        self.pair_interval = 0.0  # refuse a second message to one customer sooner than this (131056)
        self.status_delay = 0.05
        self.read_statuses = False  # also send "read" after "delivered"
        self.undeliverable_async: set[str] = set()  # wa_ids whose messages fail later (status 131026)
        # wa_ids whose free-form messages are accepted, then fail in a status with 131047 (the platform's
        # window closed before relaydesk's clock said so), until the customer writes again
        self.window_closes_async: set[str] = set()
        self.duplicate_webhooks = False
        self.offset = 0.0  # seconds added to the clock (see advance)
        self._last_to: dict[str, float] = {}
        self._injected: list[Injected] = []
        self._outage: GraphError | None = None
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._webhook_lock = asyncio.Lock()

    # -- server -----------------------------------------------------------------------------------

    max_body = 100 * 1024**2

    def routes(self, app: web.Application) -> None:
        """The Graph messages and media endpoints (the channel's ``api_base`` is :attr:`base_url`: the
        Graph host, without the version)."""
        app.router.add_post("/{version}/{phone}/messages", self._messages)
        app.router.add_post("/{version}/{phone}/media", self._upload)
        app.router.add_get("/{version}/{media_id}", self._media_info)
        app.router.add_get("/download/{media_id}", self._download)

    async def stop(self) -> None:
        """Stop pending webhook posts and the server."""
        self._hang.set()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close()

    def now(self) -> float:
        """The emulator's clock (wall time plus :meth:`advance`)."""
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward (the 24-hour window closes without waiting a day)."""
        self.offset += seconds

    def calls_seen(self) -> list[Any]:
        """(endpoint, status, Graph error code) of every call."""
        return [
            (c.path.rsplit("/", 1)[-1], c.status, c.response.get("error", {}).get("code")) for c in self.calls
        ]

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
        self.customer_message_ids.add(message["id"])
        self.last_inbound[wa_id] = self.now()
        self.window_closes_async.discard(wa_id)
        body = self._envelope(
            {"contacts": [{"profile": {"name": name}, "wa_id": wa_id}], "messages": [message]}
        )
        await self.post_webhook("message", body)
        return message

    def choices_of(self, message_id: str) -> list[tuple[str, str]]:
        """The (id, title) of each button or list row of the interactive message ``message_id`` sent."""
        sent = next(m for m in self.sent if m["id"] == message_id)
        interactive = sent["interactive"]
        action = interactive["action"]
        if interactive["type"] == "button":
            return [(b["reply"]["id"], b["reply"]["title"]) for b in action["buttons"]]
        return [(r["id"], r["title"]) for section in action["sections"] for r in section["rows"]]

    async def customer_presses(self, wa_id: str, name: str, message_id: str, title: str) -> dict[str, Any]:
        """The customer taps the button (or list row) titled ``title`` of the interactive message
        ``message_id``: its reply comes to the webhook as Meta sends it (``button_reply`` / ``list_reply``)."""
        sent = next(m for m in self.sent if m["id"] == message_id and m["to"] == wa_id)
        kind = sent["interactive"]["type"]
        choice = next((i, t) for i, t in self.choices_of(message_id) if t == title)
        rows = [r for s in sent["interactive"]["action"].get("sections", []) for r in s["rows"]]
        reply: dict[str, Any] = {"id": choice[0], "title": choice[1]}
        for row in rows:
            if row["id"] == choice[0] and row.get("description"):
                reply["description"] = row["description"]
        content = (
            {"type": "button_reply", "button_reply": reply}
            if kind == "button"
            else {"type": "list_reply", "list_reply": reply}
        )
        return await self.customer_sends(wa_id, name, "interactive", content, context=message_id)

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

    def _later_statuses(self, message_id: str, wa_id: str, fails: int | None = None) -> None:
        async def send() -> None:
            await asyncio.sleep(self.status_delay)
            if fails is not None:
                error = GraphError(fails)
                title = {131026: "Message undeliverable", 131047: "Re-engagement message"}.get(
                    fails, error.message
                )
                errors = [
                    {
                        "code": fails,
                        "title": title,
                        "message": title,
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
            elif kind == "interactive":
                out.append(f"interactive:{m['interactive']['type']}:{m['interactive']['body']['text']}")
            elif kind == "reaction":
                out.append(f"reaction:{m['reaction']['emoji']}")
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
        elif kind == "interactive":
            problem = interactive_problem(body.get("interactive"))
            if problem:
                return self._error(call, GraphError(131009, message=None, details=problem))
        elif kind == "reaction":
            reaction = body.get("reaction")
            if not isinstance(reaction, dict) or not isinstance(reaction.get("emoji"), str):
                return self._error(call, GraphError(100, message="(#100) Invalid parameter: reaction"))
            if reaction.get("message_id") not in self.customer_message_ids:
                return self._error(call, GraphError(131009, details="Invalid message_id for reaction"))
        elif kind not in ("location", "contacts"):
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
        fails = 131026 if to in self.undeliverable_async else None
        if kind != "template" and to in self.window_closes_async:
            fails = 131047
        self._later_statuses(message_id, to, fails)
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
