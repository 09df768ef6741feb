"""The customer card a portal room pins: who the customer is, on which channels, status, owner, history."""

from __future__ import annotations

import hashlib
import html
from typing import Any
from urllib.parse import quote

from nio import AsyncClient

from bot_core.api import CustomerCard, IdentityView, clean_display_name
from bridge.workspaces.matrix.errors import check_response
from bridge.workspaces.matrix.send import send_message


def _window(identity: IdentityView) -> str:
    """The identity's service window (WhatsApp's 24 hours), as the card says it."""
    if not identity.window_until:
        return ""
    if identity.window_open:
        return f" (window open until {identity.window_until})"
    return f" (window closed since {identity.window_until}: a reply waits for the customer)"


def card_text(card: CustomerCard, room_id: str = "") -> tuple[str, str]:
    """The card as (plain text, HTML) for an m.notice; everything the customer typed is escaped.

    Earlier conversations link (matrix.to permalinks) to their first message in ``room_id``.
    """
    identities = [
        f"{i.channel}: {clean_display_name(i.display_name) or i.external_user_id}"
        f"{'' if i.reachable else ' (unreachable)'}"
        f"{_window(i)}"
        f"{' ← replies go here' if i.replies and len(card.identities) > 1 else ''}"
        for i in card.identities
    ]
    status = (
        f"Status: {card.state}"
        + (f", team {card.team}" if card.team else "")
        + (f", owner {card.assignee}" if card.assignee else "")
    )
    lines = [
        f"Customer card: {clean_display_name(card.name, fallback='Customer')}",
        status,
        "Identities: " + "; ".join(identities),
    ]
    if card.tags:
        lines.append("Tags: " + ", ".join(card.tags))
    if card.attributes:
        lines.append("Details: " + ", ".join(f"{k}={v}" for k, v in sorted(card.attributes.items())))
    lines.extend(card.notes)  # the plugins' lines (ctx.card_note): open promises
    rich = [html.escape(line) for line in lines]
    rich[0] = f"<b>{rich[0]}</b>"
    if card.earlier_conversations:
        plain_items, rich_items = [], []
        for earlier in card.earlier_conversations:
            label = f"#{earlier.conversation_id} ({earlier.started_at}, {earlier.state})"
            if earlier.first_room_message_id and room_id:
                link = f"https://matrix.to/#/{quote(room_id)}/{quote(earlier.first_room_message_id)}"
                plain_items.append(f"{label} {link}")
                rich_items.append(f'<a href="{html.escape(link)}">{html.escape(label)}</a>')
            else:
                plain_items.append(label)
                rich_items.append(html.escape(label))
        lines.append("Earlier conversations: " + ", ".join(plain_items))
        rich.append("Earlier conversations: " + ", ".join(rich_items))
    return "\n".join(lines), "<br>".join(rich)


class PinnedCards:
    """Posts each room's customer card once, pins it, and edits it in place afterwards.

    The card's event id is remembered per room; after a restart it is read back from the room's
    ``m.room.pinned_events`` state. Each post's transaction id is the outbox row's key (or, without one,
    a digest of the room and the card's text), so a post retried after a crash shows once.
    """

    def __init__(self) -> None:
        self._events: dict[str, str] = {}
        self.device_id = ""  # for an appservice's own user: see :func:`send_message`

    async def show(self, client: AsyncClient, room_id: str, card: CustomerCard, key: str = "") -> None:
        """Post and pin ``card`` in ``room_id``, or edit the pinned one (an m.replace)."""
        plain, rich = card_text(card, room_id)
        txn = key or "card-" + hashlib.sha256(f"{room_id}\n{plain}".encode()).hexdigest()[:32]
        content: dict[str, Any] = {
            "msgtype": "m.notice",
            "body": plain,
            "format": "org.matrix.custom.html",
            "formatted_body": rich,
        }
        card_event = self._events.get(room_id) or await self._pinned(client, room_id)
        if card_event:
            edit = {
                "msgtype": "m.notice",
                "body": f"* {plain}",
                "m.new_content": content,
                "m.relates_to": {"rel_type": "m.replace", "event_id": card_event},
            }
            await send_message(client, room_id, edit, txn, "update card", self.device_id)
            return
        event_id = await send_message(client, room_id, content, txn, "post card", self.device_id)
        self._events[room_id] = event_id
        check_response(
            await client.room_put_state(room_id, "m.room.pinned_events", {"pinned": [event_id]}),
            "pin card",
        )

    async def _pinned(self, client: AsyncClient, room_id: str) -> str | None:
        response = await client.room_get_state_event(room_id, "m.room.pinned_events")
        pinned = getattr(response, "content", {}).get("pinned") or []
        if pinned:
            self._events[room_id] = str(pinned[0])
            return str(pinned[0])
        return None
