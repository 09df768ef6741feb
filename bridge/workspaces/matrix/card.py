"""The customer card a portal room pins: who the customer is, on which channels, status, owner, history."""

from __future__ import annotations

import html
from urllib.parse import quote

from bot_core.adapters import CustomerCard


def card_text(card: CustomerCard, room_id: str = "") -> tuple[str, str]:
    """The card as (plain text, HTML) for an m.notice; everything the customer typed is escaped.

    Earlier conversations link (matrix.to permalinks) to their first message in ``room_id``.
    """
    identities = [
        f"{i.channel}: {i.display_name or i.external_user_id}{'' if i.reachable else ' (unreachable)'}"
        for i in card.identities
    ]
    status = (
        f"Status: {card.state}"
        + (f", team {card.team}" if card.team else "")
        + (f", owner {card.assignee}" if card.assignee else "")
    )
    lines = [f"Customer card: {card.name}", status, "Identities: " + "; ".join(identities)]
    if card.tags:
        lines.append("Tags: " + ", ".join(card.tags))
    if card.attributes:
        lines.append("Details: " + ", ".join(f"{k}={v}" for k, v in sorted(card.attributes.items())))
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
