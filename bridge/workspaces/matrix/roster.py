"""Who the agents are: invited to each new portal room, and the only ones whose messages are relayed.

The configured ``agents`` list and the members of a Matrix space. Someone else who gets into a portal
room (invited by an agent in a room made before invites were locked, or by a homeserver admin) is not
an agent: their messages and commands are dropped, and the room is told so once per sender.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from nio import (
    AsyncClient,
    JoinedMembersResponse,
    JoinResponse,
    PresenceGetResponse,
    RoomGetStateEventResponse,
    RoomInviteError,
    RoomResolveAliasResponse,
)

from bot_core.api import Undeliverable
from bridge.workspaces.matrix.errors import MatrixError, check_response


async def join_space(client: AsyncClient, space: str) -> str:
    """Join the agents' space (by alias or room id) as the bridge's bot; its room id.

    The bot must be invited to the space, or the space must be joinable by anyone on the server.
    """
    room_id = space
    if space.startswith("#"):
        resolved = await client.room_resolve_alias(space)
        if not isinstance(resolved, RoomResolveAliasResponse):
            raise MatrixError(
                f"the agents' space {space} was not found: {getattr(resolved, 'message', resolved)}"
            )
        room_id = resolved.room_id
    joined = await client.join(room_id)
    if not isinstance(joined, JoinResponse):
        raise MatrixError(
            f"the bot {client.user_id} cannot join the agents' space {space}: "
            f"{getattr(joined, 'message', joined)} (invite the bot to the space)"
        )
    return room_id


async def space_members(client: AsyncClient, space_id: str) -> list[str]:
    """The user ids joined to the space now (asked at each new room, so new agents are included)."""
    response = await client.joined_members(space_id)
    if not isinstance(response, JoinedMembersResponse):
        raise MatrixError(f"members of the agents' space: {getattr(response, 'message', response)}")
    return [member.user_id for member in response.members]


def invitees(agents: Iterable[str], members: Iterable[str], is_ours: Callable[[str], bool]) -> list[str]:
    """The configured agents, then the space's members, without duplicates and without the bridge's users."""
    return [user for user in dict.fromkeys([*agents, *members]) if not is_ours(user)]


AGENT_POWER = 50  # agents talk, redact, pin the card; they do not invite, kick, ban or change the room
BRIDGE_POWER = 100
SPACE_MEMBERS_TTL = 60.0  # seconds a space member is taken as an agent without asking the homeserver
REFUSALS_REMEMBERED = 10_000


def portal_power_levels(agents: Iterable[str], creator: str | None = None) -> dict[str, Any]:
    """The ``power_level_content_override`` of a new portal room: only relaydesk invites.

    Inviting, kicking, banning and every state event but pins need :data:`BRIDGE_POWER`, which only
    the room's creator (relaydesk's bot) has; agents get :data:`AGENT_POWER`, the ghost the default 0.
    ``creator`` is listed only for room versions before 12 (version 12 refuses it: creators are above
    power levels). The ``events`` map replaces Synapse's default one, so it lists its entries again.
    """
    users = {agent: AGENT_POWER for agent in agents}
    if creator is not None:
        users[creator] = BRIDGE_POWER
    levels: dict[str, Any] = {"users": users} if users else {}  # none: Synapse's default (the creator)
    return levels | {
        "users_default": 0,
        "events_default": 0,
        "state_default": BRIDGE_POWER,
        "invite": BRIDGE_POWER,
        "kick": BRIDGE_POWER,
        "ban": BRIDGE_POWER,
        "redact": AGENT_POWER,
        "events": {
            "m.room.pinned_events": AGENT_POWER,
            "m.room.power_levels": BRIDGE_POWER,
            "m.room.join_rules": BRIDGE_POWER,
            "m.room.history_visibility": BRIDGE_POWER,
            "m.room.encryption": BRIDGE_POWER,
            "m.room.tombstone": BRIDGE_POWER,
            "m.room.server_acl": BRIDGE_POWER,
        },
    }


class AgentRoster:
    """The agents: a fixed list, plus (when a space is configured) whoever is in the space.

    It says whom to invite to a new room, and whether a sender is an agent (space members are
    cached for :data:`SPACE_MEMBERS_TTL` seconds; someone not in the cache is looked up again at once,
    so an agent who just joined the space is not refused).
    """

    def __init__(self, agents: list[str], space: str | None, is_ours: Callable[[str], bool]) -> None:
        self.agents = agents
        self.space = space
        self.space_id: str | None = None
        self._is_ours = is_ours
        self._members: frozenset[str] = frozenset()
        self._members_at = float("-inf")
        self._refused: OrderedDict[tuple[str, str], None] = OrderedDict()

    async def start(self, client: AsyncClient) -> None:
        """Join the space, if one is configured (raises :class:`MatrixError` with the reason otherwise)."""
        if self.space:
            self.space_id = await join_space(client, self.space)
            await self._space_members(client)

    async def invitees(self, client: AsyncClient) -> list[str]:
        """Who to invite to a room created now."""
        members = await self._space_members(client) if self.space_id else []
        return invitees(self.agents, members, self._is_ours)

    async def _space_members(self, client: AsyncClient) -> list[str]:
        assert self.space_id is not None
        members = await space_members(client, self.space_id)
        self._members, self._members_at = frozenset(members), time.monotonic()
        return members

    def known_agent(self, user_id: str) -> bool:
        """Whether ``user_id`` is an agent as far as known now, without asking the homeserver."""
        return user_id in self.agents or (self.space_id is not None and user_id in self._members)

    async def is_agent(self, client: AsyncClient, user_id: str) -> bool:
        """Whether ``user_id`` may act as an agent: configured, or a member of the space now."""
        if self._is_ours(user_id):
            return False
        if user_id in self.agents:
            return True
        if self.space_id is None:
            return False
        fresh = time.monotonic() - self._members_at < SPACE_MEMBERS_TTL
        if user_id in self._members and fresh:
            return True
        try:
            await self._space_members(client)
        except MatrixError:
            return user_id in self._members  # the homeserver is unreachable: keep the last answer
        return user_id in self._members

    async def admit(
        self,
        client: AsyncClient,
        room_id: str,
        sender: str,
        post_notice: Callable[[str], Awaitable[object]],
        log: logging.Logger,
    ) -> bool:
        """Whether ``sender``'s message in ``room_id`` is an agent's; if not, it is logged, the room is
        told once per sender (best effort: the message stays dropped either way) and False returned."""
        if await self.is_agent(client, sender):
            return True
        log.warning("message from a non-agent dropped", extra={"room": room_id, "sender": sender})
        if self.first_refusal(room_id, sender):
            try:
                await post_notice(refusal_notice(sender))
            except Exception as exc:
                log.warning("refusal notice not posted", extra={"error": repr(exc)[:300]})
        return False

    def first_refusal(self, room_id: str, user_id: str) -> bool:
        """True the first time ``user_id`` is refused in ``room_id`` (in this process): tell the room."""
        key = (room_id, user_id)
        if key in self._refused:
            return False
        self._refused[key] = None
        while len(self._refused) > REFUSALS_REMEMBERED:
            self._refused.popitem(last=False)
        return True


def refusal_notice(user_id: str) -> str:
    """What the room is told when someone who is not an agent writes in it."""
    return (
        f"⚠ {user_id} is not one of this desk's agents: their messages and commands are not sent to "
        "the customer (agents are the workspace's `agents` list and the members of its space)."
    )


async def invite_agent(client: AsyncClient, roster: AgentRoster, room_id: str, user_id: str) -> None:
    """``ctx.invite`` in Matrix (both modes): invite an agent to a portal room unless they are in it or invited.

    Only agents are invited (their messages are the only ones relayed); anyone else, or an invite the
    room refuses (a ban), is :class:`Undeliverable`, and the room is told by the outbox.
    """
    if not await roster.is_agent(client, user_id):
        raise Undeliverable(f"{user_id} is not one of this desk's agents (the agents list or the space)")
    member = await client.room_get_state_event(room_id, "m.room.member", user_id)
    if isinstance(member, RoomGetStateEventResponse) and member.content.get("membership") in (
        "join",
        "invite",
    ):
        return
    response = await client.room_invite(room_id, user_id)
    if isinstance(response, RoomInviteError) and response.status_code == "M_FORBIDDEN":
        raise Undeliverable(f"the homeserver refused to invite {user_id}: {response.message}")
    check_response(response, "invite agent")


MATRIX_USER_ID = re.compile(r"^@[^:\s]+:\S+$")


async def read_presence(client: AsyncClient, user_id: str, log: logging.Logger) -> str | None:
    """``user_id``'s presence (``online``, ``unavailable``, ``offline``) as the homeserver tells ``client``;
    None for an id that is not a Matrix id or when the server refuses (the bot shares no room with them).

    A homeserver with presence turned off answers ``offline`` for everyone: a team that follows presence
    needs it on (Synapse: ``presence: {enabled: true}``).
    """
    if not MATRIX_USER_ID.match(user_id):
        return None
    response = await client.get_presence(user_id)
    if not isinstance(response, PresenceGetResponse):
        log.info("matrix presence not read", extra={"user": user_id, "response": str(response)})
        return None
    return response.presence if response.presence in ("online", "unavailable", "offline") else None
