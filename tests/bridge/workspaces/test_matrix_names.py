"""A customer's display name and file names reach the room without control or bidi-override characters."""

from __future__ import annotations

import uuid
from typing import cast

from bot_core.events import Attachment
from bot_core.testing import MemoryChannel
from bridge.workspaces.matrix.appservice import MatrixWorkspace
from tests.bridge.workspaces.matrix_agent import Agent, room_of
from tests.bridge.workspaces.test_matrix_appservice import matrix_yaml
from tests.conftest import DeskFactory
from tests.matrix_server import SynapseInfo

TRICKY_NAME = "Eve\u202egnp.exe\x07 <i>Admin</i>\n(staff)"
SHOWN_NAME = "Evegnp.exe <i>Admin</i> (staff)"
TRICKY_FILE = "invoice\u202efdp.exe"


async def test_names_in_room_name_topic_ghost_card_and_file_are_cleaned(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent, file_host: str
) -> None:
    desk = await make_desk(
        sqlite_url, matrix_yaml(synapse), serve_http=True, http_port=synapse.appservice_port
    )
    channel = cast(MemoryChannel, desk.plugins["customers"])
    matrix = cast(MatrixWorkspace, desk.plugins["matrix"])
    user = f"eve-{uuid.uuid4().hex[:6]}"
    attachment = Attachment(kind="file", url=f"{file_host}/x", name=TRICKY_FILE, mime_type="image/png")
    await channel.customer_writes(user, "see attached", name=TRICKY_NAME, attachments=(attachment,))
    assert await desk.wait_settled(30)
    room_id = await room_of(user)
    await agent.sync_until(lambda: room_id in agent.timeline)  # joined: the room's state is readable

    name = await agent.client.room_get_state_event(room_id, "m.room.name")
    topic = await agent.client.room_get_state_event(room_id, "m.room.topic")
    assert name.content["name"] == f"{SHOWN_NAME} (Customers)"
    assert SHOWN_NAME in topic.content["topic"] and "\u202e" not in topic.content["topic"]
    profile = await agent.client.get_displayname(matrix.ghost_id("customers", user))
    assert profile.displayname == f"{SHOWN_NAME} (Customers)"

    await agent.sync_until(lambda: any(c.get("msgtype") == "m.file" for c in agent.messages(room_id)))
    file_event = next(c for c in agent.messages(room_id) if c.get("msgtype") == "m.file")
    assert file_event["filename"] == file_event["body"] == "invoicefdp.exe"

    pinned = await agent.client.room_get_state_event(room_id, "m.room.pinned_events")
    card_id = pinned.content["pinned"][0]
    await agent.sync_until(lambda: agent.event(room_id, card_id) is not None)
    card = agent.event(room_id, card_id)
    assert card is not None
    assert card["content"]["body"].startswith(f"Customer card: {SHOWN_NAME}\n")
    assert "&lt;i&gt;Admin&lt;/i&gt;" in card["content"]["formatted_body"]  # HTML shown as text
    assert "\u202e" not in card["content"]["body"] and "\x07" not in card["content"]["body"]
