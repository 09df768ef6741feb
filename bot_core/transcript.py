"""What a customer's own chat shows: their messages and the answers they were sent, as stored.

Channels that keep the conversation on their side (the web widget) read it from here instead of
from their own memory, so a customer who was away gets every answer when they come back. Internal
notes are never part of it, and neither is an agent message that a plugin kept from the customer
(only messages with a delivery to the customer in the outbox are).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from bot_core.delivery_notices import DELAY
from bot_core.events import Attachment
from storage.models import Conversation, Direction, Identity, Message, OutboxItem, OutboxStatus, OutboxTarget

Side = Literal["customer", "agent", "bot"]
RoomDelivery = Literal["", "pending", "undelivered"]


@dataclass(frozen=True)
class TranscriptEntry:
    """One message of a customer's chat, as it stands now (edits applied, deletions marked)."""

    message_id: int
    side: Side  # customer: they wrote it; agent: a person answered; bot: a plugin answered
    author: str  # the agent's name for agent messages
    text: str
    attachments: tuple[Attachment, ...]
    at: datetime
    channel_message_id: str | None  # the customer message's id on the channel
    in_room: bool  # a customer message already shown to the agents in the workspace room
    edited: bool
    deleted: bool
    room_delivery: RoomDelivery = ""
    """A customer message not in the room yet: ``pending`` (late, still retried) or ``undelivered``
    (given up); empty otherwise."""


async def customer_transcript(
    channel: str, external_user_id: str, *, after: int = 0, limit: int = 200
) -> list[TranscriptEntry]:
    """The newest ``limit`` messages (with an id above ``after``) this identity's channel carried in every
    conversation of its customer (what was written or sent on their other channels is not shown here)."""
    identity = await Identity.get_or_none(channel=channel, external_id=external_user_id)
    if identity is None:
        return []
    conversations = await Conversation.filter(customer_id=identity.customer_id).values_list("id", flat=True)
    if not conversations:
        return []
    rows = (
        await Message.filter(
            conversation_id__in=list(conversations),
            channel=channel,
            direction__in=[Direction.INBOUND, Direction.OUTBOUND],
            id__gt=after,
        )
        .order_by("-id")
        .limit(limit)
    )
    rows.reverse()
    outbound = [m.id for m in rows if m.direction is Direction.OUTBOUND]
    sent = set(
        await OutboxItem.filter(message_id__in=outbound, target=OutboxTarget.CUSTOMER).values_list(
            "message_id", flat=True
        )
        if outbound
        else []
    )
    late = await room_deliveries(
        [m.id for m in rows if m.direction is Direction.INBOUND and m.workspace_message_id is None]
    )
    entries: list[TranscriptEntry] = []
    for m in rows:
        if m.direction is Direction.OUTBOUND and m.id not in sent:
            continue
        side: Side = (
            "customer"
            if m.direction is Direction.INBOUND
            else "bot"
            if m.author.startswith("bot:")
            else "agent"
        )
        entries.append(
            TranscriptEntry(
                message_id=m.id,
                side=side,
                author=m.author,
                text=m.text,
                attachments=tuple(Attachment.model_validate(a) for a in m.attachments),
                at=m.created_at,
                channel_message_id=m.channel_message_id,
                in_room=m.workspace_message_id is not None,
                edited=m.edited_at is not None,
                deleted=any(e.get("deleted") for e in m.edits),
                room_delivery=late.get(m.id, ""),
            )
        )
    return entries


async def room_deliveries(message_ids: list[int]) -> dict[int, RoomDelivery]:
    """Which of these customer messages (not in the room yet) are late or were given up."""
    if not message_ids:
        return {}
    rows = await OutboxItem.filter(
        message_id__in=message_ids,
        target=OutboxTarget.ROOM,
        status__in=[OutboxStatus.PENDING, OutboxStatus.SENDING, OutboxStatus.FAILED],
    ).values("message_id", "status", "payload")
    found: dict[int, RoomDelivery] = {}
    for row in rows:
        payload = row["payload"] or {}
        if payload.get("kind") != "customer_message" or payload.get("edit"):
            continue
        if row["status"] == OutboxStatus.FAILED:
            found[row["message_id"]] = "undelivered"
        elif DELAY in payload:
            found[row["message_id"]] = "pending"
    return found
