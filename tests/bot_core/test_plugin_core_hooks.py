"""What the handoff plugin needed from the core, on a real desk: a plugin may replace a core command
(``!transfer``), ``services.now`` is the desk's clock, ``ctx.assign(unowned=True)`` never takes a
conversation from an agent, and ``ScheduledFire`` is part of the public API."""

from __future__ import annotations

from datetime import UTC, datetime

from bot_core import api
from bot_core.api import (
    HANDLED,
    AgentCommand,
    Context,
    CustomerMessage,
    Plugin,
    on_command,
    on_customer_message,
)
from tests.bot_core.test_relay_loop import doubles
from tests.conftest import DOUBLES_YAML, DeskFactory

AT = datetime(2030, 1, 2, 3, 4, tzinfo=UTC)


class MyTransfer(Plugin):
    """Replaces the core's ``!transfer``; ``grab <agent>`` hands the conversation out only if no agent has it."""

    name = "my_transfer"

    @on_command("transfer", usage="<anything>", help="my own transfer")
    async def transfer(self, ctx: Context, cmd: AgentCommand) -> object:
        await ctx.notice(f"my transfer: {cmd.raw} at {self.services.now().isoformat()}")
        return HANDLED

    @on_customer_message(matches=r"^grab ")
    async def grab(self, ctx: Context, msg: CustomerMessage) -> object:
        given = await ctx.assign(msg.text.split()[1], unowned=True)
        await ctx.reply(f"given: {given}")
        return HANDLED


YAML = DOUBLES_YAML + '  - my_transfer: {use: "tests.bot_core.test_plugin_core_hooks:MyTransfer"}\n'


async def test_plugin_replaces_a_core_command_and_reads_the_desks_clock(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    """``!transfer`` reaches the plugin (not the core's team transfer); ``!help`` lists the plugin's."""
    desk = await make_desk(sqlite_url, YAML, scheduler_clock=lambda: AT)
    channel, workspace = doubles(desk)
    await channel.customer_writes("u1", "hi")
    assert await desk.wait_settled()
    room = workspace.room_of("u1").room_id
    await workspace.agent_writes(room, "!transfer billing: note")
    await workspace.agent_writes(room, "!help")
    assert await desk.wait_settled()
    notices = workspace.texts(room, "notice")
    assert "my transfer: billing: note at 2030-01-02T03:04:00+00:00" in notices
    assert not any("Transferred to billing" in n for n in notices)
    assert "!transfer <anything> — my own transfer" in notices[-1]
    assert "!claim — take this conversation" in notices[-1]  # the other core commands stay


async def test_assign_unowned_never_takes_from_an_agent(sqlite_url: str, make_desk: DeskFactory) -> None:
    """A conversation an agent claimed is not given to another by ``assign(..., unowned=True)``."""
    desk = await make_desk(sqlite_url, YAML)
    channel, workspace = doubles(desk)
    await channel.customer_writes("u1", "hi")
    assert await desk.wait_settled()
    await workspace.agent_writes(workspace.room_of("u1").room_id, "!claim", agent="@erin")
    assert await desk.wait_settled()
    await channel.customer_writes("u1", "grab @frank")
    assert await desk.wait_settled()
    assert channel.texts_to("u1")[-1] == "given: False"
    card = workspace.room_of("u1").card
    assert card is not None and card.assignee == "Erin"
    await channel.customer_writes("u2", "grab @frank")
    assert await desk.wait_settled()
    assert channel.texts_to("u2")[-1] == "given: True"


def test_scheduled_fire_is_public() -> None:
    """A plugin's ``@on_schedule`` handler can name its event type from the public API."""
    assert "ScheduledFire" in api.__all__


class Inviter(Plugin):
    """``invite <agent>`` asks for the agent to be brought into the room."""

    name = "inviter"

    @on_customer_message(matches=r"^invite ")
    async def invite(self, ctx: Context, msg: CustomerMessage) -> object:
        await ctx.invite(msg.text.split()[1])
        return HANDLED


async def test_invite_reaches_a_workspace_that_invites(sqlite_url: str, make_desk: DeskFactory) -> None:
    """``ctx.invite`` goes through the outbox to ``InvitingWorkspace.invite``; a refusal is told in the room."""
    yaml_text = DOUBLES_YAML + '  - inviter: {use: "tests.bot_core.test_plugin_core_hooks:Inviter"}\n'
    desk = await make_desk(sqlite_url, yaml_text)
    channel, workspace = doubles(desk)
    await channel.customer_writes("u1", "hi")
    assert await desk.wait_settled()
    room = workspace.room_of("u1").room_id
    await channel.customer_writes("u1", "invite @erin")
    assert await desk.wait_settled()
    assert workspace.invited == {room: ["@erin"]}
    workspace.not_agents.add("@mallory")
    await channel.customer_writes("u1", "invite @mallory")
    assert await desk.wait_settled()
    assert workspace.invited == {room: ["@erin"]}
    assert workspace.texts(room, "notice")[-1] == (
        "⚠ @mallory could not be invited to this room: @mallory is not one of this desk's agents"
    )
