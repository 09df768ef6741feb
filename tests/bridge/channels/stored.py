"""What the core kept of a channel's reports, read so that these tests hold on a core with or without the
delivery-status and identity-linking work (their columns and tables are looked up by name)."""

from __future__ import annotations

import asyncio
from typing import Any

from storage import models
from storage.models import Customer, Message


async def status_of(channel: str, channel_message_id: str, wanted: str, timeout: float = 10.0) -> str:
    """The stored delivery status of the message, once it is ``wanted`` (or whatever it is at the deadline)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await Message.filter(channel=channel, channel_message_id=channel_message_id).values_list(
            "delivery_status", flat=True
        )
        status = str(found[0]) if found else ""
        if status == wanted or asyncio.get_running_loop().time() > deadline:
            return status
        await asyncio.sleep(0.05)


async def verified_phones() -> set[str]:
    """Every verified phone number the core kept: as linked contacts (``CustomerContact``), or as the
    customers' ``phone`` attribute where the core has no linking."""
    contact: Any = getattr(models, "CustomerContact", None)
    if contact is not None:
        return {str(v) for v in await contact.filter(kind="phone").values_list("value", flat=True)}
    return {str(c.attributes["phone"]) for c in await Customer.all() if "phone" in c.attributes}
