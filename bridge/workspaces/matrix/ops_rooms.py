"""Ops rooms (a team's alerts and digests): one Matrix room per ops channel, made exactly once.

They are made like portal rooms (:class:`bridge.workspaces.matrix.portal.PortalRooms`, in a plugin-state
scope of their own, ``ops_rooms``, keyed ``channel:<name>``): the creation is recorded before the room is
made, so a crash in between never makes a second one. (An alias would be simpler, but Synapse refuses
an application service's aliases outside the namespace its registration reserves, and relaydesk's
registration reserves none.) The agents are invited when it is made, with the portal rooms' power
levels (only relaydesk invites). The room carries ``org.relaydesk.ops`` state so that
``relaydesk matrix orphans`` never takes it for an orphan portal room.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from nio import AsyncClient, RoomCreateError, RoomPreset

from bot_core.api import AgentMessage
from bridge.workspaces.matrix.errors import check_response
from bridge.workspaces.matrix.portal import PortalRooms
from bridge.workspaces.matrix.roster import portal_power_levels

OPS_STATE = "org.relaydesk.ops"
"""The state event (state key "") naming an ops room's channel."""
STATE_SCOPE = "ops_rooms"


class OpsRooms:
    """Get-or-create of a workspace's ops rooms; room ids are cached once known."""

    def __init__(self, workspace: str, log: logging.Logger) -> None:
        self._made = PortalRooms(workspace, log, STATE_SCOPE)
        self._rooms: dict[str, str] = {}

    async def room(
        self, client: AsyncClient, channel: str, invitees: Callable[[], Awaitable[Sequence[str]]]
    ) -> str:
        """The room id of ``channel``'s ops room, made (agents from ``invitees()`` invited) the first time."""
        known = self._rooms.get(channel)
        if known is not None:
            return known

        async def create(marker: dict[str, Any]) -> str:
            agents = list(await invitees())
            for creator in (None, client.user_id):
                response = await client.room_create(
                    name=f"relaydesk {channel}",
                    topic=f"relaydesk's {channel} room: alerts and digests (not a customer conversation)",
                    federate=False,
                    preset=RoomPreset.private_chat,
                    invite=agents,
                    initial_state=[
                        marker,
                        {"type": OPS_STATE, "state_key": "", "content": {"channel": channel}},
                    ],
                    power_level_override=portal_power_levels(agents, creator),
                )
                # room versions before 12 need the creator listed in the power levels (12 refuses it)
                if not (
                    isinstance(response, RoomCreateError)
                    and "power_level_content_override" in (response.message or "")
                ):
                    break
            if isinstance(response, RoomCreateError):
                check_response(response, f"create the {channel} ops room")
            return str(response.room_id)

        room_id, _created = await self._made.get_or_create(client, f"channel:{channel}", create)
        self._rooms[channel] = room_id
        return room_id

    async def channel_of(self, room_id: str) -> str | None:
        """The ops channel whose room ``room_id`` is, or None (a portal room, a room not ours)."""
        for channel, known in self._rooms.items():
            if known == room_id:
                return channel
        for name, known in (await self._made.known()).items():
            if name.startswith("channel:") and known == room_id:
                channel = name.removeprefix("channel:")
                self._rooms[channel] = room_id
                return channel
        return None

    async def tag(self, message: AgentMessage) -> AgentMessage:
        """``message`` marked with its ops channel when it is a command typed in an ops room (the core
        then runs it without a conversation and answers in that room)."""
        if not message.text.lstrip().startswith("!") or message.edit_of or message.redacts:
            return message
        channel = await self.channel_of(message.room_id)
        return message.model_copy(update={"ops_channel": channel}) if channel else message


async def upload_image(client: AsyncClient, image: bytes, name: str) -> dict[str, Any]:
    """Upload a PNG into the media repository as ``client``; the ``m.image`` content showing it.

    A retried post uploads again (the homeserver keeps an unused copy) but shows once: the message
    itself carries the outbox key as its transaction id.
    """
    upload, _keys = await client.upload(
        io.BytesIO(image), content_type="image/png", filename=name, filesize=len(image)
    )
    mxc = str(check_response(upload, f"upload {name}").content_uri)
    info: dict[str, Any] = {"mimetype": "image/png", "size": len(image)}
    if image[:8] == b"\x89PNG\r\n\x1a\n" and len(image) >= 24:
        info["w"] = int.from_bytes(image[16:20], "big")
        info["h"] = int.from_bytes(image[20:24], "big")
    return {"msgtype": "m.image", "body": name, "filename": name, "url": mxc, "info": info}
