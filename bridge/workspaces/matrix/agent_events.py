"""Matrix room events written by agents, as the engine's :class:`AgentMessage` (both workspace modes)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bot_core.api import AgentMessage, utcnow
from bridge.workspaces.matrix.media import agent_attachment

log = logging.getLogger("relaydesk.matrix.events")


def without_reply_fallback(body: str) -> str:
    """Drop the quoted "> <@user> ..." lines that clients put before a reply's text."""
    lines = body.split("\n")
    index = 0
    while index < len(lines) and lines[index].startswith(">"):
        index += 1
    if index and index < len(lines) and lines[index] == "":
        return "\n".join(lines[index + 1 :])
    return body


def agent_message(
    workspace: str,
    is_ours: Callable[[str], bool],
    room_id: str,
    event: dict[str, Any],
    media_link: Callable[[str, str], str] | None = None,
) -> AgentMessage | None:
    """An agent's text, file, edit or deletion as an :class:`AgentMessage`; None for anything else.

    ``is_ours`` tells the bridge's own users (its bot, its ghosts): their events (the customers' messages,
    notices, the card) are never agent messages. ``media_link(mxc, room_id)`` turns an ``mxc://`` URI into the signed
    URL a channel fetches the file from; without it, agents' files are not relayed. An event whose fields
    have the wrong shape (a homeserver bug, or whoever holds the token) is skipped with one INFO line.
    """
    try:
        return _agent_message(workspace, is_ours, room_id, event, media_link)
    except (AttributeError, TypeError, ValueError) as exc:
        log.info(
            "malformed room event skipped",
            extra={
                "room": room_id[:200],
                "event": str(event.get("event_id", ""))[:200],
                "error": type(exc).__name__,
            },
        )
        return None


def _agent_message(
    workspace: str,
    is_ours: Callable[[str], bool],
    room_id: str,
    event: dict[str, Any],
    media_link: Callable[[str, str], str] | None = None,
) -> AgentMessage | None:
    """An agent's text, file, edit or deletion as an :class:`AgentMessage`; None for anything else.

    ``is_ours`` tells the bridge's own users (its bot, its ghosts): their events (the customers' messages,
    notices, the card) are never agent messages. ``media_link(mxc, room_id)`` turns an ``mxc://`` URI into the signed
    URL a channel fetches the file from; without it, agents' files are not relayed.
    """
    sender = event.get("sender")
    event_id = event.get("event_id")
    if not sender or is_ours(str(sender)) or not event_id:
        return None
    content = event.get("content") or {}
    sent_at = event.get("origin_server_ts")
    common: dict[str, Any] = {
        "workspace": workspace,
        "room_id": room_id,
        "external_message_id": str(event_id),
        "agent_id": str(sender),
        "agent_name": str(sender).split(":", 1)[0].lstrip("@"),
        "timestamp": datetime.fromtimestamp(sent_at / 1000, UTC) if isinstance(sent_at, int) else utcnow(),
    }
    if event.get("type") == "m.room.redaction":
        redacts = event.get("redacts") or content.get("redacts")  # room version 11 moved it into content
        return AgentMessage(**common, redacts=str(redacts)) if redacts else None
    if event.get("type") != "m.room.message":
        return None
    url = content.get("url")
    if media_link is not None and isinstance(url, str) and url.startswith("mxc://"):
        attachment = agent_attachment(content, media_link(url, room_id))
        if attachment is not None:
            return AgentMessage(**common, attachments=(attachment,))
    if content.get("msgtype") not in ("m.text", "m.emote"):
        return None  # notices (bots), redacted events (empty content), media without a link
    relates = content.get("m.relates_to") or {}
    edit_of = relates.get("event_id") if relates.get("rel_type") == "m.replace" else None
    body = (content.get("m.new_content") or {}).get("body") if edit_of else content.get("body")
    if not isinstance(body, str):
        return None
    if relates.get("m.in_reply_to"):
        body = without_reply_fallback(body)
    return AgentMessage(**common, text=body, edit_of=edit_of)
