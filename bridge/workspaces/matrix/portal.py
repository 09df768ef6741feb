"""Portal rooms made exactly once per customer and workspace, even when relaydesk dies while making one.

The homeserver creates a room before relaydesk can store it, so a crash in between used to leave that
room behind and make another at the next start. Here the intent is recorded first (a random creation
key, kept in the plugin state of the desk's database), the room is created with that key in its state
(``org.relaydesk.portal``), and the room id is recorded as soon as the homeserver answers. A later call
for the same customer (a retry, or a new process after a crash) adopts the recorded room, or finds the
room carrying the key among the rooms the bridge is in, before it creates anything. A lock per customer
keeps two calls of one process from racing each other.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from nio import AsyncClient, JoinedRoomsResponse, RoomGetStateEventResponse

from bot_core.api import StateStore
from bridge.workspaces.matrix.errors import MatrixError, check_response

PORTAL_STATE = "org.relaydesk.portal"
"""The state event (state key "") holding a portal room's creation key and customer id."""
STATE_SCOPE = "portal_rooms"


def intent_key(customer_id: int) -> str:
    """The plugin-state key under which a customer's room creation is recorded."""
    return f"customer:{customer_id}"


class PortalRooms:
    """Get-or-create of a workspace's portal rooms: one room per customer, whatever crashes when."""

    def __init__(self, workspace: str, log: logging.Logger, scope: str = STATE_SCOPE) -> None:
        self._state = StateStore(workspace, scope)
        self._locks: dict[int | str, asyncio.Lock] = {}
        self._log = log

    async def get_or_create(
        self,
        client: AsyncClient,
        customer_id: int | str,
        create: Callable[[dict[str, Any]], Awaitable[str]],
    ) -> tuple[str, bool]:
        """The customer's room id, and whether it was created now (False: adopted from an earlier try).

        A string ``customer_id`` names a room of another kind (an ops channel: ``channel:<name>``).

        ``create(marker)`` makes the room with ``marker`` among its initial state events and returns its
        id; ``client`` acts as the bridge (it created the room and is a member of it).
        """
        lock = self._locks.setdefault(customer_id, asyncio.Lock())
        async with lock:
            name = intent_key(customer_id) if isinstance(customer_id, int) else customer_id
            intent = await self._state.get(name) or {}
            key = intent.get("key")
            if key:
                room_id = intent.get("room_id") or await self._find(client, key)
                if room_id and await self._is_ours(client, room_id, key):
                    await self._state.set(name, {"key": key, "room_id": room_id})
                    self._log.info(
                        "portal room adopted",
                        extra={"customer_id": customer_id, "room": room_id},
                    )
                    return room_id, False
                if room_id:
                    key = None  # that room was closed since: make a new one under a new key
            if not key:
                key = secrets.token_hex(16)
                await self._state.set(name, {"key": key})
            marker = {
                "type": PORTAL_STATE,
                "state_key": "",
                "content": {"key": key, "customer_id": customer_id},
            }
            room_id = await create(marker)
            await self._state.set(name, {"key": key, "room_id": room_id})
            return room_id, True

    async def known(self) -> dict[str, str]:
        """Every room made so far, by its state key (``customer:<id>``, ``channel:<name>``) → room id."""
        return {
            name: str(intent["room_id"])
            for name, intent in (await self._state.items()).items()
            if isinstance(intent, dict) and intent.get("room_id")
        }

    async def _find(self, client: AsyncClient, key: str) -> str | None:
        """The room among the bridge's rooms whose creation key is ``key`` (only after a crash)."""
        joined = check_response(await client.joined_rooms(), "list the bridge's rooms")
        assert isinstance(joined, JoinedRoomsResponse)
        for room_id in joined.rooms:
            if await marker_key(client, room_id) == key:
                return str(room_id)
        return None

    async def _is_ours(self, client: AsyncClient, room_id: str, key: str) -> bool:
        """True while the bridge is in ``room_id`` and the room carries ``key``."""
        assert client.user_id
        member = await state_content(client, room_id, "m.room.member", client.user_id)
        if member is None or member.get("membership") != "join":
            return False
        return await marker_key(client, room_id) == key


async def state_content(
    client: AsyncClient, room_id: str, kind: str, state_key: str
) -> dict[str, Any] | None:
    """A state event's content; None when the room has no such state or the bridge may not read it.

    Any other failure raises :class:`MatrixError` (the outbox retries): deciding on a guess could make
    a second room.
    """
    response = await client.room_get_state_event(room_id, kind, state_key)
    if isinstance(response, RoomGetStateEventResponse):
        return dict(response.content)
    if getattr(response, "status_code", None) in ("M_NOT_FOUND", "M_FORBIDDEN"):
        return None
    check_response(response, f"read {kind} in {room_id}")
    raise MatrixError(f"read {kind} in {room_id}: {response}")


async def marker_key(client: AsyncClient, room_id: str) -> str | None:
    """The creation key in ``room_id``'s portal state, or None (no such state, or not readable)."""
    content = await state_content(client, room_id, PORTAL_STATE, "")
    key = content.get("key") if content else None
    return key if isinstance(key, str) else None
