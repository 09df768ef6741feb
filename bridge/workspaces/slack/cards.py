"""The customer card as Slack blocks: who the customer is, the conversation's state, and the buttons.

Everything that comes from a customer is plain text (``plain_text`` objects, or escaped mrkdwn), so a
name like ``<!channel>`` shows as written. The action block carries the room id in each button's value
(Claim, Close, Note in thread rooms) and in the Transfer menu's option values (``<team> <room>``).
"""

from __future__ import annotations

from typing import Any

from bot_core.api import ConversationView, CustomerCard, IdentityView
from bridge.workspaces.slack.text import escape

CLAIM, CLOSE, TRANSFER, NOTE, UNDO = (
    "relay_claim",
    "relay_close",
    "relay_transfer",
    "relay_note",
    "relay_undo",
)
NOTE_VIEW = "relay_note_view"
NOTE_SHORTCUT = "relay_note_shortcut"  # the message shortcut "Internal note" (docs/slack-manifest.yaml)


def customer_label(name: str, channel: str) -> str:
    """How a customer is named in Slack: ``Anna (Telegram)``."""
    return f"{name or 'Customer'} ({channel.capitalize()})"


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text[:3000] or " ", "emoji": False}


def _window(identity: IdentityView) -> str:
    """The identity's service window (WhatsApp's 24 hours), as the card says it."""
    if not identity.window_until:
        return ""
    if identity.window_open:
        return f" (window open until {identity.window_until})"
    return f" (window closed since {identity.window_until}: a reply waits for the customer)"


def card_text(card: CustomerCard) -> str:
    """The card as one line of text (notifications and clients without blocks), escaped."""
    owner = f", {card.assignee}" if card.assignee else ""
    team = f", team {card.team}" if card.team else ""
    return escape(f"{card.name}: {card.state}{team}{owner}")


def card_blocks(
    card: CustomerCard, room_id: str, teams: list[str], *, notes_button: bool
) -> list[dict[str, Any]]:
    """The card's blocks with its buttons (no buttons once the conversation is closed)."""
    lines = [
        f"{i.display_name or i.external_user_id} on {i.channel}"
        + ("" if i.reachable else " (unreachable)")
        + _window(i)
        + (" ← replies go here" if i.replies and len(card.identities) > 1 else "")
        for i in card.identities
    ]
    facts = [f"State: {card.state}", f"Team: {card.team or '-'}", f"Owner: {card.assignee or 'nobody'}"]
    if card.tags:
        facts.append("Tags: " + ", ".join(card.tags))
    for key, value in sorted(card.attributes.items())[:10]:
        facts.append(f"{key}: {value}")
    if card.earlier_conversations:
        facts.append(f"Earlier conversations: {len(card.earlier_conversations)}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(card.name or "Customer")},
        {"type": "section", "text": _plain("\n".join(lines + facts))},
    ]
    if card.state != "closed":
        blocks.append(action_block(room_id, teams, notes_button=notes_button))
    return blocks


def first_card_blocks(view: ConversationView) -> tuple[str, list[dict[str, Any]]]:
    """The root message of a thread room before the full card is known (text, blocks)."""
    label = customer_label(view.customer_name, view.channel)
    return escape(f"{label}: new conversation"), [
        {"type": "header", "text": _plain(label)},
        {"type": "section", "text": _plain(f"State: {view.state}")},
    ]


def action_block(room_id: str, teams: list[str], *, notes_button: bool) -> dict[str, Any]:
    """Claim, Close, Transfer (a menu of the teams) and, in thread rooms, Note."""
    elements: list[dict[str, Any]] = [
        {"type": "button", "action_id": CLAIM, "text": _plain("Claim"), "value": room_id, "style": "primary"},
        {"type": "button", "action_id": CLOSE, "text": _plain("Close"), "value": room_id},
    ]
    if teams:
        elements.append(
            {
                "type": "static_select",
                "action_id": TRANSFER,
                "placeholder": _plain("Transfer to…"),
                "options": [{"text": _plain(t), "value": f"{t} {room_id}"} for t in teams[:100]],
            }
        )
    if notes_button:
        elements.append({"type": "button", "action_id": NOTE, "text": _plain("Note"), "value": room_id})
    return {"type": "actions", "block_id": "relay_card", "elements": elements}


def undo_blocks(seconds: float, message_id: str) -> tuple[str, list[dict[str, Any]]]:
    """The ephemeral "sending in N s" message with its Undo button."""
    text = f"Sending to the customer in {seconds:g} s."
    return text, [
        {
            "type": "section",
            "text": _plain(text),
            "accessory": {"type": "button", "action_id": UNDO, "text": _plain("Undo"), "value": message_id},
        }
    ]


def note_view(room_id: str) -> dict[str, Any]:
    """The modal in which an agent writes an internal note (thread rooms)."""
    return {
        "type": "modal",
        "callback_id": NOTE_VIEW,
        "private_metadata": room_id,
        "title": _plain("Internal note"),
        "submit": _plain("Save note"),
        "blocks": [
            {
                "type": "input",
                "block_id": "note",
                "label": _plain("Note (never sent to the customer)"),
                "element": {"type": "plain_text_input", "action_id": "text", "multiline": True},
            }
        ],
    }
