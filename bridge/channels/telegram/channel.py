"""The Telegram channel plugin (aiogram 3): customers write to the shop's bot, agents' answers go back.

Two ways to receive updates (``mode``): long ``polling`` (no public URL needed), or a ``webhook`` that
Telegram calls at ``<webhook_url>/telegram/webhook`` with the configured secret token (``webhook_url``
defaults to ``server.public_url``, where the world reaches relaydesk). Either way an
update is acknowledged only once it is on the bus. Outbound messages come from the outbox through
:meth:`TelegramChannel.send`.
"""

from __future__ import annotations

import asyncio
import functools
import re
import secrets
from collections import OrderedDict
from typing import Any, Literal, Self

import aiohttp
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramAPIError, TelegramNetworkError, TelegramUnauthorizedError
from aiogram.types import Update
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from bot_core.api import (
    ChannelCapabilities,
    Delivery,
    NotAccepting,
    Plugin,
    PluginKind,
    ReceiveLoop,
    SentRef,
    TemporaryFailure,
    route,
)
from bridge.channels.telegram.chat_action import TypingIndicator
from bridge.channels.telegram.errors import Scrubber, describe
from bridge.channels.telegram.files import FILES_PREFIX, FileLinks, serve_file
from bridge.channels.telegram.inbound import customer_message
from bridge.channels.telegram.outbound import MAX_TEXT, Sender
from bridge.channels.telegram.polling import ALLOWED_UPDATES, Poller
from bridge.channels.telegram.webhook import error, read_update, secret_matches

WEBHOOK_PATH = "/telegram/webhook"
MAX_CHOICES = 12  # a reply's choices as an inline keyboard (an NPS 0-10 scale fits)
TOKEN = re.compile(r"^\d{3,}:[A-Za-z0-9_-]{20,}$")
SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
RECENT_UPDATES = 2048


class TelegramChannel(Plugin["TelegramChannel.Config"]):
    """Customers on Telegram, through one bot."""

    name = "telegram"
    kind = PluginKind.CHANNEL

    class Config(BaseModel):
        """Settings of the Telegram channel (``token`` and ``webhook_secret`` come from the environment)."""

        model_config = ConfigDict(extra="forbid")
        token: SecretStr
        mode: Literal["polling", "webhook"] = "polling"
        # relaydesk's public base URL, e.g. https://desk.example.com (unset: server.public_url)
        webhook_url: str | None = None
        webhook_secret: SecretStr | None = None  # 1-256 of A-Z a-z 0-9 _ -
        api_server: str = "https://api.telegram.org"  # a local Bot API server (or the test emulator)
        poll_timeout: int = Field(30, ge=0, le=50)
        request_timeout: int = Field(
            60, ge=1, le=600
        )  # seconds for any other Bot API call (uploads included)
        start_attribute: str = "start"  # the customer attribute a plain /start payload is kept under

        @field_validator("token")
        @classmethod
        def _token_shape(cls, value: SecretStr) -> SecretStr:
            if not TOKEN.match(value.get_secret_value()):
                raise ValueError(
                    "not a Telegram bot token (expected <digits>:<secret> as @BotFather gives it)"
                )
            return value

        @field_validator("webhook_url", "api_server")
        @classmethod
        def _http_url(cls, value: str | None) -> str | None:
            if value is not None and not value.startswith(("http://", "https://")):
                raise ValueError("must be an http:// or https:// URL")
            return value.rstrip("/") if value else value

        @model_validator(mode="after")
        def _webhook_settings(self) -> Self:
            if self.mode == "webhook":
                secret = self.webhook_secret.get_secret_value() if self.webhook_secret else ""
                if not SECRET.match(secret):
                    raise ValueError(
                        "mode webhook needs webhook_secret: 1-256 characters of A-Z, a-z, 0-9, _ and -"
                    )
            return self

    capabilities = ChannelCapabilities(
        max_text_length=MAX_TEXT,
        media_kinds=frozenset({"image", "file", "audio", "video", "sticker"}),
        edits=True,
        deletes=True,
        choices=MAX_CHOICES,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.config
        self.settings = config
        token = config.token.get_secret_value()
        self._scrub = Scrubber(token)
        session = AiohttpSession(
            api=TelegramAPIServer.from_base(config.api_server), timeout=config.request_timeout
        )
        self.bot = Bot(token, session=session)
        self._state = self.services.store("telegram")
        self._http: aiohttp.ClientSession | None = None
        self._links: FileLinks | None = None
        self._sender: Sender | None = None
        self._typing = TypingIndicator(self.bot, self.log, self._scrub)
        self._polling: ReceiveLoop | None = None
        self._registering: ReceiveLoop | None = None  # retries setWebhook after a failure
        self._recent: OrderedDict[int, None] = OrderedDict()  # update ids already on the bus
        self._tasks: set[asyncio.Task[None]] = set()  # button answers in flight

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the token with getMe and prepare file links; updates start flowing in :meth:`ready`."""
        try:
            me = await self.bot.get_me(request_timeout=20)
            self.log.info("telegram bot", extra={"bot": me.username, "mode": self.settings.mode})
        except TelegramUnauthorizedError:
            await self.bot.session.close()
            raise RuntimeError(
                f"{self.instance_name}: Telegram refused the bot token (401): check TELEGRAM_BOT_TOKEN"
            ) from None
        except (TelegramAPIError, TelegramNetworkError) as exc:  # keep going: polling/outbox retry later
            self.log.warning("telegram getMe failed", extra={"error": describe(exc, self._scrub)})
        key = await self._state.get("file_link_key")
        if key is None:
            key = secrets.token_hex(32)
            await self._state.set("file_link_key", key)
        base = self.services.http_base_url.replace("//0.0.0.0:", "//127.0.0.1:")
        self._links = FileLinks(base, str(key).encode(), self.services.downloads)
        self._http = aiohttp.ClientSession()
        self._sender = Sender(self.bot, self._http, self._scrub, self._state)

    async def ready(self) -> None:
        """Polling: drop a leftover webhook and start the loop. Webhook: register it with the secret."""
        if self.settings.mode == "polling":
            try:
                await self.bot.delete_webhook(drop_pending_updates=False)
            except (TelegramAPIError, TelegramNetworkError) as exc:
                self.log.warning("telegram deleteWebhook failed", extra={"error": describe(exc, self._scrub)})
            poller = Poller(
                self.bot, self._intake, self._state, self.log, self._scrub, timeout=self.settings.poll_timeout
            )
            self._polling = self.services.receivers.loop("polling", poller.run, describe=poller.describe)
            self._polling.start()
            return
        try:
            await self._set_webhook()
        except Exception:
            # Until Telegram takes the webhook no update arrives: keep trying (shown on /healthz).
            self._registering = self.services.receivers.loop(
                "webhook", self._register_webhook, describe=self._describe
            )
            self._registering.start()

    async def _set_webhook(self) -> None:
        """Register the webhook with the secret token (aiogram's errors propagate)."""
        assert self.settings.webhook_secret
        url = self.webhook_base_url + WEBHOOK_PATH
        await self.bot.set_webhook(
            url,
            secret_token=self.settings.webhook_secret.get_secret_value(),
            allowed_updates=ALLOWED_UPDATES,
            drop_pending_updates=False,
        )
        self.log.info("telegram webhook set", extra={"url": url})

    @property
    def webhook_base_url(self) -> str:
        """Where Telegram reaches relaydesk: ``webhook_url``, else ``server.public_url``."""
        return (self.settings.webhook_url or self.services.public_url).rstrip("/")

    async def _register_webhook(self, loop: ReceiveLoop) -> None:
        """Retry setWebhook with the loop's backoff until it works, then rest (updates come to the route)."""
        while True:
            try:
                await self._set_webhook()
            except Exception as exc:
                await loop.failed("telegram setWebhook failed", exc)
                continue
            loop.ok()
            await asyncio.Event().wait()

    def _describe(self, exc: BaseException) -> str:
        return " ".join(describe(exc, self._scrub).split())[:300]

    async def stop(self) -> None:
        """Stop polling and typing indicators and close the HTTP sessions (a webhook stays registered:
        Telegram keeps the updates that arrive meanwhile and delivers them after the restart)."""
        for loop in (self._polling, self._registering):
            if loop is not None:
                await loop.stop()
        self._polling = self._registering = None
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        await self._typing.close()
        if self._http is not None:
            await self._http.close()
            self._http = None
        await self.bot.session.close()

    # -- inbound -------------------------------------------------------------------------------

    async def _intake(self, update: Update) -> None:
        """Put the update's customer message on the bus (returns once it is stored)."""
        if update.update_id in self._recent:
            return  # a redelivery of an update already stored
        assert self._links is not None
        sent = update.message or update.edited_message
        chat = str(sent.chat.id) if sent is not None else ""
        message = customer_message(
            update,
            self.instance_name,
            functools.partial(self._links.link, scope=chat),
            self.settings.start_attribute,
        )
        if message is not None:
            await self.services.inbound(message)
            if update.callback_query is not None:
                self._background(self._answer_press(update))
        else:
            self.log.debug("telegram update ignored", extra={"update_id": update.update_id})
        self._recent[update.update_id] = None
        while len(self._recent) > RECENT_UPDATES:
            self._recent.popitem(last=False)

    def _background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_press(self, update: Update) -> None:
        """Stop the button's spinner and take the keyboard off the message (a choice is made once);
        best effort: the press is on the bus already."""
        query = update.callback_query
        assert query is not None
        try:
            await self.bot.answer_callback_query(query.id)
            if query.message is not None:
                await self.bot.edit_message_reply_markup(
                    chat_id=query.message.chat.id, message_id=query.message.message_id, reply_markup=None
                )
        except (TelegramAPIError, TelegramNetworkError) as exc:
            self.log.info("telegram button answer failed", extra={"error": describe(exc, self._scrub)})

    @route("POST", WEBHOOK_PATH)
    async def webhook(self, request: web.Request) -> web.Response:
        """Telegram's webhook call: 401 without the secret token, 200 once the update is stored."""
        secret = self.settings.webhook_secret
        if self.settings.mode != "webhook" or secret is None:
            return error(404, "this telegram channel does not use a webhook")
        if not secret_matches(request, secret.get_secret_value()):
            self.log.warning("telegram webhook call with a wrong secret token refused")
            return error(401, "wrong secret token")
        update = await read_update(request, self.bot)
        if isinstance(update, web.Response):
            return update
        try:
            await self._intake(update)
        except NotAccepting:
            return error(503, "relaydesk is shutting down; retry later")
        return web.json_response({"ok": True})

    @route("GET", FILES_PREFIX + "/{file_id}")
    async def file(self, request: web.Request) -> web.StreamResponse:
        """A customer's file for the workspace: only with this file's signature, within the download rate."""
        file_id = request.match_info["file_id"]
        if self._links is None or self._http is None:
            raise web.HTTPServiceUnavailable(text="the telegram channel is not started")
        scope = self._links.signer.check(file_id, request.query)
        await self._links.policy.admit(request, "telegram-files", scope)
        return await serve_file(request, self.bot, self._http, file_id, self._scrub)

    # -- outbound ------------------------------------------------------------------------------

    async def send(self, delivery: Delivery) -> SentRef:
        """Deliver one outbox row (text split at the limit, photos, documents, edits, deletions)."""
        if self._sender is None:
            raise TemporaryFailure("the telegram channel is not started")
        self._typing.stop(_chat_id(delivery.external_user_id))
        return await self._sender.send(delivery)

    async def typing(self, external_user_id: str, agent_name: str, active: bool) -> None:
        """Show (or stop showing) "typing…" to the customer while an agent types (Telegram shows no name)."""
        chat_id = _chat_id(external_user_id)
        if chat_id:
            self._typing.set(chat_id, active)


def _chat_id(external_user_id: str) -> int:
    try:
        return int(external_user_id)
    except ValueError:
        return 0
