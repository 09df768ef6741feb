"""The room directory: which workspace shows a conversation, and in which of the customer's rooms.

A customer has at most one room per workspace (``Room``, unique on workspace and customer). Which
workspace hosts a conversation is decided here, and only here:

* the workspace of the conversation's team, when plugins.yaml's ``teams:`` section names one for it
  (``teams: {billing: {workspace: matrix_billing}}``) and that workspace plugin is enabled;
* otherwise the first workspace plugin in plugins.yaml.

The decision follows the configuration in force, not the room a conversation was bound to before: when
plugins.yaml names another workspace first (or a conversation is transferred to a team on another
workspace), the customer's next post opens (or reuses) their room in the new workspace, and a room id
of one workspace is never handed to another (:func:`bot_core.conversations.conversation_view` with
``workspace=``).

Ops rooms (alerts, digests) are per team too: :meth:`RoomDirectory.ops_target` names the workspace and
the channel (``ops-<team>``, or ``ops`` without a team) a plugin's ``services.post_to_ops`` posts to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from storage.models import Conversation, Team


def ops_channel(team: str | None) -> str:
    """The name of a team's ops channel (``ops`` for posts about no team)."""
    return f"ops-{team}" if team else "ops"


class RoomDirectory:
    """Answers "which workspace" for a conversation, a team, or a team's ops posts.

    ``workspaces`` returns the enabled workspace plugins in plugins.yaml order; ``teams`` the
    configured team → workspace mapping (plugins.yaml ``teams:``).
    """

    def __init__(
        self,
        workspaces: Callable[[], Sequence[str]],
        teams: Callable[[], Mapping[str, str]] = dict,
    ) -> None:
        self._workspaces = workspaces
        self._teams = teams
        self._team_names: dict[int, str] = {}  # team id -> name (a team is never renamed)

    def first_workspace(self) -> str | None:
        """The first workspace plugin in plugins.yaml (None when none is enabled)."""
        return next(iter(self._workspaces()), None)

    def workspace_for_team(self, team: str | None) -> str | None:
        """The workspace hosting ``team``'s conversations: its configured one if enabled, else the first."""
        if team:
            configured = self._teams().get(team)
            if configured and configured in self._workspaces():
                return configured
        return self.first_workspace()

    async def team_name(self, team_id: int | None) -> str | None:
        """The name of team ``team_id`` (cached: most conversations have none, and names never change)."""
        if team_id is None:
            return None
        name = self._team_names.get(team_id)
        if name is None:
            team = await Team.get_or_none(id=team_id)
            if team is None:
                return None
            name = self._team_names[team_id] = team.name
        return name

    async def workspace_of(self, conversation: Conversation) -> str | None:
        """The workspace whose room shows ``conversation`` now."""
        if conversation.team_id is None or not self._teams():
            return self.first_workspace()
        return self.workspace_for_team(await self.team_name(conversation.team_id))

    def ops_target(self, team: str | None) -> tuple[str | None, str]:
        """Where ops posts about ``team`` go: (workspace, channel name)."""
        return self.workspace_for_team(team), ops_channel(team)
