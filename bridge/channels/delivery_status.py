"""Delivery statuses of sent messages (sent, delivered, read, failed) as the core's ``DeliveryStatus`` event.

The event is the contract between channels and the core's delivery tracking (HELPERS.md contract 1,
built on another branch): until ``bot_core.api`` exports ``DeliveryStatus``, :func:`delivery_status`
returns None and the channels acknowledge statuses without handing them on (logged at DEBUG).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import bot_core.api as api

STATUSES = ("sent", "delivered", "read", "failed")


def available() -> bool:
    """Whether this relaydesk has the core side of delivery statuses."""
    return hasattr(api, "DeliveryStatus")


def delivery_status(
    channel: str,
    external_user_id: str,
    channel_message_id: str,
    status: str,
    *,
    error: str = "",
    timestamp: datetime | None = None,
) -> Any | None:
    """The ``DeliveryStatus`` event for one status of a sent message, or None without the core side."""
    cls = getattr(api, "DeliveryStatus", None)
    if cls is None or status not in STATUSES:
        return None
    fields: dict[str, Any] = {
        "channel": channel,
        "external_user_id": external_user_id,
        "channel_message_id": channel_message_id,
        "status": status,
        "error": error,
    }
    if timestamp is not None:
        fields["timestamp"] = timestamp
    return cls(**fields)
