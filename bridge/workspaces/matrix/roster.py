"""Who is invited to a new portal room: the configured agents and the members of a Matrix space."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from nio import AsyncClient, JoinedMembersResponse, JoinResponse, RoomResolveAliasResponse

from bridge.workspaces.matrix.errors import MatrixError


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


class AgentRoster:
    """The agents to invite: a fixed list, plus (when a space is configured) whoever is in the space."""

    def __init__(self, agents: list[str], space: str | None, is_ours: Callable[[str], bool]) -> None:
        self.agents = agents
        self.space = space
        self.space_id: str | None = None
        self._is_ours = is_ours

    async def start(self, client: AsyncClient) -> None:
        """Join the space, if one is configured (raises :class:`MatrixError` with the reason otherwise)."""
        if self.space:
            self.space_id = await join_space(client, self.space)

    async def invitees(self, client: AsyncClient) -> list[str]:
        """Who to invite to a room created now."""
        members = await space_members(client, self.space_id) if self.space_id else []
        return invitees(self.agents, members, self._is_ours)
