"""Delivery statuses of sent messages (sent, delivered, read, failed) as the core's ``DeliveryStatus`` event,
shared by the channels whose platforms report them (WhatsApp statuses, Twilio status callbacks)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from bot_core.api import DeliveryStatus, DeliveryStatusValue

STATUSES: tuple[str, ...] = ("sent", "delivered", "read", "failed")


def delivery_status(
    channel: str,
    external_user_id: str,
    channel_message_id: str,
    status: str,
    *,
    error: str = "",
    timestamp: datetime | None = None,
    awaiting_customer: bool = False,
) -> DeliveryStatus | None:
    """The ``DeliveryStatus`` event for one status of a sent message; None for a status the core does not
    track (a platform's intermediate states: queued, accepted, sending)."""
    if status not in STATUSES:
        return None
    fields: dict[str, Any] = {}
    if timestamp is not None:
        fields["timestamp"] = timestamp
    return DeliveryStatus(
        channel=channel,
        external_user_id=external_user_id,
        channel_message_id=channel_message_id,
        status=cast(DeliveryStatusValue, status),
        error=error,
        awaiting_customer=awaiting_customer and status == "failed",
        **fields,
    )
