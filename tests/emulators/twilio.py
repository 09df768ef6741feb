"""A local Twilio Programmable Messaging API for tests: real HTTP on loopback, Twilio's shapes and errors.

The SMS channel is pointed at it with its ``api_base`` setting. What it does, as Twilio does it:

- ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (form-encoded ``To``, ``From`` or
  ``MessagingServiceSid``, ``Body``, ``MediaUrl`` (repeatable), ``StatusCallback``) with HTTP basic auth
  (``AccountSid:AuthToken``; a wrong one: 401, code 20003); answers 201 with the message resource
  (``sid``, ``status: queued``, ``num_segments``, ``num_media``...). ``GET .../Messages/{sid}.json`` fetches it.
  Media URLs of an MMS are fetched by the emulator (as Twilio does); a URL it cannot fetch fails the
  message later (status ``failed``, 12300).
- Opt-out as Twilio's default Advanced Opt-Out does it: a customer's STOP, STOPALL, UNSUBSCRIBE,
  CANCEL, END or QUIT opts the number out (the message still reaches the webhook, with ``OptOutType``);
  START, YES, UNSTOP opt back in; sending to an opted-out number answers 400 with code 21610.
- Errors in Twilio's shape ``{"code", "message", "more_info", "status"}``: switches to inject 429 (20429),
  5xx and hangs, and an outage until the test ends it.
- The webhooks: a customer's SMS/MMS (``MessageSid``, ``From``, ``To``, ``Body``, ``NumMedia``,
  ``MediaUrl0``..., ``MediaContentType0``...) POSTed form-encoded to the configured URL and status
  callbacks (``MessageStatus``: sent, delivered, or undelivered/failed with ``ErrorCode``) to each
  message's ``StatusCallback``, after ``status_delay``; both signed with ``X-Twilio-Signature`` computed
  here (HMAC-SHA1 of the URL and the sorted parameters, base64), which the emulator's own test checks with
  twilio's ``RequestValidator``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import MultiDict

from tests.emulators.server import LoopbackServer

OPT_OUT = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit"})
OPT_IN = frozenset({"start", "yes", "unstop"})
GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXT = set("^{}\\[~]|€\f")


def segments(body: str) -> int:
    """How many SMS parts ``body`` takes (GSM-7 160/153, otherwise UCS-2 70/67 in UTF-16 units)."""
    if all(c in GSM7 or c in GSM7_EXT for c in body):
        units = sum(2 if c in GSM7_EXT else 1 for c in body)
        return 1 if units <= 160 else -(-units // 153)
    units = len(body.encode("utf-16-le")) // 2
    return 1 if units <= 70 else -(-units // 67)


def signature(auth_token: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    """``X-Twilio-Signature`` for a POST of ``params`` to ``url``, computed as Twilio documents it."""
    data = url + "".join(f"{k}{v}" for k, v in sorted(params, key=lambda kv: (kv[0], kv[1])))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


class TwilioError(Exception):
    """An error answer of the REST API."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, Any]:
        """The JSON Twilio answers."""
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


@dataclass
class Call:
    """One request the emulator received, with what it answered."""

    path: str
    params: MultiDict[str]
    status: int = 0
    response: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)


@dataclass
class WebhookDelivery:
    """One POST of a webhook (``message`` or ``status``) and how relaydesk answered it."""

    kind: str
    url: str
    params: list[tuple[str, str]]
    status: int
    body: str


class TwilioEmulator(LoopbackServer):
    """The Messaging API of one account, its numbers, customers and media."""

    def __init__(self, account_sid: str, auth_token: str, *, number: str = "+15005550006") -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.number = number
        self.webhook_url: str | None = None
        self.calls: list[Call] = []
        self.webhook_deliveries: list[WebhookDelivery] = []
        self.messages: dict[str, dict[str, Any]] = {}  # sid -> resource (outbound ones)
        self.sent: list[dict[str, Any]] = []  # accepted outbound messages in order
        self.fetched_media: dict[str, bytes] = {}  # MediaUrl -> bytes Twilio fetched
        self.media: dict[str, tuple[bytes, str]] = {}  # path -> (bytes, content type) of customers' MMS
        self.opted_out: set[str] = set()
        self.status_delay = 0.05
        self.duplicate_webhooks = False
        self.undelivered: set[str] = set()  # numbers whose messages end "undelivered" (30003)
        self._injected: list[tuple[TwilioError | None, int]] = []
        self._outage: TwilioError | None = None
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    def routes(self, app: web.Application) -> None:
        """The Messages resource and its media (the channel's ``api_base`` is :attr:`base_url`)."""
        root = "/2010-04-01/Accounts/{sid}"
        app.router.add_post(root + "/Messages.json", self._create)
        app.router.add_get(root + "/Messages/{msid}.json", self._fetch)
        app.router.add_get(root + "/Messages/{msid}/Media/{meid}", self._media)

    async def stop(self) -> None:
        """Stop pending callbacks and the server."""
        self._hang.set()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close()

    def calls_seen(self) -> list[Any]:
        """(status, Twilio error code) of every call."""
        return [(c.status, c.response.get("code")) for c in self.calls]

    # -- switches ---------------------------------------------------------------------------------

    def fail(self, status: int, code: int | None = None, message: str = "", *, times: int = 1) -> None:
        """Answer the next ``times`` message creations with an error."""
        defaults = {
            429: (20429, "Too Many Requests"),
            500: (20500, "Internal Server Error"),
            503: (20503, "Service Unavailable"),
        }
        default_code, default_message = defaults.get(status, (status * 100, "Error"))
        self._injected.append((TwilioError(status, code or default_code, message or default_message), times))

    def hang(self, *, times: int = 1) -> None:
        """Never answer the next ``times`` message creations."""
        self._injected.append((None, times))

    def outage(self, status: int = 503) -> None:
        """Answer every message creation with a 5xx until :meth:`restore`."""
        self._outage = TwilioError(status, 20500 if status == 500 else 20503, "Service Unavailable")

    def restore(self) -> None:
        """End the outage."""
        self._outage = None

    # -- the customer's side ----------------------------------------------------------------------

    async def customer_sends(
        self, number: str, body: str, media: Sequence[tuple[bytes, str]] = ()
    ) -> dict[str, str]:
        """The customer ``number`` texts ``body`` (with MMS ``media``: bytes and content type); opt-out
        keywords take effect first, as Twilio's Advanced Opt-Out does. Returns the webhook's parameters."""
        sid = ("MM" if media else "SM") + secrets.token_hex(16)
        word = body.strip().lower()
        params: list[tuple[str, str]] = [
            ("ToCountry", "US"),
            ("SmsMessageSid", sid),
            ("NumMedia", str(len(media))),
            ("SmsSid", sid),
            ("SmsStatus", "received"),
            ("Body", body),
            ("To", self.number),
            ("NumSegments", str(segments(body) if body else 1)),
            ("MessageSid", sid),
            ("AccountSid", self.account_sid),
            ("From", number),
            ("ApiVersion", "2010-04-01"),
        ]
        if word in OPT_OUT:
            self.opted_out.add(number)
            params.append(("OptOutType", "STOP"))
        elif word in OPT_IN:
            self.opted_out.discard(number)
            params.append(("OptOutType", "START"))
        elif word in ("help", "info"):
            params.append(("OptOutType", "HELP"))
        for i, (data, content_type) in enumerate(media):
            path = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}/Media/ME{secrets.token_hex(16)}"
            self.media[path] = (data, content_type)
            params += [(f"MediaUrl{i}", self.base_url + path), (f"MediaContentType{i}", content_type)]
        assert self.webhook_url, "set webhook_url first"
        for _ in range(1 + int(self.duplicate_webhooks)):
            await self.post_signed("message", self.webhook_url, params)
        return dict(params)

    async def post_signed(
        self, kind: str, url: str, params: list[tuple[str, str]], *, tries: int = 10
    ) -> int:
        """POST ``params`` form-encoded to ``url`` with Twilio's signature, retried until a 2xx."""
        assert self._http is not None
        status = 0
        for _ in range(tries):
            headers = {"X-Twilio-Signature": signature(self.auth_token, url, params)}
            text = ""
            try:
                async with self._http.post(url, data=params, headers=headers) as resp:
                    status, text = resp.status, await resp.text()
            except aiohttp.ClientError:
                status = 0
            self.webhook_deliveries.append(WebhookDelivery(kind, url, params, status, text))
            await self._notify()
            if 200 <= status < 300:
                break
            await asyncio.sleep(0.1)
        return status

    # -- what the business sent -------------------------------------------------------------------

    def messages_to(self, number: str) -> list[dict[str, Any]]:
        """The messages accepted for ``number``, in order."""
        return [m for m in self.sent if m["to"] == number]

    def texts_to(self, number: str) -> list[str]:
        """The bodies accepted for ``number``, in order."""
        return [m["body"] for m in self.messages_to(number)]

    # -- the API ------------------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected.encode())

    def _error(self, call: Call, error: TwilioError) -> web.Response:
        call.status, call.response = error.status, error.body()
        return web.json_response(call.response, status=error.status)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        params: MultiDict[str] = MultiDict((k, str(v)) for k, v in (await request.post()).items())
        call = Call(request.path, params)
        self.calls.append(call)
        try:
            if not self._authorised(request) or request.match_info["sid"] != self.account_sid:
                return self._error(call, TwilioError(401, 20003, "Authenticate"))
            if self._injected:
                error, times = self._injected[0]
                self._injected[0] = (error, times - 1)
                if times - 1 <= 0:
                    self._injected.pop(0)
                if error is None:
                    await self._hang.wait()
                    raise web.HTTPServiceUnavailable()
                return self._error(call, error)
            if self._outage is not None:
                return self._error(call, self._outage)
            return self._accept(call, params, request)
        finally:
            await self._notify()

    def _accept(self, call: Call, params: MultiDict[str], request: web.Request) -> web.Response:
        to, body = params.get("To", ""), params.get("Body", "")
        media_urls = params.getall("MediaUrl", [])
        if not to.startswith("+") or not to[1:].isdigit():
            return self._error(
                call, TwilioError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
            )
        if not params.get("From") and not params.get("MessagingServiceSid"):
            return self._error(
                call, TwilioError(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required.")
            )
        if not body and not media_urls:
            return self._error(call, TwilioError(400, 21602, "Message body is required."))
        if len(body) > 1600:
            return self._error(
                call,
                TwilioError(400, 21617, "The concatenated message body exceeds the 1600 character limit."),
            )
        if to in self.opted_out:
            return self._error(call, TwilioError(400, 21610, "Attempt to send to unsubscribed recipient"))
        sid = ("MM" if media_urls else "SM") + secrets.token_hex(16)
        resource: dict[str, Any] = {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": params.get("From") or self.number,
            "messaging_service_sid": params.get("MessagingServiceSid"),
            "num_media": str(len(media_urls)),
            "num_segments": str(segments(body) if body else 1),
            "price": None,
            "sid": sid,
            "status": "queued",
            "to": to,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }
        self.messages[sid] = resource
        self.sent.append({**resource, "media_urls": media_urls})
        call.status, call.response = 201, resource
        task = asyncio.create_task(self._deliver(sid, media_urls, params.get("StatusCallback")))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response(resource, status=201)

    async def _deliver(self, sid: str, media_urls: list[str], callback: str | None) -> None:
        """Fetch the media (as Twilio does), then report the statuses to the message's callback."""
        assert self._http is not None
        resource = self.messages[sid]
        error: tuple[str, str] | None = None
        for url in media_urls:
            try:
                async with self._http.get(url) as resp:
                    if resp.status != 200:
                        raise aiohttp.ClientError(f"HTTP {resp.status}")
                    self.fetched_media[url] = await resp.read()
            except aiohttp.ClientError:
                error = ("failed", "12300")
        if error is None and resource["to"] in self.undelivered:
            error = ("undelivered", "30003")
        await asyncio.sleep(self.status_delay)
        steps = ["sent", "delivered"] if error is None else [error[0]]
        for status in steps:
            resource["status"] = status
            if error is not None:
                resource["error_code"] = int(error[1])
            await self._notify()
            if callback:
                params = [
                    ("AccountSid", self.account_sid),
                    ("ApiVersion", "2010-04-01"),
                    ("From", resource["from"]),
                    ("MessageSid", sid),
                    ("MessageStatus", status),
                    ("SmsSid", sid),
                    ("SmsStatus", status),
                    ("To", resource["to"]),
                ]
                if error is not None:
                    params.append(("ErrorCode", error[1]))
                await self.post_signed("status", callback, params)

    async def _fetch(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response(TwilioError(401, 20003, "Authenticate").body(), status=401)
        resource = self.messages.get(request.match_info["msid"])
        if resource is None:
            return web.json_response(
                TwilioError(404, 20404, "The requested resource was not found").body(), status=404
            )
        return web.json_response(resource)

    async def _media(self, request: web.Request) -> web.Response:
        found = self.media.get(request.path)
        if found is None:
            return web.Response(status=404)
        return web.Response(body=found[0], content_type=found[1])
