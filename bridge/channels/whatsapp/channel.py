"""The WhatsApp channel plugin (Business Cloud API): customers write to the business number, agents answer.

Meta calls ``<public URL>/whatsapp/webhook``: a GET to verify it (``hub.verify_token``), then a POST per
notification, signed with ``X-Hub-Signature-256`` (checked against the app secret before anything is read;
401 and nothing stored otherwise). Messages are acknowledged once they are on the bus; statuses become
the core's delivery-status events. Outbound messages come from the outbox through :meth:`WhatsAppChannel.send`,
paced per customer (Meta's pair rate) and kept within the 24-hour customer-service window: outside it the
configured approved template is sent to reopen the conversation and the reply is held
(:class:`~bot_core.api.AwaitingCustomer`) until the customer answers. A template delivery
(``Delivery.template``: outreach, a CSAT survey) goes as a Graph template message outside the window (or on
the platform's window error) and as its text inside it. Secrets come from the environment.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import mimetypes
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from bot_core.api import (
    CHUNK_BYTES,
    Attachment,
    AwaitingCustomer,
    ChannelCapabilities,
    Delivery,
    NotAccepting,
    Plugin,
    PluginKind,
    SentRef,
    TemplateRef,
    TemporaryFailure,
    Undeliverable,
    clean_file_name,
    download_headers,
    route,
    stream,
)
from bridge.channels.delivery_status import delivery_status
from bridge.channels.whatsapp.graph import Graph, WindowClosed, call
from bridge.channels.whatsapp.inbound import read_notification

WEBHOOK_PATH = "/whatsapp/webhook"
MEDIA_PREFIX = "/whatsapp/media"
WINDOW_SECONDS = 24 * 3600
MAX_TEXT = 4096
MAX_BODY_BYTES = 3 * 1024 * 1024
MAX_UPLOAD_BYTES = 100 * 1024 * 1024
OUT_KINDS = {"image": "image", "file": "document", "audio": "audio", "video": "video", "sticker": "sticker"}
RECENT = 4096


class ReopenTemplate(BaseModel):
    """The approved template sent when a reply is due outside the 24-hour window."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    language: str = "en_US"  # the template language used when no prefix below matches
    languages: dict[str, str] = Field(default_factory=dict)  # calling-code prefix ("49") -> language ("de")
    variables: list[str] = Field(default_factory=list)  # body parameters; {customer_name} and {agent_name}

    def language_for(self, wa_id: str) -> str:
        """The template language for a customer's number: the longest matching calling-code prefix."""
        for prefix in sorted(self.languages, key=len, reverse=True):
            if wa_id.startswith(prefix):
                return self.languages[prefix]
        return self.language


class WhatsAppChannel(Plugin["WhatsAppChannel.Config"]):
    """Customers on WhatsApp, through one business phone number of the Cloud API."""

    name = "whatsapp"
    kind = PluginKind.CHANNEL

    class Config(BaseModel):
        """Settings of the WhatsApp channel (the three secrets come from the environment)."""

        model_config = ConfigDict(extra="forbid")
        access_token: SecretStr  # a system user's permanent token with whatsapp_business_messaging
        app_secret: SecretStr  # the Meta app's secret: the webhook's signatures are checked with it
        verify_token: SecretStr  # what you typed as "Verify token" in the app's webhook settings
        phone_number_id: str = Field(pattern=r"^\d{5,20}$")
        api_base: str = "https://graph.facebook.com"
        api_version: str = Field("v21.0", pattern=r"^v\d+\.\d+$")
        request_timeout: float = Field(30.0, gt=0, le=600)
        pair_interval: float = Field(6.0, ge=0, le=60)  # seconds between two messages to one customer
        reopen_template: ReopenTemplate | None = None
        mark_as_read: bool = True  # show the customer's messages as read once relaydesk stored them
        upload_media: bool = True  # agents' files are uploaded to WhatsApp (False: sent by public link)

        @field_validator("api_base")
        @classmethod
        def _http_url(cls, value: str) -> str:
            if not value.startswith(("http://", "https://")):
                raise ValueError("must be an http:// or https:// URL")
            return value.rstrip("/")

    capabilities = ChannelCapabilities(
        max_text_length=MAX_TEXT,
        media_kinds=frozenset(OUT_KINDS),
        edits=False,
        deletes=False,
        waits_for_customer=True,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = self.config
        self._state = self.services.store("whatsapp")
        self._http: aiohttp.ClientSession | None = None
        self._graph: Graph | None = None
        self._signer: Any = None
        self._next_send: dict[str, float] = {}  # wa_id -> monotonic time the next message may go
        self._locks: dict[str, asyncio.Lock] = {}
        self._recent: dict[str, None] = {}  # message and status ids already handed to the core
        self._tasks: set[asyncio.Task[None]] = set()
        self.clock: Callable[[], float] = time.time  # the 24-hour window's clock (tests set it)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the HTTP session and the media-link signer (its key survives restarts in plugin state)."""
        config = self.settings
        self._http = aiohttp.ClientSession()
        self._graph = Graph(
            self._http,
            config.api_base,
            config.api_version,
            config.phone_number_id,
            config.access_token.get_secret_value(),
            config.request_timeout,
        )
        key = await self._state.get("media_link_key")
        if key is None:
            key = secrets.token_hex(32)
            await self._state.set("media_link_key", key)
        self._signer = self.services.downloads.signer(str(key).encode())
        self.log.info(
            "whatsapp channel ready",
            extra={
                "phone_number_id": config.phone_number_id,
                "webhook": self.services.public_url + WEBHOOK_PATH,
            },
        )

    async def stop(self) -> None:
        """Finish read marks in flight and close the HTTP session."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- inbound -------------------------------------------------------------------------------

    def _media_link(self, media_id: str, wa_id: str) -> str:
        base = self.services.http_base_url.replace("//0.0.0.0:", "//127.0.0.1:").rstrip("/")
        return f"{base}{MEDIA_PREFIX}/{quote(media_id, safe='')}?{self._signer.query(media_id, wa_id)}"

    @route("GET", WEBHOOK_PATH)
    async def verify(self, request: web.Request) -> web.Response:
        """Meta's verification of the webhook: echo ``hub.challenge`` when the verify token matches."""
        given = request.query.get("hub.verify_token", "").encode("utf-8", "surrogateescape")
        expected = self.settings.verify_token.get_secret_value().encode()
        if request.query.get("hub.mode") != "subscribe" or not hmac.compare_digest(given, expected):
            self.log.warning("whatsapp webhook verification with a wrong verify token refused")
            return web.Response(status=403, text="verification failed")
        return web.Response(text=request.query.get("hub.challenge", ""))

    def _signature_ok(self, request: web.Request, body: bytes) -> bool:
        given = request.headers.get("X-Hub-Signature-256", "").encode("utf-8", "surrogateescape")
        digest = hmac.new(self.settings.app_secret.get_secret_value().encode(), body, hashlib.sha256)
        return hmac.compare_digest(given, b"sha256=" + digest.hexdigest().encode())

    @route("POST", WEBHOOK_PATH)
    async def webhook(self, request: web.Request) -> web.Response:
        """A notification: 401 without a valid signature, 200 once everything in it is stored."""
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _error(413, "notification too large")
        body = await request.read()
        if not self._signature_ok(request, body):
            self.log.warning("whatsapp webhook call with a missing or wrong signature refused")
            return _error(401, "invalid X-Hub-Signature-256")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return _error(400, "the body is not JSON")
        if not isinstance(data, dict) or data.get("object") != "whatsapp_business_account":
            return _error(400, "not a WhatsApp Business Account notification")
        note = read_notification(data, self.settings.phone_number_id, self.instance_name, self._media_link)
        try:
            for message in note.messages:
                if message.external_message_id in self._recent:
                    continue  # a redelivery of a notification already stored
                wa_id = message.external_user_id
                # the window is the customer's: known before the core sees the message, so a reply held
                # for them goes out as soon as the relay releases it
                last = float(await self._state.get(f"last:{wa_id}", 0.0))
                await self._state.set(f"last:{wa_id}", max(last, message.timestamp.timestamp()))
                if message.display_name:
                    await self._state.set(f"name:{wa_id}", message.display_name)
                await self.services.inbound(message)
                self._remember(message.external_message_id)
                if self.settings.mark_as_read:
                    self._background(self._mark_read(message.external_message_id))
            for status in note.statuses:
                seen = f"{status.message_id}:{status.status}"
                if seen in self._recent:
                    continue
                event = delivery_status(
                    self.instance_name,
                    status.recipient,
                    status.message_id,
                    status.status,
                    error=status.error,
                    timestamp=status.timestamp,
                )
                if event is not None:
                    await self.services.inbound(event)
                else:
                    self.log.debug("whatsapp status not handed on (no DeliveryStatus in this core)")
                self._remember(seen)
        except NotAccepting:
            return _error(503, "relaydesk is shutting down; retry later")
        return web.json_response({"ok": True})

    def _remember(self, key: str) -> None:
        self._recent[key] = None
        while len(self._recent) > RECENT:
            del self._recent[next(iter(self._recent))]

    def _background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _mark_read(self, message_id: str) -> None:
        assert self._graph is not None
        try:
            await self._graph.mark_read(message_id)
        except Exception as exc:  # best effort: blue ticks are a courtesy
            self.log.info("whatsapp mark as read failed", extra={"error": str(exc)[:200]})

    @route("GET", MEDIA_PREFIX + "/{media_id}")
    async def media(self, request: web.Request) -> web.StreamResponse:
        """A customer's file for the workspace: only with this file's signature, within the download rate."""
        media_id = request.match_info["media_id"]
        if self._graph is None or self._signer is None:
            raise web.HTTPServiceUnavailable(text="the whatsapp channel is not started")
        scope = self._signer.check(media_id, request.query)
        await self.services.downloads.admit(request, "whatsapp-media", scope)
        try:
            url, mime_type = await self._graph.media_url(media_id)
            async with self._graph.download(url) as resp:
                if resp.status != 200:
                    raise web.HTTPBadGateway(text=f"WhatsApp answered HTTP {resp.status} for the media")
                extension = mimetypes.guess_extension(mime_type.split(";")[0]) or ""
                headers = download_headers(mime_type, clean_file_name(f"whatsapp-{media_id}{extension}"))
                return await stream(
                    request, resp.content.iter_chunked(CHUNK_BYTES), headers, resp.content_length
                )
        except web.HTTPException:
            raise
        except Exception as exc:
            raise web.HTTPBadGateway(text=f"WhatsApp media not available: {type(exc).__name__}") from None

    # -- outbound ------------------------------------------------------------------------------

    async def window_open(self, wa_id: str) -> bool:
        """Whether the customer wrote within the last 24 hours (free-form messages allowed)."""
        last = float(await self._state.get(f"last:{wa_id}", 0.0))
        return self.clock() - last < WINDOW_SECONDS

    async def send(self, delivery: Delivery) -> SentRef:
        """Deliver one outbox row: a template (``delivery.template``), text, files; paced per customer."""
        if self._graph is None or self._http is None:
            raise TemporaryFailure("the whatsapp channel is not started")
        wa_id = delivery.external_user_id
        template = delivery.template
        window_open = await self.window_open(wa_id)
        if template is not None and (not window_open or not (delivery.text or delivery.attachments)):
            return SentRef(await self._post(wa_id, self._template_message(wa_id, template)))
        # a template delivery inside the window goes as its text (its rendering): free-form is allowed
        if not window_open:
            await self._reopen(
                wa_id,
                delivery,
                "outside WhatsApp's 24-hour window (the customer last wrote "
                f"{self._since(await self._state.get(f'last:{wa_id}', 0.0))})",
            )
        payloads = self._payloads(delivery)
        done_key = f"parts:{delivery.idempotency_key or delivery.outbox_id}"
        done: list[str] = list(await self._state.get(done_key, []))
        for index, make in enumerate(payloads):
            if index < len(done):
                continue  # sent before a failure of a later part: never sent twice
            payload = await make()
            try:
                done.append(await self._post(wa_id, payload))
            except WindowClosed as exc:
                if template is not None and not done:  # the platform says the window closed: the template
                    return SentRef(await self._post(wa_id, self._template_message(wa_id, template)))
                await self._reopen(wa_id, delivery, f"{exc} (the platform's own window check)")
                raise TemporaryFailure("the customer wrote while the conversation was reopened") from None
            if len(payloads) > 1:
                await self._state.set(done_key, done)
        if len(payloads) > 1:
            await self._state.delete(done_key)
        return SentRef(done[0] if done else "")

    def _since(self, last: Any) -> str:
        last = float(last or 0.0)
        if not last:
            return "never"
        hours = (self.clock() - last) / 3600
        return f"{hours:.0f} h ago"

    async def _post(self, wa_id: str, payload: dict[str, Any]) -> str:
        """Send one message to ``wa_id`` no sooner than the pair interval after the previous one."""
        assert self._graph is not None
        lock = self._locks.setdefault(wa_id, asyncio.Lock())
        async with lock:
            wait = self._next_send.get(wa_id, 0.0) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                return str(
                    await call(self._graph.send({"to": wa_id, **payload}), self.settings.pair_interval)
                )
            finally:
                self._next_send[wa_id] = time.monotonic() + self.settings.pair_interval

    def _template_message(self, wa_id: str, template: TemplateRef) -> dict[str, Any]:
        """A template delivery as a Graph template message."""
        return self._template_payload(
            wa_id, template.name, template.language, [str(v) for v in template.variables]
        )

    def _template_payload(self, wa_id: str, name: str, language: str, variables: list[str]) -> dict[str, Any]:
        template: dict[str, Any] = {"name": name, "language": {"code": language}}
        if variables:
            template["components"] = [
                {"type": "body", "parameters": [{"type": "text", "text": v} for v in variables]}
            ]
        return {"type": "template", "template": template}

    async def _reopen(self, wa_id: str, delivery: Delivery, reason: str) -> None:
        """Outside the window: send the re-engagement template once per silence, then hold the reply
        (raise :class:`AwaitingCustomer`). Returns instead when the customer wrote meanwhile (their
        message came while the template went out: the relay's release may already have passed)."""
        config = self.settings.reopen_template
        if config is None:
            raise AwaitingCustomer(
                reason,
                "No re-engagement template is configured (whatsapp reopen_template), so the customer was "
                "not asked to write; ask them on another channel",
            )
        silence = str(await self._state.get(f"last:{wa_id}", 0.0))
        language = config.language_for(wa_id)
        if await self._state.get(f"reopened:{wa_id}") == silence:
            raise AwaitingCustomer(reason, f"The approved template '{config.name}' was sent to them already")
        values = {
            "customer_name": str(await self._state.get(f"name:{wa_id}", "") or "there"),
            "agent_name": delivery.agent_name or "our team",
        }
        variables = [v.format_map(_Missing(values)) for v in config.variables]
        await self._post(wa_id, self._template_payload(wa_id, config.name, language, variables))
        await self._state.set(f"reopened:{wa_id}", silence)
        if str(await self._state.get(f"last:{wa_id}", 0.0)) != silence:
            return  # the customer wrote while the template went out
        raise AwaitingCustomer(
            reason, f"The approved template '{config.name}' ({language}) was sent to ask them to write"
        )

    def _payloads(self, delivery: Delivery) -> list[Callable[[], Any]]:
        """The messages one delivery becomes: its text (cut at the limit), then each file."""
        makers: list[Callable[[], Any]] = []
        text = delivery.text.strip()
        for start in range(0, len(text), MAX_TEXT):
            part = text[start : start + MAX_TEXT]

            async def text_payload(part: str = part) -> dict[str, Any]:
                return {"type": "text", "text": {"body": part, "preview_url": False}}

            makers.append(text_payload)
        for attachment in delivery.attachments:

            async def media_payload(attachment: Attachment = attachment) -> dict[str, Any]:
                return await self._media_payload(attachment)

            makers.append(media_payload)
        return makers

    async def _media_payload(self, attachment: Attachment) -> dict[str, Any]:
        """An agent's file as a media message: uploaded to WhatsApp, or by its (public) link."""
        assert self._http is not None and self._graph is not None
        kind = OUT_KINDS.get(attachment.kind, "document")
        if not attachment.url:
            raise TemporaryFailure("the file has no URL to fetch it from")
        media: dict[str, Any]
        if self.settings.upload_media:
            try:
                async with self._http.get(attachment.url, timeout=aiohttp.ClientTimeout(total=120)) as resp:
                    if resp.status != 200:
                        raise TemporaryFailure(f"fetching the agent's file answered HTTP {resp.status}")
                    data = await resp.content.read(MAX_UPLOAD_BYTES + 1)
                    mime = attachment.mime_type or resp.content_type or "application/octet-stream"
            except aiohttp.ClientError as exc:
                raise TemporaryFailure(f"fetching the agent's file failed: {type(exc).__name__}") from None
            if len(data) > MAX_UPLOAD_BYTES:
                raise Undeliverable("the file is larger than WhatsApp's 100 MB")
            name = clean_file_name(attachment.name or f"file{mimetypes.guess_extension(mime) or ''}")
            media = {"id": await call(self._graph.upload(data, mime, name), self.settings.pair_interval)}
        else:  # WhatsApp fetches it: relaydesk's own links go out with the public URL
            local = self.services.http_base_url.rstrip("/")
            url = attachment.url
            media = {
                "link": self.services.public_url.rstrip("/") + url[len(local) :]
                if local and url.startswith(local)
                else url
            }
        if kind == "document":
            media["filename"] = clean_file_name(attachment.name)
        return {"type": kind, kind: media}


class _Missing(dict[str, str]):
    """format_map values where an unknown ``{name}`` stays as written."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _error(status: int, message: str) -> web.Response:
    """A JSON error answer."""
    return web.json_response({"error": {"message": message, "code": status}}, status=status)
