"""The plugin pipeline: handlers of the enabled plugins, in plugins.yaml order.

A pipeline is immutable; a reload builds a new one and swaps it in, so an event being handled
finishes on the pipeline it started with. A handler that raises is logged and counted, and the event
goes on to the next plugin: one broken plugin never keeps a customer's message from the agents.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bot_core.context import Context
from bot_core.events import (
    AgentCommand,
    AgentMessage,
    ConversationEvent,
    CustomerMessage,
    LifecycleKind,
    ScheduledFire,
)
from bot_core.metrics import Metrics
from bot_core.periodic import PeriodicSpec
from bot_core.plugin import HANDLED, HandlerKind, HandlerSpec, Plugin
from storage.db import database_answers, lost_connection

log = logging.getLogger("relaydesk.pipeline")


@dataclass(frozen=True)
class BoundHandler:
    """One handler method of one plugin instance."""

    plugin: Plugin
    method: Callable[..., Awaitable[Any]]
    spec: HandlerSpec

    @property
    def instance(self) -> str:
        """The plugin's instance name (its key in plugins.yaml)."""
        return self.plugin.instance_name


@dataclass(frozen=True)
class CommandHelp:
    """One line of ``!help``."""

    command: str
    usage: str
    help: str
    plugin: str
    ops_rooms: bool = False  # it works in an ops room too


class Pipeline:
    """The ordered handlers of a set of plugin instances."""

    def __init__(self, plugins: Sequence[Plugin], metrics: Metrics) -> None:
        self.plugins = tuple(plugins)
        self._metrics = metrics
        self._by_kind: dict[HandlerKind, list[BoundHandler]] = {k: [] for k in HandlerKind}
        self.commands: dict[str, BoundHandler] = {}
        for plugin in self.plugins:
            for attr, spec in plugin.handler_specs():
                bound = BoundHandler(plugin, getattr(plugin, attr), spec)
                self._by_kind[spec.kind].append(bound)
                if spec.kind is HandlerKind.COMMAND and spec.command:
                    # the first plugin in plugins.yaml order owns a command name
                    self.commands.setdefault(spec.command, bound)
        self._lifecycle_kinds = frozenset(
            kind for bound in self._by_kind[HandlerKind.CONVERSATION_EVENT] for kind in bound.spec.lifecycle
        )

    def plugin(self, instance: str) -> Plugin | None:
        """The enabled plugin instance called ``instance``."""
        return next((p for p in self.plugins if p.instance_name == instance), None)

    async def _call(self, bound: BoundHandler, ctx: Context, event: object, label: str) -> Any:
        started = time.perf_counter()
        try:
            return await bound.method(ctx.for_plugin(bound.instance), event)
        except Exception as exc:
            if lost_connection(exc) or not await database_answers():
                # not the plugin's fault: the whole event is handled again once the database is back
                # (Desk._handle_entry), where a logged-and-skipped failure would lose what it did
                raise
            self._metrics.handler_errors.labels(bound.instance, label).inc()
            log.exception("plugin handler failed", extra={"plugin": bound.instance, "event": label})
            return None
        finally:
            self._metrics.handler_seconds.labels(bound.instance, label).observe(time.perf_counter() - started)

    async def customer_message(self, ctx: Context, msg: CustomerMessage) -> bool:
        """Run customer-message handlers until one returns HANDLED; True if one did."""
        for bound in self._by_kind[HandlerKind.CUSTOMER_MESSAGE]:
            if bound.spec.pattern is not None and not bound.spec.pattern.search(msg.text):
                continue
            if await self._call(bound, ctx, msg, "customer_message") is HANDLED:
                return True
        return False

    async def agent_message(self, ctx: Context, msg: AgentMessage) -> bool:
        """Run agent-message handlers until one returns HANDLED (then the message is not sent)."""
        for bound in self._by_kind[HandlerKind.AGENT_MESSAGE]:
            if await self._call(bound, ctx, msg, "agent_message") is HANDLED:
                return True
        return False

    async def command(self, ctx: Context, cmd: AgentCommand) -> bool:
        """Run the handler owning ``cmd.command``; False if no plugin knows the command."""
        bound = self.commands.get(cmd.command)
        if bound is None:
            return False
        if ctx.ops_channel is not None and not bound.spec.ops_rooms:
            await ctx.notice(f"!{cmd.command} works in a customer's room, not in an ops room.")
            return True
        await self._call(bound, ctx, cmd, "command")
        return True

    def handles(self, kind: LifecycleKind) -> bool:
        """Whether any conversation-event handler wants events of ``kind``."""
        return kind in self._lifecycle_kinds

    async def lifecycle(self, ctx: Context, event: ConversationEvent) -> None:
        """Run the conversation-event handlers interested in ``event.kind`` (all of them run)."""
        for bound in self._by_kind[HandlerKind.CONVERSATION_EVENT]:
            if event.kind in bound.spec.lifecycle:
                if await self._call(bound, ctx, event, "conversation_event") is HANDLED:
                    return

    async def scheduled(self, ctx: Context, fire: ScheduledFire) -> bool:
        """Run the owning plugin's handler for ``fire.job``; False if that plugin or job is gone."""
        # the job's own handler, else (a job from a plugin's config, "campaign:spring") its prefix's
        for job in dict.fromkeys((fire.job, fire.job.split(":", 1)[0])):
            for bound in self._by_kind[HandlerKind.SCHEDULE]:
                if bound.instance == fire.plugin and bound.spec.job == job:
                    await self._call(bound, ctx, fire, "schedule")
                    return True
        return False

    def periodic_jobs(self) -> list[tuple[str, str, PeriodicSpec]]:
        """(plugin instance, job, when) of every periodic ``@on_schedule(..., every=|cron=)`` handler."""
        declared = [
            (b.instance, b.spec.job or "", b.spec.periodic)
            for b in self._by_kind[HandlerKind.SCHEDULE]
            if b.spec.periodic
        ]
        configured = [(p.instance_name, job, spec) for p in self.plugins for job, spec in p.periodic_jobs()]
        return declared + configured

    def command_help(self) -> list[CommandHelp]:
        """Every command with its usage and help text, for ``!help``."""
        return [
            CommandHelp(name, b.spec.usage, b.spec.help, b.instance, b.spec.ops_rooms)
            for name, b in sorted(self.commands.items())
        ]
