"""Text between customers and Slack: escaping, folding, channel names, and agents' mrkdwn made plain.

A customer's text is shown as text: ``&``, ``<`` and ``>`` are escaped (so ``<!channel>``, ``<@U123>`` and
``<https://evil|click here>`` are never parsed as mentions or links), and posts carry ``link_names:
false`` and ``mrkdwn: false`` (so a bare ``@here`` notifies no one). Long texts are folded: the room
shows the first lines and the whole text goes into the message's thread.
"""

from __future__ import annotations

import re
import unicodedata

from bot_core.api import Attachment

MAX_NAME = 80
MAX_POST = 3900  # characters per chat.postMessage text we send (Slack truncates past 40,000; blocks 3,000)
_NAME_CHARS = re.compile(r"[^a-z0-9_-]+")
_TOKEN = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")


def escape(text: str) -> str:
    """``text`` as Slack shows it literally: the three control characters escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def channel_name(prefix: str, customer_name: str, customer_id: int) -> str:
    """A valid, readable private channel name: ``support-anna-muller-42`` (lowercase letters, digits,
    hyphens and underscores, at most 80 characters, unique through the customer id)."""
    ascii_name = unicodedata.normalize("NFKD", customer_name).encode("ascii", "ignore").decode().lower()
    slug = _NAME_CHARS.sub("-", ascii_name).strip("-_") or "customer"
    head = _NAME_CHARS.sub("-", prefix.lower()).strip("-_")
    tail = f"-{customer_id}"
    room = MAX_NAME - len(tail) - (len(head) + 1 if head else 0)
    slug = slug[: max(room, 1)].rstrip("-_") or "c"
    return (f"{head}-{slug}" if head else slug) + tail


def fold(text: str, max_lines: int, max_chars: int) -> tuple[str, str | None]:
    """(what the room shows, the whole text for the thread or None when it fits)."""
    lines = text.splitlines()
    if len(lines) <= max_lines and len(text) <= max_chars:
        return text, None
    head = "\n".join(lines[:max_lines])[:max_chars].rstrip()
    return head + "\n… (show more: the whole message is in the thread)", text


def chunks(text: str, size: int = MAX_POST) -> list[str]:
    """``text`` cut into posts of at most ``size`` characters, at line ends where possible."""
    parts: list[str] = []
    while len(text) > size:
        cut = text.rfind("\n", 0, size)
        cut = cut if cut > size // 2 else size
        parts.append(text[:cut])
        text = text[cut:].lstrip("\n")
    parts.append(text)
    return parts


def attachment_lines(attachments: tuple[Attachment, ...]) -> list[str]:
    """Files that could not be copied, listed with their link."""
    return [
        f"[{a.kind}: {a.name or a.mime_type or a.kind}]" + (f" {a.url}" if a.url else "") for a in attachments
    ]


def plain_from_mrkdwn(text: str, names: dict[str, str] | None = None) -> str:
    """An agent's Slack text as plain text for the customer: links as ``label (url)``, mentions as names,
    entities decoded."""

    def token(m: re.Match[str]) -> str:
        target, label = m.group(1), m.group(2)
        if target.startswith("@"):
            return "@" + (label or (names or {}).get(target[1:], target[1:]))
        if target.startswith("#"):
            return "#" + (label or target[1:])
        if target.startswith("!"):
            return "@" + (label or target[1:].split("^")[0])
        if label and label != target:
            return f"{label} ({target.removeprefix('mailto:')})"
        return target.removeprefix("mailto:")

    return _TOKEN.sub(token, text).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
