"""Delivery statuses channels report (:class:`bot_core.events.DeliveryStatus`): kept on the message, shown
in the room.

A channel that learns what became of a message it sent (WhatsApp's and the web widget's receipts, a
failure reported later) hands a ``DeliveryStatus`` to ``services.inbound``; it is stored on the bus like
any inbound event and handled here. The message is found by (channel, channel_message_id); a status for
a message relaydesk does not know is logged and dropped. A status never goes back: ``sent`` <
``delivered`` < ``read``, and ``failed`` is final (one conditional update, so a status that arrives
twice, late or out of order changes nothing). The outbox itself marks a message ``sent`` when its channel
accepts it, and ``failed`` when it gives the delivery up.

What the room shows, each once (the outbox row's key is per message and status): ``delivered`` and
``read`` as a mark on the agent's message where the workspace can
(:class:`bot_core.adapters.DeliveryStatusWorkspace`; Matrix reacts to it), ``failed`` as a notice with the
platform's error. ``sent`` is not shown: every relayed message is sent. A failure the platform reports
as "only once the customer writes again" (``awaiting_customer``: WhatsApp's 131047 in a status) is not
recorded: the message is sent again and held (see :func:`handle`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bot_core.adapters import DeliveryStatusWorkspace
from bot_core.delivery_notices import preview
from bot_core.events import DeliveryStatus
from storage.models import Conversation, Direction, Message

if TYPE_CHECKING:
    from bot_core.conversation_service import ConversationService

log = logging.getLogger("relaydesk.delivery")

RANK = {"": 0, "sent": 1, "delivered": 2, "read": 3, "failed": 4}
"""A status replaces only a lower one: never backwards, and nothing replaces ``failed``."""

SHOWN_AS_MARK = frozenset({"delivered", "read"})


async def record(event: DeliveryStatus) -> Message | None:
    """Keep ``event``'s status on its message; the message if the status changed, else None."""
    message = await Message.filter(
        channel=event.channel, channel_message_id=event.channel_message_id, direction=Direction.OUTBOUND
    ).first()
    if message is None:
        log.info(
            "delivery status for an unknown message dropped",
            extra={
                "channel": event.channel,
                "channel_message_id": event.channel_message_id,
                "status": event.status,
            },
        )
        return None
    lower = [status for status, rank in RANK.items() if rank < RANK[event.status]]
    changed = await Message.filter(id=message.id, delivery_status__in=lower).update(
        delivery_status=event.status
    )
    if not changed:
        log.debug(
            "delivery status not newer: kept",
            extra={"message": message.id, "status": event.status},
        )
        return None
    message.delivery_status = event.status
    log.info(
        "delivery status",
        extra={"channel": event.channel, "message": message.id, "status": event.status},
    )
    return message


async def handle(event: DeliveryStatus, conversations: ConversationService) -> None:
    """Record ``event`` and show a change in the conversation's room (once per message and status).

    A ``failed`` with ``awaiting_customer`` (the platform refused it until the customer writes again) is
    not a failure: the message is sent again through the outbox (once per failed platform id), where the
    channel holds it until the customer writes, and the room is told as for any held reply.
    """
    if event.status == "failed" and event.awaiting_customer:
        sent = await Message.filter(
            channel=event.channel, channel_message_id=event.channel_message_id, direction=Direction.OUTBOUND
        ).first()
        if sent is not None and await conversations.outbox.send_again(sent, event.channel_message_id):
            log.info(
                "delivery refused until the customer writes: sent again, to be held",
                extra={"channel": event.channel, "message": sent.id},
            )
            return
    message = await record(event)
    if message is None:
        return
    if event.status != "failed" and event.status not in SHOWN_AS_MARK:
        return
    conversation = await Conversation.get_or_none(id=message.conversation_id)
    if conversation is None:
        return
    workspace = await conversations.room_workspace(conversation)
    if workspace is None:
        return
    outbox = conversations.outbox
    key = f"status:{message.id}:{event.status}"
    if event.status == "failed":
        error = event.error.strip() or "no reason given"
        text = (
            f'⚠ The customer did not get this message after all: "{preview(message.text)}". '
            f"{event.channel} reported it failed: {error}"
        )
        await outbox.enqueue_room(conversation, workspace, "notice", key=key, text=text)
    elif message.workspace_message_id and isinstance(outbox.adapter(workspace), DeliveryStatusWorkspace):
        # a mark on the agent's message (bot replies have none in the room)
        await outbox.enqueue_room(
            conversation, workspace, "status", key=key, message=message, details={"status": event.status}
        )
