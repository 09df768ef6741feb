"""One outbox delivery as Bot API calls: formatted text (split at the limit), photos and documents,
edits and deletions; a delivery's choices as an inline keyboard on its last message.

A delivery that needs several messages (a long text, several files) records each part it has sent in
the plugin's state, so when a later part hits a 429 and the outbox retries the delivery, the parts the
customer already has are not sent again. Any failure is raised as the outbox's error type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
from aiogram import Bot
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramNetworkError
from aiogram.types import BufferedInputFile, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot_core.api import (
    Attachment,
    Choice,
    Delivery,
    SentRef,
    StateStore,
    TemporaryFailure,
    Undeliverable,
)
from bridge.channels.telegram.errors import Scrubber, delivery_error, describe
from bridge.channels.telegram.formatting import to_telegram_html
from bridge.channels.telegram.inbound import message_ref, parse_message_ref
from bridge.channels.telegram.split import split_text, utf16_len

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_PHOTO_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
PHOTO_TYPES = {"image/jpeg", "image/png", "image/webp"}
SHORT_TITLE = 4  # choices this short (scores) share a keyboard row, up to ROW_BUTTONS of them
ROW_BUTTONS = 6


def keyboard(choices: tuple[Choice, ...]) -> InlineKeyboardMarkup | None:
    """Choices as an inline keyboard: one button per row, or short ones (``1``...``10``) side by side; each
    button's ``callback_data`` is the choice's id (at most 64 bytes, which :class:`Choice` ensures)."""
    if not choices:
        return None
    buttons = [InlineKeyboardButton(text=c.title, callback_data=c.id) for c in choices]
    width = ROW_BUTTONS if all(len(c.title) <= SHORT_TITLE for c in choices) else 1
    return InlineKeyboardMarkup(
        inline_keyboard=[buttons[i : i + width] for i in range(0, len(buttons), width)]
    )


@dataclass(frozen=True)
class Part:
    """One Bot API message of a delivery: a text, or a file with an optional caption (Markdown source)."""

    text: str = ""
    attachment: Attachment | None = None
    markup: InlineKeyboardMarkup | None = None  # the delivery's choices, on its last part


def plan(delivery: Delivery, max_text: int = MAX_TEXT) -> list[Part]:
    """The messages a delivery becomes: a short text rides as the first file's caption."""
    text = delivery.text.strip()
    files = list(delivery.attachments)
    if files and text and utf16_len(text) <= MAX_CAPTION:
        parts = [Part(text, files[0]), *(Part(attachment=f) for f in files[1:])]
    else:
        parts = [Part(chunk) for chunk in split_text(text, max_text)] if text else []
        parts += [Part(attachment=f) for f in files]
    markup = keyboard(delivery.choices)
    if markup is not None:
        if not parts:
            parts = [Part(delivery.menu or "…")]
        parts[-1] = Part(parts[-1].text, parts[-1].attachment, markup)
    return parts


class Sender:
    """Sends deliveries through ``bot``; ``progress`` remembers the parts of multi-message deliveries."""

    def __init__(self, bot: Bot, http: aiohttp.ClientSession, scrub: Scrubber, progress: StateStore) -> None:
        self._bot = bot
        self._http = http
        self._scrub = scrub
        self._progress = progress

    async def send(self, delivery: Delivery) -> SentRef:
        """Deliver, edit or delete; raises RetryAfter, TemporaryFailure or Undeliverable."""
        try:
            chat_id = int(delivery.external_user_id)
        except ValueError:
            raise Undeliverable(f"{delivery.external_user_id!r} is not a Telegram chat id") from None
        if delivery.delete_of:
            return await self._delete(delivery.delete_of)
        if delivery.edit_of:
            return await self._edit(delivery.edit_of, delivery.text)
        parts = plan(delivery)
        if not parts:
            raise Undeliverable("nothing to send: the message has no text and no files")
        key = f"parts:{delivery.outbox_id}"
        done: list[str] = await self._progress.get(key, []) if len(parts) > 1 else []
        try:
            for part in parts[len(done) :]:
                sent = await self._send_part(chat_id, part)
                done.append(message_ref(chat_id, sent.message_id))
                if len(parts) > 1:
                    await self._progress.set(key, done)
        except Undeliverable:
            if len(parts) > 1:
                await self._progress.delete(key)  # the outbox gives up: nothing will resume it
            raise
        if len(parts) > 1:
            await self._progress.delete(key)
        return SentRef(done[0])

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except (TelegramAPIError, TelegramNetworkError) as exc:
            raise delivery_error(exc, self._scrub) from None

    async def _send_part(self, chat_id: int, part: Part) -> Message:
        markup = part.markup
        if part.attachment is None:
            return await self._with_fallback(
                lambda html: self._bot.send_message(
                    chat_id, html, parse_mode=ParseMode.HTML, reply_markup=markup
                ),
                lambda: self._bot.send_message(chat_id, part.text, reply_markup=markup),
                part.text,
            )
        attachment = part.attachment
        data = await self._fetch(attachment)
        name = attachment.name or ("photo.jpg" if attachment.kind == "image" else "file")
        upload = BufferedInputFile(data, filename=name)
        as_photo = (
            attachment.kind == "image"
            and (attachment.mime_type or "image/jpeg") in PHOTO_TYPES
            and len(data) <= MAX_PHOTO_BYTES
        )
        if as_photo:

            def photo(caption: str | None, mode: ParseMode | None) -> Any:
                return self._bot.send_photo(
                    chat_id, upload, caption=caption, parse_mode=mode, reply_markup=markup
                )

            send = photo
        else:

            def document(caption: str | None, mode: ParseMode | None) -> Any:
                return self._bot.send_document(
                    chat_id, upload, caption=caption, parse_mode=mode, reply_markup=markup
                )

            send = document
        if not part.text:
            sent: Message = await self._call(send(None, None))
            return sent
        return await self._with_fallback(
            lambda html: send(html, ParseMode.HTML), lambda: send(part.text, None), part.text
        )

    async def _with_fallback(self, formatted: Any, plain: Any, source: str) -> Message:
        """Send as HTML; if Telegram still cannot parse it, send the agent's text as typed."""
        try:
            return await formatted(to_telegram_html(source))  # type: ignore[no-any-return]
        except TelegramBadRequest as exc:
            if "can't parse entities" not in exc.message:
                raise delivery_error(exc, self._scrub) from None
        except (TelegramAPIError, TelegramNetworkError) as exc:
            raise delivery_error(exc, self._scrub) from None
        return await self._call(plain())  # type: ignore[no-any-return]

    async def _fetch(self, attachment: Attachment) -> bytes:
        """The bytes of an agent's file, from the link the workspace gave (its own signed URL)."""
        if not attachment.url:
            raise Undeliverable(f"{attachment.name or 'the file'} has no link to fetch it from")
        try:
            async with self._http.get(attachment.url, timeout=aiohttp.ClientTimeout(total=60)) as resp:
                if resp.status in (403, 404, 410):
                    raise Undeliverable(
                        f"{attachment.name or 'the file'} is no longer available (HTTP {resp.status})"
                    )
                if resp.status != 200:
                    raise TemporaryFailure(f"fetching {attachment.name or 'the file'}: HTTP {resp.status}")
                data = await resp.content.read(MAX_UPLOAD_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TemporaryFailure(
                f"fetching {attachment.name or 'the file'}: {describe(exc, self._scrub)}"
            ) from None
        if len(data) > MAX_UPLOAD_BYTES:
            raise Undeliverable(
                f"{attachment.name or 'the file'} is larger than Telegram's 50 MB limit for bots"
            )
        return data

    async def _edit(self, ref: str, text: str) -> SentRef:
        chat_id, message_id = parse_message_ref(ref)
        if utf16_len(text) > MAX_TEXT:
            raise Undeliverable("the edited text is longer than one Telegram message and cannot replace it")
        try:
            await self._with_fallback(
                lambda html: self._bot.edit_message_text(
                    text=html, chat_id=chat_id, message_id=message_id, parse_mode=ParseMode.HTML
                ),
                lambda: self._bot.edit_message_text(text=text, chat_id=chat_id, message_id=message_id),
                text,
            )
        except Undeliverable as exc:
            if "message is not modified" not in exc.reason:  # a retried edit that already landed
                raise
        return SentRef(ref)

    async def _delete(self, ref: str) -> SentRef:
        chat_id, message_id = parse_message_ref(ref)
        try:
            await self._call(self._bot.delete_message(chat_id, message_id))
        except Undeliverable as exc:
            if "message to delete not found" not in exc.reason:  # a retried deletion that already landed
                raise
        return SentRef(ref)
