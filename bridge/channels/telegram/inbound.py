"""Telegram updates as the engine's :class:`CustomerMessage`: text, media, captions, replies, edits, /start,
and taps on the inline buttons of a reply with choices (``callback_query``: ``choice`` is the button's data).

Ids: a private chat's id is the customer's external id; message ids are only unique per chat, so a
message's external id is ``"<chat>:<message>"``. An edit is its own event (``"<chat>:<message>:e<date>"``)
pointing at the original with ``edit_of``. Files are not copied here: each attachment carries a signed
relaydesk URL (``file_link``) from which the workspace fetches the bytes when it mirrors the message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qsl

from aiogram.types import Message, Update
from aiogram.utils.payload import decode_payload

from bot_core.api import LOCALE, Attachment, CustomerMessage

FileLink = Callable[[str], str]
ATTRIBUTE_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
START = re.compile(r"^/start(?:@\w+)?(?:\s+(\S+))?\s*$")
MAX_ATTRIBUTE_VALUE = 256
VERIFIED_CONTACTS = ("phone", "email")  # attribute names reserved for contacts a channel verified


def message_ref(chat_id: int | str, message_id: int | str) -> str:
    """The external id of a message: ``"<chat>:<message>"``."""
    return f"{chat_id}:{message_id}"


def parse_message_ref(ref: str) -> tuple[int, int]:
    """``(chat_id, message_id)`` of an id made by :func:`message_ref`; ValueError otherwise."""
    chat, _, message = ref.partition(":")
    return int(chat), int(message.split(":", 1)[0])


def start_attributes(text: str, plain_key: str) -> dict[str, str]:
    """Customer attributes carried by a ``/start PAYLOAD`` deep link (empty for any other text).

    A payload made with aiogram's ``create_start_link(bot, "order_id=A-1042&src=site", encode=True)``
    gives one attribute per pair; any other payload is kept whole under ``plain_key``.
    """
    match = START.match(text.strip())
    if match is None or not match.group(1):
        return {}
    payload = match.group(1)
    try:
        decoded = decode_payload(payload)
        pairs = parse_qsl(decoded, keep_blank_values=False, strict_parsing=True)
    except (ValueError, UnicodeDecodeError):
        pairs = []
    if pairs and all(ATTRIBUTE_KEY.match(k) and v.isprintable() for k, v in pairs):
        # anyone can make a deep link: a phone or email in it is not verified, and the core links
        # customers by the verified ones channels give under these names
        return {
            (f"unverified_{k}" if k in VERIFIED_CONTACTS else k): v[:MAX_ATTRIBUTE_VALUE] for k, v in pairs
        }
    return {plain_key: payload}


def _attachments(message: Message, file_link: FileLink) -> tuple[Attachment, ...]:
    found: list[Attachment] = []
    if message.photo:
        best = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        found.append(
            Attachment(
                kind="image",
                url=file_link(best.file_id),
                mime_type="image/jpeg",
                name=f"photo_{best.file_unique_id}.jpg",
                size=best.file_size,
                platform_file_id=best.file_id,
            )
        )
    if message.document:
        doc = message.document
        mime = doc.mime_type or "application/octet-stream"
        found.append(
            Attachment(
                kind="image" if mime.startswith("image/") else "file",
                url=file_link(doc.file_id),
                mime_type=mime,
                name=doc.file_name or f"document_{doc.file_unique_id}",
                size=doc.file_size,
                platform_file_id=doc.file_id,
            )
        )
    if message.voice:
        voice = message.voice
        found.append(
            Attachment(
                kind="audio",
                url=file_link(voice.file_id),
                mime_type=voice.mime_type or "audio/ogg",
                name=f"voice_{voice.file_unique_id}.ogg",
                size=voice.file_size,
                platform_file_id=voice.file_id,
            )
        )
    if message.audio:
        audio = message.audio
        found.append(
            Attachment(
                kind="audio",
                url=file_link(audio.file_id),
                mime_type=audio.mime_type or "audio/mpeg",
                name=audio.file_name or f"audio_{audio.file_unique_id}.mp3",
                size=audio.file_size,
                platform_file_id=audio.file_id,
            )
        )
    if message.video:
        video = message.video
        found.append(
            Attachment(
                kind="video",
                url=file_link(video.file_id),
                mime_type=video.mime_type or "video/mp4",
                name=video.file_name or f"video_{video.file_unique_id}.mp4",
                size=video.file_size,
                platform_file_id=video.file_id,
            )
        )
    if message.sticker:
        sticker = message.sticker
        ext, mime = (
            ("tgs", "application/x-tgsticker")
            if sticker.is_animated
            else ("webm", "video/webm")
            if sticker.is_video
            else ("webp", "image/webp")
        )
        found.append(
            Attachment(
                kind="sticker",
                url=file_link(sticker.file_id),
                mime_type=mime,
                name=f"sticker_{sticker.file_unique_id}.{ext}",
                size=sticker.file_size,
                platform_file_id=sticker.file_id,
            )
        )
    return tuple(found)


def _text(message: Message) -> str:
    if message.text is not None:
        return message.text
    if message.caption is not None:
        return message.caption
    if message.sticker and message.sticker.emoji:
        return message.sticker.emoji
    return ""


def _display_name(message: Message) -> str | None:
    user = message.from_user
    if user is None:
        return None
    return " ".join(p for p in (user.first_name, user.last_name) if p) or user.username


def _attributes(message: Message, text: str, start_key: str) -> dict[str, str]:
    """A message's customer attributes: a deep link's payload, and the user's app language as their locale."""
    attributes = start_attributes(text, start_key)
    user = message.from_user
    if user is not None and user.language_code:
        attributes[LOCALE] = user.language_code
    return attributes


def pressed_choice(update: Update, channel: str) -> CustomerMessage | None:
    """A tap on an inline button of the bot's message (``callback_query``) as the customer's message: the
    button's text, ``choice`` its ``callback_data``, a reply to the message it was on. None for queries
    from a group chat or without data (a game, an inline message)."""
    query = update.callback_query
    if query is None or not query.data or query.message is None:
        return None
    message = query.message
    if message.chat.type != "private" or query.from_user.is_bot:
        return None
    title = query.data
    markup = getattr(message, "reply_markup", None)
    for row in markup.inline_keyboard if markup is not None else []:
        for button in row:
            if button.callback_data == query.data:
                title = button.text
    user = query.from_user
    name = " ".join(p for p in (user.first_name, user.last_name) if p) or user.username
    return CustomerMessage(
        channel=channel,
        external_user_id=str(message.chat.id),
        external_message_id=f"{message.chat.id}:q{query.id}",
        text=title,
        reply_to=message_ref(message.chat.id, message.message_id),
        display_name=name,
        choice=query.data,
    )


def customer_message(
    update: Update, channel: str, file_link: FileLink, start_key: str = "start"
) -> CustomerMessage | None:
    """The customer message an update carries, or None (group chats, bots, other update kinds)."""
    if update.callback_query is not None:
        return pressed_choice(update, channel)
    message = update.message or update.edited_message
    if message is None or message.chat.type != "private":
        return None
    if message.from_user is not None and message.from_user.is_bot:
        return None
    chat_id = message.chat.id
    text = _text(message)
    attachments = _attachments(message, file_link)
    if not text and not attachments:
        return None  # locations, contacts, polls...: nothing the room could show yet
    ref = message_ref(chat_id, message.message_id)
    edited = update.edited_message is not None
    external_id = f"{ref}:e{message.edit_date or 0}" if edited else ref
    reply = message.reply_to_message
    sent_at = message.date if isinstance(message.date, datetime) else datetime.now(UTC)
    if edited and message.edit_date:
        sent_at = datetime.fromtimestamp(message.edit_date, UTC)
    return CustomerMessage(
        channel=channel,
        external_user_id=str(chat_id),
        external_message_id=external_id,
        text=text,
        attachments=attachments,
        reply_to=message_ref(chat_id, reply.message_id) if reply is not None else None,
        display_name=_display_name(message),
        edit_of=ref if edited else None,
        attributes={} if edited else _attributes(message, text, start_key),
        timestamp=sent_at,
    )
