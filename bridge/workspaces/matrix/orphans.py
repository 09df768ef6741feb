"""Finding and closing orphan portal rooms: rooms the bridge made that no conversation uses.

Before portal rooms were made exactly once (:mod:`bridge.workspaces.matrix.portal`), a crash between
the homeserver creating a room and relaydesk storing it left the room behind, with the customer's
ghost and the agents invited, and the next start made another one. An orphan is a room the bridge's
bot created and is still in that is neither stored for this workspace nor a creation in progress (a
room carrying the creation key recorded for a customer who has no stored room yet: the next delivery
adopts it). Spaces and rooms
made by others (the agents' space, say) are never orphans.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from nio import AsyncClient, JoinedRoomsResponse, RoomGetStateResponse

from bridge.workspaces.matrix.errors import MatrixError, check_response
from bridge.workspaces.matrix.ops_rooms import OPS_STATE
from bridge.workspaces.matrix.portal import PORTAL_STATE

CLOSE_REASON = "relaydesk: duplicate portal room, closed (the customer's conversation is in another room)"


@dataclass(frozen=True)
class Orphan:
    """A portal room no conversation uses: its id, name and the people still in or invited to it."""

    room_id: str
    name: str
    members: tuple[str, ...]


async def find_orphans(
    client: AsyncClient, stored: Collection[str], pending_keys: Collection[str] = ()
) -> list[Orphan]:
    """The orphan rooms among those ``client`` (the bridge's bot) is in.

    ``stored`` are the room ids the desk's database knows for this workspace; ``pending_keys`` the
    creation keys of rooms being made (recorded, not stored yet).
    """
    joined = check_response(await client.joined_rooms(), "list the bridge's rooms")
    assert isinstance(joined, JoinedRoomsResponse)
    orphans = []
    for room_id in joined.rooms:
        if room_id in stored:
            continue
        state = await client.room_get_state(room_id)
        if not isinstance(state, RoomGetStateResponse):
            raise MatrixError(f"read the state of {room_id}: {getattr(state, 'message', state)}")
        orphan = _orphan(client.user_id, room_id, state.events, pending_keys)
        if orphan is not None:
            orphans.append(orphan)
    return orphans


def _orphan(
    bot: str, room_id: str, events: list[dict[str, Any]], pending_keys: Collection[str]
) -> Orphan | None:
    by_type: Mapping[tuple[str, str], dict[str, Any]] = {
        (e.get("type", ""), e.get("state_key", "")): e for e in events
    }
    create = by_type.get(("m.room.create", ""))
    if create is None or create.get("sender") != bot or create.get("content", {}).get("type") == "m.space":
        return None
    if (OPS_STATE, "") in by_type:
        return None  # an ops room (alerts, digests), not a portal room
    marker = by_type.get((PORTAL_STATE, ""), {}).get("content", {})
    if marker.get("key") in pending_keys:
        return None
    members = tuple(
        sorted(
            key
            for (kind, key), event in by_type.items()
            if kind == "m.room.member"
            and key != bot
            and event.get("content", {}).get("membership") in ("join", "invite")
        )
    )
    name = str(by_type.get(("m.room.name", ""), {}).get("content", {}).get("name", ""))
    return Orphan(room_id, name, members)


async def close_orphan(client: AsyncClient, orphan: Orphan) -> None:
    """Close ``orphan``: everyone in it is removed (invitations withdrawn), then the bridge leaves."""
    for member in orphan.members:
        check_response(await client.room_kick(orphan.room_id, member, CLOSE_REASON), f"remove {member}")
    check_response(await client.room_leave(orphan.room_id), "leave the room")
