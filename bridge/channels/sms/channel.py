"""The SMS channel plugin on Twilio Programmable Messaging: customers text the business number, agents answer.

Twilio calls ``<public URL>/sms/webhook`` for each SMS/MMS and ``<public URL>/sms/status`` for each status
of a sent message, form-encoded and signed with ``X-Twilio-Signature``; both are checked with the twilio
library's ``RequestValidator`` over the URL Twilio called, rebuilt from relaydesk's public URL (403 and
nothing stored otherwise). Outbound messages come from the outbox through :meth:`SmsChannel.send`, paced
per sending number across every worker (``services.rate_limits.pace``: in Redis with several); a reply that costs many segments is reported to the room. Opt-out follows the
carriers' rules: STOP (and its synonyms) records the customer's opt-out of every message, START/UNSTOP
restores it, HELP gets the configured help text, and Twilio's refusal for an opted-out number (21610)
records the same opt-out.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from twilio.request_validator import RequestValidator

from bot_core.api import (
    CHUNK_BYTES,
    HANDLED,
    Attachment,
    ChannelCapabilities,
    Context,
    CustomerMessage,
    Delivery,
    DeliveryError,
    Handled,
    NotAccepting,
    Plugin,
    PluginKind,
    RetryAfter,
    SentRef,
    TemporaryFailure,
    Undeliverable,
    clean_display_name,
    download_headers,
    on_customer_message,
    route,
    stream,
)
from bridge.channels.delivery_status import delivery_status
from bridge.channels.sms.segments import count

WEBHOOK_PATH = "/sms/webhook"
STATUS_PATH = "/sms/status"
MEDIA_PATH = "/sms/media"
MAX_BODY = 1600  # Twilio's limit for one message's body
MAX_MEDIA = 10
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
OPT_OUT = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit"})
OPT_IN = frozenset({"start", "unstop", "yes"})
HELP = frozenset({"help", "info"})
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
STATUS_MAP = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "undelivered": "failed",
    "failed": "failed",
}
ERROR_TEXT = {
    "21610": "the customer texted STOP",
    "30003": "unreachable destination handset",
    "30004": "message blocked",
    "30005": "unknown destination handset",
    "30006": "landline or unreachable carrier",
    "30007": "carrier violation (filtered)",
    "12300": "invalid content type of a media file",
}


def keyword(text: str) -> str:
    """The message as an opt-out/opt-in/help keyword candidate: one word, lower case."""
    return text.strip().strip(".!").lower()


class SmsChannel(Plugin["SmsChannel.Config"]):
    """Customers on SMS/MMS, through one Twilio number or messaging service."""

    name = "sms"
    kind = PluginKind.CHANNEL

    class Config(BaseModel):
        """Settings of the SMS channel (``auth_token`` comes from the environment)."""

        model_config = ConfigDict(extra="forbid")
        account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
        auth_token: SecretStr
        from_number: str | None = None  # E.164, e.g. "+15005550006"
        messaging_service_sid: str | None = Field(None, pattern=r"^MG[0-9a-fA-F]{32}$")
        api_base: str = "https://api.twilio.com"
        public_url: str | None = None  # the base URL Twilio calls, if not server.public_url
        request_timeout: float = Field(30.0, gt=0, le=600)
        messages_per_second: float = Field(1.0, gt=0, le=1000)  # per sending number (US long code: 1)
        warn_segments: int = Field(3, ge=2, le=100)  # tell the room when a reply costs this many or more
        help_text: str = Field(
            "This is our support line. Reply with your question and a person will answer. "
            "Text STOP to stop messages, START to get them again.",
            min_length=1,
            max_length=MAX_BODY,
        )

        @field_validator("api_base", "public_url")
        @classmethod
        def _http_url(cls, value: str | None) -> str | None:
            if value is not None and not value.startswith(("http://", "https://")):
                raise ValueError("must be an http:// or https:// URL")
            return value.rstrip("/") if value else value

        @model_validator(mode="after")
        def _sender(self) -> SmsChannel.Config:
            if not self.from_number and not self.messaging_service_sid:
                raise ValueError("set from_number (E.164) or messaging_service_sid")
            if self.from_number and not E164.match(self.from_number):
                raise ValueError("from_number must be an E.164 number such as +15005550006")
            return self

    capabilities = ChannelCapabilities(
        max_text_length=MAX_BODY * 5,
        media_kinds=frozenset({"image", "file", "audio", "video"}),
        edits=False,
        deletes=False,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = self.config
        self._validator = RequestValidator(self.settings.auth_token.get_secret_value())
        self._state = self.services.store("sms")
        self._http: aiohttp.ClientSession | None = None
        self._signer: Any = None
        self._pace_lock = asyncio.Lock()
        self._recent: dict[str, None] = {}
        token = f"{self.settings.account_sid}:{self.settings.auth_token.get_secret_value()}"
        self._auth = {"Authorization": "Basic " + base64.b64encode(token.encode()).decode()}

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def public_base(self) -> str:
        """The base URL Twilio calls (the webhooks' signatures are computed over it)."""
        return (self.settings.public_url or self.services.public_url).rstrip("/")

    async def start(self) -> None:
        """Open the HTTP session and the media-link signer (its key survives restarts in plugin state)."""
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.request_timeout))
        key = await self._state.get("media_link_key")
        if key is None:
            key = secrets.token_hex(32)
            await self._state.set("media_link_key", key)
        self._signer = self.services.downloads.signer(str(key).encode())
        self.log.info(
            "sms channel ready",
            extra={
                "webhook": self.public_base + WEBHOOK_PATH,
                "status_callback": self.public_base + STATUS_PATH,
            },
        )

    async def stop(self) -> None:
        """Close the HTTP session."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- inbound -------------------------------------------------------------------------------

    async def _signed_form(self, request: web.Request) -> dict[str, str] | None:
        """The form if ``X-Twilio-Signature`` is right for the public URL Twilio called, else None."""
        form = await request.post()
        params = {k: str(v) for k, v in form.items()}
        url = self.public_base + request.path_qs
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature or not self._validator.validate(url, params, signature):
            self.log.warning(
                "twilio webhook call with a missing or wrong signature refused", extra={"path": request.path}
            )
            return None
        return params

    def _media_link(self, url: str, number: str) -> str:
        base = self.services.http_base_url.replace("//0.0.0.0:", "//127.0.0.1:").rstrip("/")
        return f"{base}{MEDIA_PATH}?u={quote(url, safe='')}&{self._signer.query(url, number)}"

    @route("POST", WEBHOOK_PATH)
    async def webhook(self, request: web.Request) -> web.Response:
        """An SMS/MMS from a customer: 403 without a valid signature, empty TwiML once it is stored."""
        params = await self._signed_form(request)
        if params is None:
            return web.Response(status=403, text="invalid X-Twilio-Signature")
        sid, number = params.get("MessageSid", ""), params.get("From", "")
        if not sid or not number:
            return web.Response(status=400, text="MessageSid and From are required")
        if sid not in self._recent:
            try:
                await self.services.inbound(self._message(params))
            except NotAccepting:
                return web.Response(status=503, text="relaydesk is shutting down; retry later")
            self._remember(sid)
        return web.Response(text=EMPTY_TWIML, content_type="text/xml")

    def _message(self, params: dict[str, str]) -> CustomerMessage:
        number = params["From"]
        attachments = []
        try:
            media = min(int(params.get("NumMedia", "0")), MAX_MEDIA)
        except ValueError:
            media = 0
        for i in range(media):
            url = params.get(f"MediaUrl{i}", "")
            if not url:
                continue
            mime = params.get(f"MediaContentType{i}", "") or "application/octet-stream"
            kind = next((k for k in ("image", "audio", "video") if mime.startswith(k + "/")), "file")
            attachments.append(
                Attachment(kind=kind, url=self._media_link(url, number), mime_type=mime, platform_file_id=url)  # type: ignore[arg-type]
            )
        attributes = {"phone": number} if E164.match(number) else {}
        return CustomerMessage(
            channel=self.instance_name,
            external_user_id=number,
            external_message_id=params["MessageSid"],
            text=params.get("Body", ""),
            attachments=tuple(attachments),
            display_name=clean_display_name(number) or None,
            attributes=attributes,
        )

    @route("POST", STATUS_PATH)
    async def status(self, request: web.Request) -> web.Response:
        """A status callback of a sent message: 403 without a valid signature, 200 once handed on."""
        params = await self._signed_form(request)
        if params is None:
            return web.Response(status=403, text="invalid X-Twilio-Signature")
        sid, state = params.get("MessageSid", ""), STATUS_MAP.get(params.get("MessageStatus", ""))
        if sid and state and f"{sid}:{state}" not in self._recent:
            code = params.get("ErrorCode", "")
            error = f"{code} {ERROR_TEXT.get(code, 'see twilio.com/docs/errors/' + code)}" if code else ""
            event = delivery_status(self.instance_name, params.get("To", ""), sid, state, error=error)
            if event is not None:
                try:
                    await self.services.inbound(event)
                except NotAccepting:
                    return web.Response(status=503, text="relaydesk is shutting down; retry later")
            self._remember(f"{sid}:{state}")
        return web.Response(status=204)

    def _remember(self, key: str) -> None:
        self._recent[key] = None
        while len(self._recent) > 4096:
            del self._recent[next(iter(self._recent))]

    @route("GET", MEDIA_PATH)
    async def media(self, request: web.Request) -> web.StreamResponse:
        """A customer's MMS file for the workspace, fetched from Twilio with the account's credentials."""
        if self._http is None or self._signer is None:
            raise web.HTTPServiceUnavailable(text="the sms channel is not started")
        url = request.query.get("u", "")
        scope = self._signer.check(url, request.query)
        await self.services.downloads.admit(request, "sms-media", scope)
        try:
            async with self._http.get(url, headers=self._auth) as resp:
                if resp.status != 200:
                    raise web.HTTPBadGateway(text=f"Twilio answered HTTP {resp.status} for the media")
                headers = download_headers(resp.content_type, None)
                return await stream(
                    request, resp.content.iter_chunked(CHUNK_BYTES), headers, resp.content_length
                )
        except web.HTTPException:
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise web.HTTPBadGateway(text=f"Twilio media not available: {type(exc).__name__}") from None

    # -- keywords ------------------------------------------------------------------------------

    @on_customer_message()
    async def keywords(self, ctx: Context, msg: CustomerMessage) -> Handled | None:
        """STOP and its synonyms opt the customer out of every message, START/UNSTOP back in, HELP answers."""
        if msg.channel != self.instance_name or msg.attachments:
            return None
        word = keyword(msg.text)
        if word in OPT_OUT:
            source = f"texted {msg.text.strip()} on {self.instance_name}; the carrier blocks every message"
            await ctx.set_consent("service", False, source)
            await ctx.set_consent("marketing", False, source)
            return HANDLED
        if word in OPT_IN:
            recorded = await ctx.consent("service")
            if word == "yes" and (recorded is None or recorded.granted):
                return None  # an ordinary "yes" in a conversation
            await ctx.set_consent("service", True, f"texted {msg.text.strip()} on {self.instance_name}")
            return HANDLED
        if word in HELP:
            await ctx.reply(self.settings.help_text)
            return HANDLED
        await self._blocked_until_start(ctx)
        return None

    async def _blocked_until_start(self, ctx: Context) -> None:
        """The customer texted STOP before and now writes something else: the carrier still blocks every
        message to them until they text START, whatever they write (the core lets replies go to a customer
        who wrote after opting out; Twilio refuses them with 21610). Tell the room once per opt-out,
        before an agent types a reply that cannot arrive."""
        recorded = await ctx.consent("service")
        if recorded is None or recorded.granted or not _carrier_blocked(recorded.source):
            return
        if not await ctx.state.add(f"{STOP_TOLD}:{recorded.at.isoformat()}", True):
            return  # told already (by this worker or another)
        await ctx.notice(
            "⚠ This customer texted STOP earlier: the carrier blocks every SMS to them until they text "
            "START, so replies here will not reach them. Ask them to text START, or reach them on another "
            "channel."
        )

    # -- outbound ------------------------------------------------------------------------------

    async def send(self, delivery: Delivery) -> SentRef:
        """Deliver one outbox row (a body cut at Twilio's 1600 characters, the files as MMS media)."""
        if self._http is None:
            raise TemporaryFailure("the sms channel is not started")
        text = delivery.text
        bodies = [text[i : i + MAX_BODY] for i in range(0, len(text), MAX_BODY)] or [""]
        media = [self._public(a.url) for a in delivery.attachments if a.url][:MAX_MEDIA]
        done_key = f"parts:{delivery.idempotency_key or delivery.outbox_id}"
        done: list[str] = list(await self._state.get(done_key, []))
        for index, body in enumerate(bodies):
            if index < len(done):
                continue  # sent before a failure of a later part
            done.append(await self._create(delivery.external_user_id, body, media if index == 0 else []))
            if len(bodies) > 1:
                await self._state.set(done_key, done)
        if len(bodies) > 1:
            await self._state.delete(done_key)
        cost = count(text)
        note = ""
        if cost.parts >= self.settings.warn_segments:
            why = f", because of '{cost.first_wide}'" if cost.first_wide else ""
            note = (
                f"This SMS reply cost {cost.parts} segments ({cost.encoding}{why}; one segment holds "
                f"{'160 GSM-7' if cost.encoding == 'GSM-7' else '70 UCS-2'} characters)."
            )
        return SentRef(done[0], note=note)

    def _public(self, url: str) -> str:
        """An agent's file link as Twilio can fetch it: relaydesk's own links through the public URL."""
        local = self.services.http_base_url.rstrip("/")
        return self.public_base + url[len(local) :] if local and url.startswith(local) else url

    async def _create(self, to: str, body: str, media: list[str]) -> str:
        """POST one message to Twilio, no sooner than the number's pace allows; its SID."""
        assert self._http is not None
        params: list[tuple[str, str]] = [("To", to), ("StatusCallback", self.public_base + STATUS_PATH)]
        if self.settings.messaging_service_sid:
            params.append(("MessagingServiceSid", self.settings.messaging_service_sid))
        else:
            params.append(("From", str(self.settings.from_number)))
        if body:
            params.append(("Body", body))
        params += [("MediaUrl", url) for url in media]
        url = f"{self.settings.api_base}/2010-04-01/Accounts/{self.settings.account_sid}/Messages.json"
        async with self._pace_lock:  # in this process one at a time; the slot is shared by every worker
            sender = self.settings.messaging_service_sid or str(self.settings.from_number)
            wait = await self.services.rate_limits.pace(
                "sms:number", sender, 1.0 / self.settings.messages_per_second
            )
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                async with self._http.post(url, data=params, headers=self._auth) as resp:
                    try:
                        data = await resp.json(content_type=None)
                    except ValueError:
                        data = None
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise TemporaryFailure(f"Twilio unreachable: {type(exc).__name__}: {exc}"[:300]) from None
        if status in (200, 201) and isinstance(data, dict) and data.get("sid"):
            return str(data["sid"])
        raise _error(status, data if isinstance(data, dict) else {})


STOP_TOLD = "stop-told"
"""Conversation state, with an opt-out's time after it: the room was told that opt-out blocks every SMS."""


def _carrier_blocked(source: str) -> bool:
    """Whether an opt-out was the carrier's (the customer texted STOP, or Twilio refused with 21610), which
    only START lifts; an agent's or another channel's opt-out is not."""
    return "the carrier blocks every message" in source or "Twilio 21610" in source


def _error(status: int, data: dict[str, Any]) -> DeliveryError:
    """The outbox error for a refused message creation."""
    code = data.get("code")
    reason = f"Twilio {code or status}: {data.get('message') or f'HTTP {status}'}"[:300]
    if code == 21610:
        return Undeliverable(f"{reason} (the customer texted STOP; they must text START)", opted_out=True)
    if status == 429 or code == 20429:
        return RetryAfter(1.0, reason)
    if status >= 500 or status in (0, 401, 403):
        return TemporaryFailure(reason)
    return Undeliverable(reason)
