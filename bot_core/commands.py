"""The agent commands every desk has: !claim, !close, !transfer, !note, !tag, !consent, !link, !via and
!help."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot_core.consent import TOPICS
from bot_core.context import Context
from bot_core.events import AgentCommand
from bot_core.pipeline import CommandHelp
from bot_core.plugin import HANDLED, Handled, Plugin, PluginKind, on_command

if TYPE_CHECKING:
    from bot_core.linking import CustomerLinks


class CoreCommands(Plugin):
    """Built-in commands, always enabled and always first; ``help_source`` lists every plugin's commands."""

    name = "core"
    kind = PluginKind.FEATURE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help_source: Callable[[], list[CommandHelp]] = list
        self.links: CustomerLinks | None = None  # set by the desk

    @on_command("claim", help="take this conversation")
    async def claim(self, ctx: Context, cmd: AgentCommand) -> Handled:
        """Assign the conversation to the agent who typed the command."""
        if not await ctx.assign(cmd.agent_id):
            await _unchanged(ctx, cmd)
        return HANDLED

    @on_command("close", help="close this conversation")
    async def close(self, ctx: Context, cmd: AgentCommand) -> Handled:
        """Close the conversation."""
        if not await ctx.close():
            await _unchanged(ctx, cmd)
        return HANDLED

    @on_command("transfer", usage="<team>", help="hand this conversation to another team's queue")
    async def transfer(self, ctx: Context, cmd: AgentCommand) -> Handled:
        """Transfer to the named team."""
        if not cmd.args:
            await ctx.notice("Usage: !transfer <team>")
            return HANDLED
        if not await ctx.transfer(cmd.args[0]):
            await _unchanged(ctx, cmd)
        return HANDLED

    @on_command("note", usage="<text>", help="internal note, never sent to the customer")
    async def note(self, ctx: Context, cmd: AgentCommand) -> Handled:
        """Store an internal note."""
        if not cmd.raw.strip():
            await ctx.notice("Usage: !note <text>")
            return HANDLED
        await ctx.note(cmd.raw.strip())
        return HANDLED

    @on_command("tag", usage="<tag> [<tag>...]", help="tag the conversation and the customer")
    async def tag(self, ctx: Context, cmd: AgentCommand) -> Handled:
        """Add tags."""
        if not cmd.args:
            await ctx.notice("Usage: !tag <tag> [<tag>...]")
            return HANDLED
        await ctx.tag(*cmd.args)
        return HANDLED

    @on_command(
        "consent", usage="<topic> on|off", help="record the customer's opt-in or opt-out (service, marketing)"
    )
    async def consent(self, ctx: Context, cmd: AgentCommand) -> Handled:
        """Record the customer's word on a topic, as an agent was told it."""
        if (
            len(cmd.args) != 2
            or cmd.args[0].lower() not in TOPICS
            or cmd.args[1].lower() not in ("on", "off")
        ):
            current = [f"{t}: {await _consent_text(ctx, t)}" for t in TOPICS]
            await ctx.notice(
                "Usage: !consent <topic> on|off (topics: "
                + ", ".join(TOPICS)
                + ")\nNow: "
                + "; ".join(current)
            )
            return HANDLED
        topic, granted = cmd.args[0].lower(), cmd.args[1].lower() == "on"
        before = await ctx.consent(topic)
        await ctx.set_consent(topic, granted, f"agent {cmd.agent_id} !consent")
        if before is not None and before.granted == granted:
            await ctx.notice(f"!consent changed nothing: {topic} is {await _consent_text(ctx, topic)}.")
        return HANDLED

    @on_command(
        "link",
        usage="<+phone> | <email> | <channel>:<user id>",
        help="make the customer with that phone, email or identity and this one one customer",
    )
    async def link(self, ctx: Context, cmd: AgentCommand) -> Handled:
        """Merge the room's customer with another (see :mod:`bot_core.linking`)."""
        if self.links is not None:
            await self.links.link_command(ctx, cmd.args)
        return HANDLED

    @on_command(
        "via",
        usage="[<channel> | auto]",
        help="send replies in this conversation to that channel of the customer (alone: show where)",
    )
    async def via(self, ctx: Context, cmd: AgentCommand) -> Handled:
        """Choose (or show) the identity replies in this conversation go to."""
        if self.links is not None:
            await self.links.via_command(ctx, cmd.args)
        return HANDLED

    @on_command("help", help="list the commands", ops_rooms=True)
    async def help(self, ctx: Context, cmd: AgentCommand) -> Handled:
        """Post the list of commands of every enabled plugin (in an ops room: those that work there)."""
        in_ops = ctx.ops_channel is not None
        lines = ["Commands in this ops room:" if in_ops else "Commands:"]
        for item in self.help_source():
            if in_ops and not item.ops_rooms:
                continue
            usage = f" {item.usage}" if item.usage else ""
            lines.append(f"!{item.command}{usage} — {item.help or '(no help)'}")
        await ctx.notice("\n".join(lines))
        return HANDLED


async def _unchanged(ctx: Context, cmd: AgentCommand) -> None:
    """Tell the agent their command changed nothing, and why (the state it found)."""
    await ctx.notice(f"!{cmd.command} changed nothing: this conversation is {ctx.conversation.state}.")


async def _consent_text(ctx: Context, topic: str) -> str:
    """The customer's consent for ``topic`` in words, for the room."""
    info = await ctx.consent(topic)
    if info is None:
        return "not recorded (service replies are sent, marketing is not)"
    return f"{'on' if info.granted else 'off'} ({info.source}, {info.at:%Y-%m-%d %H:%M} UTC)"


def parse_command(text: str) -> tuple[str, tuple[str, ...], str] | None:
    """``"!transfer billing now"`` → ``("transfer", ("billing", "now"), "billing now")``; None if not a command."""
    stripped = text.strip()
    if not stripped.startswith("!") or len(stripped) < 2 or stripped[1].isspace():
        return None
    head, _, rest = stripped[1:].partition(" ")
    return head.lower(), tuple(rest.split()), rest.strip()
