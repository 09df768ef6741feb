"""Waiting for a message's delivery status as the core keeps it (the column comes with the core's delivery
tracking; read by name so this module also loads on a core without it)."""

from __future__ import annotations

import asyncio

from storage.models import Message


async def status_of(channel: str, channel_message_id: str, wanted: str, timeout: float = 10.0) -> str:
    """The stored status of the message, once it is ``wanted`` (or whatever it is at the deadline)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await Message.filter(channel=channel, channel_message_id=channel_message_id).values_list(
            "delivery_status", flat=True
        )
        status = str(found[0]) if found else ""
        if status == wanted or asyncio.get_running_loop().time() > deadline:
            return status
        await asyncio.sleep(0.05)
