"""WhatsApp webhook notifications → customer messages and delivery statuses.

Every message type of the Cloud API becomes a :class:`CustomerMessage` whose id is the ``wamid`` (so a
notification Meta delivers twice is handled once by the core's receipts): text; image, document, audio,
video and sticker as attachments (fetched through relaydesk's signed media links, never with the token
in the URL); location, contacts, interactive replies (buttons, lists), template quick-reply buttons and
reactions as readable text; a pressed button or list row also gives its id as ``CustomerMessage.choice``
(the core's choices, :mod:`bot_core.choices`). ``wa_id`` is a verified phone number: it is passed as ``attributes["phone"]``
in E.164 (``+<digits>``) for the core's linking of identities; ``attributes["<channel>_window_until"]`` puts
the end of the 24-hour window this message opened on the card's WhatsApp identity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bot_core.api import (
    WINDOW_ATTRIBUTE_SUFFIX,
    Attachment,
    CustomerMessage,
    clean_display_name,
    clean_file_name,
)

MEDIA_KINDS = {"image": "image", "document": "file", "audio": "audio", "video": "video", "sticker": "sticker"}


@dataclass(frozen=True)
class StatusUpdate:
    """One entry of a notification's ``statuses``."""

    message_id: str
    recipient: str
    status: str
    error: str
    timestamp: datetime
    codes: tuple[int, ...] = ()  # the error codes of a failure


@dataclass(frozen=True)
class Notification:
    """What one webhook POST carried for our phone number."""

    messages: list[CustomerMessage]
    statuses: list[StatusUpdate]
    ignored: int  # changes for another number or of another field


def window_until(sent_at: datetime) -> str:
    """When the 24-hour window opened by a message sent at ``sent_at`` closes, to the minute (rounded down)."""
    return f"{sent_at + timedelta(hours=24):%Y-%m-%d %H:%M} UTC"


def _time(value: Any) -> datetime:
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.now(UTC)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def describe_contacts(contacts: list[Any]) -> str:
    """Shared contact cards as text: ``👤 Ana Diaz: +1 650 555 1234, ana@example.com``."""
    lines = []
    for card in contacts:
        card = _dict(card)
        name = _str(_dict(card.get("name")).get("formatted_name")) or "contact"
        details = [_str(_dict(p).get("phone")) for p in _list(card.get("phones"))]
        details += [_str(_dict(e).get("email")) for e in _list(card.get("emails"))]
        shown = ", ".join(d for d in details if d)
        lines.append(f"👤 {name}: {shown}" if shown else f"👤 {name}")
    return "\n".join(lines)


def message_text(message: dict[str, Any]) -> tuple[str, str | None]:
    """The text a message shows and, for a reaction, the message it reacts to."""
    kind = _str(message.get("type"))
    body = _dict(message.get(kind))
    if kind == "text":
        return _str(body.get("body")), None
    if kind in MEDIA_KINDS:
        return _str(body.get("caption")), None
    if kind == "location":
        lat, lon = body.get("latitude"), body.get("longitude")
        where = ", ".join(p for p in (_str(body.get("name")), _str(body.get("address"))) if p)
        link = f"https://maps.google.com/?q={lat},{lon}"
        return (f"📍 {where} ({lat}, {lon}) {link}" if where else f"📍 {lat}, {lon} {link}"), None
    if kind == "contacts":
        return describe_contacts(_list(message.get("contacts"))), None
    if kind == "interactive":
        reply = _dict(body.get("button_reply")) or _dict(body.get("list_reply"))
        title, description = _str(reply.get("title")), _str(reply.get("description"))
        return (f"{title} ({description})" if description else title), None
    if kind == "button":
        return _str(body.get("text")) or _str(body.get("payload")), None
    if kind == "reaction":
        emoji = _str(body.get("emoji"))
        target = _str(body.get("message_id")) or None
        return (f"reacted {emoji}" if emoji else "removed their reaction"), target
    return f"[a WhatsApp message of type '{kind or 'unknown'}' that relaydesk cannot show]", None


def customer_message(
    message: dict[str, Any],
    names: dict[str, str],
    channel: str,
    media_link: Callable[[str, str], str],
) -> CustomerMessage | None:
    """The customer message for one entry of ``messages`` (None when it has no sender or id)."""
    wa_id, message_id = _str(message.get("from")), _str(message.get("id"))
    if not wa_id.isdigit() or not message_id:
        return None
    kind = _str(message.get("type"))
    text, reacts_to = message_text(message)
    attachments: tuple[Attachment, ...] = ()
    if kind in MEDIA_KINDS:
        body = _dict(message.get(kind))
        media_id = _str(body.get("id"))
        if media_id:
            filename = _str(body.get("filename"))
            name = clean_file_name(filename) if filename else None
            attachments = (
                Attachment(
                    kind=MEDIA_KINDS[kind],  # type: ignore[arg-type]
                    url=media_link(media_id, wa_id),
                    mime_type=_str(body.get("mime_type")) or None,
                    name=name,
                    platform_file_id=media_id,
                ),
            )
    context = _dict(message.get("context"))
    reply_to = reacts_to or _str(context.get("id")) or None
    choice = pressed(message)
    name = clean_display_name(names.get(wa_id, "")) or None
    sent_at = _time(message.get("timestamp"))
    return CustomerMessage(
        channel=channel,
        external_user_id=wa_id,
        external_message_id=message_id,
        text=text,
        attachments=attachments,
        reply_to=reply_to,
        display_name=name,
        attributes={"phone": f"+{wa_id}", channel + WINDOW_ATTRIBUTE_SUFFIX: window_until(sent_at)},
        timestamp=sent_at,
        choice=choice,
    )


def pressed(message: dict[str, Any]) -> str | None:
    """The id of the choice a button or list reply pressed (a template quick reply: its payload), else None."""
    kind = _str(message.get("type"))
    body = _dict(message.get(kind))
    if kind == "interactive":
        reply = _dict(body.get("button_reply")) or _dict(body.get("list_reply"))
        return _str(reply.get("id")) or None
    if kind == "button":
        return _str(body.get("payload")) or None
    return None


def status_update(item: dict[str, Any]) -> StatusUpdate | None:
    """One entry of ``statuses`` (None when it lacks an id or recipient)."""
    message_id, recipient = _str(item.get("id")), _str(item.get("recipient_id"))
    if not message_id or not recipient:
        return None
    errors = [_dict(e) for e in _list(item.get("errors"))]
    error = "; ".join(
        f"{e.get('code')} {_str(e.get('title')) or _str(e.get('message'))}".strip() for e in errors
    )
    codes = tuple(e["code"] for e in errors if isinstance(e.get("code"), int))
    return StatusUpdate(
        message_id, recipient, _str(item.get("status")), error, _time(item.get("timestamp")), codes
    )


def read_notification(
    data: Any, phone_number_id: str, channel: str, media_link: Callable[[str, str], str]
) -> Notification:
    """Everything in one webhook body meant for ``phone_number_id``."""
    messages: list[CustomerMessage] = []
    statuses: list[StatusUpdate] = []
    ignored = 0
    for entry in _list(_dict(data).get("entry")):
        for change in _list(_dict(entry).get("changes")):
            change = _dict(change)
            value = _dict(change.get("value"))
            metadata = _dict(value.get("metadata"))
            if change.get("field") != "messages" or _str(metadata.get("phone_number_id")) != phone_number_id:
                ignored += 1
                continue
            names = {
                _str(c.get("wa_id")): _str(_dict(c.get("profile")).get("name"))
                for c in map(_dict, _list(value.get("contacts")))
            }
            for item in _list(value.get("messages")):
                message = customer_message(_dict(item), names, channel, media_link)
                if message is not None:
                    messages.append(message)
            for item in _list(value.get("statuses")):
                status = status_update(_dict(item))
                if status is not None:
                    statuses.append(status)
    return Notification(messages, statuses, ignored)
