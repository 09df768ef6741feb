"""The customer card a portal room pins: who the customer is, on which channels, status, owner, history."""

from __future__ import annotations

import html

from bot_core.adapters import CustomerCard


def card_text(card: CustomerCard) -> tuple[str, str]:
    """The card as (plain text, HTML) for an m.notice; everything the customer typed is escaped."""
    identities = [
        f"{i.channel}: {i.display_name or i.external_user_id}{'' if i.reachable else ' (unreachable)'}"
        for i in card.identities
    ]
    lines = [
        f"Customer card: {card.name}",
        f"Status: {card.state}"
        + (f", team {card.team}" if card.team else "")
        + (f", owner {card.assignee}" if card.assignee else ""),
        "Identities: " + "; ".join(identities),
    ]
    if card.tags:
        lines.append("Tags: " + ", ".join(card.tags))
    if card.attributes:
        lines.append("Details: " + ", ".join(f"{k}={v}" for k, v in sorted(card.attributes.items())))
    if card.earlier_conversations:
        lines.append("Earlier conversations: " + ", ".join(f"#{c}" for c in card.earlier_conversations))
    plain = "\n".join(lines)
    rich = "<br>".join(html.escape(line) for line in lines)
    return plain, f"<b>{html.escape(lines[0])}</b><br>" + rich.split("<br>", 1)[1]
