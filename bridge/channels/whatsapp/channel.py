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
    Choice,
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
from bridge.channels.whatsapp.graph import (
    PAIR_RATE,
    THROUGHPUT,
    THROUGHPUT_WAIT,
    WINDOW,
    Graph,
    GraphFailure,
    WindowClosed,
    call,
    delivery_error,
)
from bridge.channels.whatsapp.inbound import read_notification

WEBHOOK_PATH = "/whatsapp/webhook"
MEDIA_PREFIX = "/whatsapp/media"
WINDOW_SECONDS = 24 * 3600
MAX_TEXT = 4096
MAX_BODY_BYTES = 3 * 1024 * 1024
MAX_UPLOAD_BYTES = 100 * 1024 * 1024
OUT_KINDS = {"image": "image", "file": "document", "audio": "audio", "video": "video", "sticker": "sticker"}
RECENT = 4096
MAX_BUTTONS = 3  # reply buttons: 1-3, titles up to 20 characters, body up to 1024
MAX_BUTTON_TITLE = 20
MAX_BUTTON_BODY = 1024
MAX_ROWS = 10  # a list message: up to 10 rows, titles up to 24, descriptions up to 72, menu label up to 20
MAX_ROW_TITLE = 24
MAX_ROW_DESCRIPTION = 72
MAX_MENU_LABEL = 20


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
        messages_per_second: float = Field(
            80.0, gt=0, le=1000
        )  # the number's throughput (Meta: 80 by default)
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
        choices=MAX_ROWS,
        reactions=True,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = self.config
        self._state = self.services.store("whatsapp")
        self._http: aiohttp.ClientSession | None = None
        self._graph: Graph | None = None
        self._signer: Any = None
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
                await self._state.delete(f"closed:{wa_id}")
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
                window_error = status.status == "failed" and WINDOW in status.codes
                if window_error:  # the platform's window closed before ours: closed until they write
                    await self._close_window(status.recipient, status.timestamp.timestamp())
                event = delivery_status(
                    self.instance_name,
                    status.recipient,
                    status.message_id,
                    status.status,
                    error=status.error,
                    timestamp=status.timestamp,
                    awaiting_customer=window_error,
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
        """Whether the customer wrote within the last 24 hours (free-form messages allowed), and the
        platform has not said otherwise since they last wrote (131047)."""
        if await self._state.get(f"closed:{wa_id}") is not None:
            return False
        last = float(await self._state.get(f"last:{wa_id}", 0.0))
        return self.clock() - last < WINDOW_SECONDS

    async def _close_window(self, wa_id: str, at: float | None = None) -> None:
        """The platform refused a free-form message (131047): the window is closed until the customer
        writes (their next message removes the mark). ``at``: when the platform refused it, for a refusal
        reported later; if the customer wrote since, the window is theirs again and stays open."""
        if at is not None and at < float(await self._state.get(f"last:{wa_id}", 0.0)):
            return
        await self._state.set(f"closed:{wa_id}", True)

    async def send(self, delivery: Delivery) -> SentRef:
        """Deliver one outbox row: a template (``delivery.template``), text, files; paced per customer."""
        if self._graph is None or self._http is None:
            raise TemporaryFailure("the whatsapp channel is not started")
        wa_id = delivery.external_user_id
        template = delivery.template
        window_open = await self.window_open(wa_id)
        if delivery.kind == "reaction":
            return await self._react(wa_id, delivery, window_open)
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
                await self._close_window(wa_id)
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
        """Send one message to ``wa_id``, paced across every worker (``services.rate_limits.pace``): no
        sooner than the pair interval after the previous one to this customer, and within the number's
        throughput. The platform's own throughput (130429) or pair-rate (131056) refusal moves the shared
        slot on, so the other workers wait too."""
        assert self._graph is not None
        config = self.settings
        limits = self.services.rate_limits
        pair, number = f"whatsapp:pair:{config.phone_number_id}", "whatsapp:number"
        lock = self._locks.setdefault(wa_id, asyncio.Lock())
        async with lock:  # one at a time per customer in this process (their order)
            if config.pair_interval:
                await _sleep(await limits.pace(pair, wa_id, config.pair_interval))
            await _sleep(await limits.pace(number, config.phone_number_id, 1.0 / config.messages_per_second))
            try:
                return str(await self._graph.send({"to": wa_id, **payload}))
            except (GraphFailure, aiohttp.ClientError, TimeoutError) as exc:
                code = exc.code if isinstance(exc, GraphFailure) else 0
                if code == THROUGHPUT:
                    await limits.pace(number, config.phone_number_id, THROUGHPUT_WAIT)
                elif code == PAIR_RATE:
                    await limits.pace(pair, wa_id, max(config.pair_interval, 1.0))
                raise delivery_error(exc, config.pair_interval) from None

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

    async def _react(self, wa_id: str, delivery: Delivery, window_open: bool) -> SentRef:
        """An emoji on the customer's message (empty: removed). Outside the window it is skipped: a reaction
        is not worth a template, and the platform refuses it there."""
        if not window_open or not delivery.react_to:
            self.log.info(
                "whatsapp reaction skipped (window closed)", extra={"outbox_id": delivery.outbox_id}
            )
            return SentRef("")
        payload = {"type": "reaction", "reaction": {"message_id": delivery.react_to, "emoji": delivery.text}}
        try:
            return SentRef(await self._post(wa_id, payload))
        except WindowClosed:
            return SentRef("")

    def _payloads(self, delivery: Delivery) -> list[Callable[[], Any]]:
        """The messages one delivery becomes: its text (cut at the limit; with choices, the last part
        carries them as reply buttons or a list), then each file."""
        makers: list[Callable[[], Any]] = []
        text = delivery.text.strip()
        interactive: dict[str, Any] = {}
        if delivery.choices:
            text, interactive = interactive_message(text, delivery.choices, delivery.menu)
        for start in range(0, len(text), MAX_TEXT):
            part = text[start : start + MAX_TEXT]

            async def text_payload(part: str = part) -> dict[str, Any]:
                return {"type": "text", "text": {"body": part, "preview_url": False}}

            makers.append(text_payload)
        if delivery.choices:

            async def interactive_payload(body: dict[str, Any] = interactive) -> dict[str, Any]:
                return body

            makers.append(interactive_payload)
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


def _cut(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters (an ellipsis where it was cut)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def interactive_message(text: str, choices: tuple[Choice, ...], menu: str) -> tuple[str, dict[str, Any]]:
    """Choices as the Cloud API takes them: up to 3 short titles as reply buttons, else a list (up to 10
    rows; a title too long for a row goes on in the row's description). The body is the end of ``text``
    (up to 1024 characters with buttons, 4096 with a list); returns what did not fit, to go before it as
    text, and the message."""
    titles = [c.title.strip() for c in choices]
    buttons = (
        len(choices) <= MAX_BUTTONS
        and all(len(t) <= MAX_BUTTON_TITLE for t in titles)
        and len(set(titles)) == len(titles)
    )
    limit = MAX_BUTTON_BODY if buttons else MAX_TEXT
    rest, body = (text[:-limit], text[-limit:]) if len(text) > limit else ("", text)
    body = body or _cut(menu, limit) or "…"
    if buttons:
        action: dict[str, Any] = {
            "buttons": [
                {"type": "reply", "reply": {"id": c.id, "title": t}}
                for c, t in zip(choices, titles, strict=True)
            ]
        }
        kind = "button"
    else:
        rows = []
        for choice in choices[:MAX_ROWS]:
            title = " ".join(choice.title.split())
            row = {"id": choice.id, "title": _cut(title, MAX_ROW_TITLE)}
            description = choice.description or (title if len(title) > MAX_ROW_TITLE else "")
            if description:
                row["description"] = _cut(description, MAX_ROW_DESCRIPTION)
            rows.append(row)
        action = {"button": _cut(menu, MAX_MENU_LABEL) or "Choose", "sections": [{"rows": rows}]}
        kind = "list"
    return rest.strip(), {
        "type": "interactive",
        "interactive": {"type": kind, "body": {"text": body}, "action": action},
    }


async def _sleep(seconds: float) -> None:
    """Wait for a reserved slot (not at all when it is now)."""
    if seconds > 0:
        await asyncio.sleep(seconds)


class _Missing(dict[str, str]):
    """format_map values where an unknown ``{name}`` stays as written."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _error(status: int, message: str) -> web.Response:
    """A JSON error answer."""
    return web.json_response({"error": {"message": message, "code": status}}, status=status)
