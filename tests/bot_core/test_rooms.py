"""The room directory: which workspace and room show a conversation (issue 19 point 8)."""

from __future__ import annotations

from typing import cast

import pytest

from bot_core.config import ConfigError, parse_config
from bot_core.testing import MemoryChannel, MemoryWorkspace
from storage.models import Conversation, Room
from tests.conftest import DeskFactory

A_FIRST = """
plugins:
  - customers: {use: "bot_core.testing:MemoryChannel"}
  - ws_a: {use: "bot_core.testing:MemoryWorkspace"}
"""

B_FIRST = """
plugins:
  - customers: {use: "bot_core.testing:MemoryChannel"}
  - ws_b: {use: "bot_core.testing:MemoryWorkspace"}
  - ws_a: {use: "bot_core.testing:MemoryWorkspace"}
"""


def _plugin(desk: object, name: str) -> object:
    return desk.plugins[name]  # type: ignore[attr-defined]


async def test_a_new_first_workspace_gets_a_room_of_its_own(
    database_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(database_url, A_FIRST)
    channel = cast(MemoryChannel, _plugin(desk, "customers"))
    ws_a = cast(MemoryWorkspace, _plugin(desk, "ws_a"))
    await channel.customer_writes("u1", "hello A")
    await ws_a.posts.wait_for(lambda items: any(p.kind == "customer_message" for _, p in items))
    a_room = ws_a.room_of("u1").room_id
    assert await desk.wait_settled(10)
    await desk.stop(timeout=5)

    # restart with workspace B named first: the customer's next message opens a room in B
    desk = await make_desk(database_url, B_FIRST)
    channel = cast(MemoryChannel, _plugin(desk, "customers"))
    ws_b = cast(MemoryWorkspace, _plugin(desk, "ws_b"))
    await channel.customer_writes("u1", "hello B")
    posts = await ws_b.posts.wait_for(lambda items: any(p.kind == "customer_message" for _, p in items))
    b_room = next(r for r, p in posts if p.kind == "customer_message")
    assert b_room != a_room
    assert ws_b.texts(b_room, "customer_message") == ["hello B"]
    assert all(view.existing_room_id != a_room for view in ws_b.rooms_asked), "A's room id given to B"
    assert a_room not in ws_b.rooms
    rooms = {(r.workspace, r.external_id) for r in await Room.all()}
    assert rooms == {("ws_a", a_room), ("ws_b", b_room)}
    conversation = await Conversation.filter().order_by("-id").first()
    assert conversation is not None
    bound = await Room.get(id=conversation.room_id)
    assert (bound.workspace, bound.external_id) == ("ws_b", b_room)


TWO_TEAMS = """
plugins:
  - customers: {use: "bot_core.testing:MemoryChannel"}
  - support: {use: "bot_core.testing:MemoryWorkspace"}
  - billing_ws: {use: "bot_core.testing:MemoryWorkspace"}
teams:
  billing: {workspace: billing_ws}
  sales: {}
"""


async def test_teams_on_two_workspaces_and_a_transfer_between_them(
    database_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(database_url, TWO_TEAMS)
    channel = cast(MemoryChannel, _plugin(desk, "customers"))
    support = cast(MemoryWorkspace, _plugin(desk, "support"))
    billing = cast(MemoryWorkspace, _plugin(desk, "billing_ws"))

    await channel.customer_writes("u1", "my invoice is wrong")
    await support.posts.wait_for(lambda items: any(p.kind == "customer_message" for _, p in items))
    old_room = support.room_of("u1").room_id
    assert not billing.rooms  # no team yet: the first workspace hosts it

    # an agent transfers it to billing, whose rooms are in the other workspace
    await support.agent_writes(old_room, "!transfer billing")
    posts = await billing.posts.wait_for(
        lambda items: any(p.kind == "notice" and "Transferred to billing" in p.text for _, p in items)
    )
    new_room = billing.room_of("u1").room_id
    assert {r for r, _ in posts} == {new_room}
    assert billing.rooms[new_room].card is not None
    assert billing.rooms_asked[0].existing_room_id is None  # the support room's id is not handed over
    await support.posts.wait_for(
        lambda items: any(
            r == old_room and p.kind == "notice" and "continues there" in p.text and "billing_ws" in p.text
            for r, p in items
        )
    )

    # the customer's next message, and the agent's answer, go through the billing room
    await channel.customer_writes("u1", "any news?")
    await billing.posts.wait_for(lambda items: any(r == new_room and p.text == "any news?" for r, p in items))
    assert "any news?" not in support.texts(old_room)
    await billing.agent_writes(new_room, "Fixed, sorry!", agent="@bea")
    await channel.sent.wait_for(lambda items: any(d.text == "Fixed, sorry!" for d in items))
    assert await desk.wait_settled(10)
    rows = {(r.workspace, r.external_id) for r in await Room.all()}
    assert rows == {("support", old_room), ("billing_ws", new_room)}


async def test_a_team_without_a_workspace_of_its_own_stays_in_the_first(
    database_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(database_url, TWO_TEAMS)
    channel = cast(MemoryChannel, _plugin(desk, "customers"))
    support = cast(MemoryWorkspace, _plugin(desk, "support"))
    billing = cast(MemoryWorkspace, _plugin(desk, "billing_ws"))
    await channel.customer_writes("u2", "a question for sales")
    await support.posts.wait_for(lambda items: any(p.kind == "customer_message" for _, p in items))
    room = support.room_of("u2").room_id
    await support.agent_writes(room, "!transfer sales")
    await support.posts.wait_for(
        lambda items: any(r == room and "Transferred to sales" in p.text for r, p in items)
    )
    assert await desk.wait_settled(10)
    assert not billing.rooms


async def test_ops_posts_go_to_the_teams_workspace_once_per_key(
    database_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(database_url, TWO_TEAMS)
    support = cast(MemoryWorkspace, _plugin(desk, "support"))
    billing = cast(MemoryWorkspace, _plugin(desk, "billing_ws"))
    services = cast(MemoryChannel, _plugin(desk, "customers")).services
    await services.post_to_ops("billing", "3 invoices waiting", key="digest:1")
    await services.post_to_ops("billing", "3 invoices waiting", key="digest:1")  # a repeated job
    await services.post_to_ops(None, "bus lagging")
    await services.post_to_ops("sales", "sales digest")
    assert await desk.wait_settled(10)
    assert billing.channels == {"ops-billing": ["3 invoices waiting"]}
    assert support.channels == {"ops": ["bus lagging"], "ops-sales": ["sales digest"]}


def test_a_team_naming_no_workspace_plugin_is_refused_with_its_line() -> None:
    text = TWO_TEAMS.replace("{workspace: billing_ws}", "{workspace: customers}")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "plugins.yaml", environ={})
    assert str(caught.value).splitlines() == [
        "plugins.yaml:7: field 'teams.billing.workspace': team 'billing': 'customers' is not a workspace "
        "plugin of this file (workspace plugins: support, billing_ws)"
    ]


async def test_a_reload_applies_a_teams_new_workspace(database_url: str, make_desk: DeskFactory) -> None:
    desk = await make_desk(database_url, TWO_TEAMS.replace("{workspace: billing_ws}", "{}"))
    billing = cast(MemoryWorkspace, _plugin(desk, "billing_ws"))
    assert desk.rooms.workspace_for_team("billing") == "support"
    changes = await desk.reload(parse_config(TWO_TEAMS, "plugins.yaml", environ={}))
    assert "teams: applied (a moved team's conversations move with their next post)" in changes
    assert desk.rooms.workspace_for_team("billing") == "billing_ws"
    await desk.plugins["customers"].services.post_to_ops("billing", "moved")
    assert await desk.wait_settled(10)
    assert billing.channels == {"ops-billing": ["moved"]}
