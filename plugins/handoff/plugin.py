"""The handoff plugin: from the bot to a person, and from person to person, without losing anyone's place.

* **Routing** (:mod:`plugins.handoff.routing`): a conversation put in the queue (by the FAQ's hand-over,
  or with ``queue_unhandled`` by any message no plugin before handled) goes to the first matching rule's
  team, else the default team; an FAQ complaint jumps the line (``complaint_priority``).
* **The line** (:mod:`plugins.handoff.queue`): per team, by priority then arrival, in the plugin's store.
  The customer is told their place and expected wait (:mod:`plugins.handoff.wait`) in their language, and
  told again only when it changed enough; stepping away or writing again keeps the place.
* **Agents**: ``!available`` / ``!away`` / ``!offline``, a capacity per agent, hand-out per team by claim,
  round robin or least busy, and the sticky agent for a returning customer.
* **Transfers**: ``!transfer <team|@agent>[: note]`` (replacing the core's ``!transfer``).
* **Hours** (:mod:`plugins.handoff.hours`): outside them one reply says when the team answers, in the
  customer's time zone; the conversation waits in the line.
* **Response targets**: keyed scheduled tasks per conversation; a breach is posted once in the room and
  the team's ops room; waits, first responses and resolutions per team on ``/metrics``.
* **Promises**: ``!followup``, ``!followups``.

Put ``handoff`` before ``faq`` in plugins.yaml: it reads what the customer writes (for keyword rules) and
never answers while the FAQ does.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client import Counter, Gauge, Histogram

from bot_core.api import (
    HANDLED,
    AgentCommand,
    AgentMessage,
    Context,
    ConversationEvent,
    CustomerMessage,
    Handled,
    LifecycleKind,
    Plugin,
    ScheduledFire,
    on_agent_message,
    on_command,
    on_conversation_event,
    on_customer_message,
    on_schedule,
)
from plugins.handoff.config import Assignment, HandoffConfig, TeamConfig
from plugins.handoff.hours import Hours
from plugins.handoff.promises import FollowupError, parse_followup
from plugins.handoff.queue import Entry, Queue
from plugins.handoff.routing import Facts, language_of, route
from plugins.handoff.texts import Texts, load_texts
from plugins.handoff.wait import expected_waits

STATUSES = ("available", "away", "offline")
PRESENCE_STATUS = {"online": "available", "unavailable": "away", "offline": "offline"}
TARGET_NAMES = {
    "first_response": "first-response",
    "next_response": "next-response",
    "resolution": "resolution",
}
TEXT_KEEP = 2000  # characters of what the customer wrote kept for keyword rules
HANDLES_KEPT = 30
SOON = 60.0  # a wait under a minute is told as "in a moment"


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _ago(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60} min"


def agent_label(agent_id: str) -> str:
    """A readable name for a workspace user id (``@bob:example.org`` → ``Bob``)."""
    local = agent_id.lstrip("@").split(":", 1)[0]
    return local[:1].upper() + local[1:] if local else agent_id


class _Metrics:
    """The plugin's collectors on the desk's registry (``/metrics``)."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        buckets = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200)
        self.wait = Histogram(
            "relaydesk_handoff_wait_seconds",
            "Time a conversation waited in a team's line before an agent took it",
            ["team"],
            buckets=buckets,
            registry=registry,
        )
        self.first_response = Histogram(
            "relaydesk_handoff_first_response_seconds",
            "From joining the line to the first agent taking the conversation, per team",
            ["team"],
            buckets=buckets,
            registry=registry,
        )
        self.resolution = Histogram(
            "relaydesk_handoff_resolution_seconds",
            "From a conversation's start to its close, per team",
            ["team"],
            buckets=buckets,
            registry=registry,
        )
        self.breaches = Counter(
            "relaydesk_handoff_target_breaches",
            "Response targets missed, per team and target",
            ["team", "target"],
            registry=registry,
        )
        self.waiting = Gauge(
            "relaydesk_handoff_waiting", "Conversations waiting in a team's line", ["team"], registry=registry
        )

    def unregister(self) -> None:
        for collector in (self.wait, self.first_response, self.resolution, self.breaches, self.waiting):
            self.registry.unregister(collector)


class HandoffPlugin(Plugin[HandoffConfig]):
    """Queue, routing, agents, transfers, hours, response targets and promises (see the module's docstring)."""

    name = "handoff"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.texts = load_texts()
        self.queue = Queue(self.services.store("queue"))
        self.agents = self.services.store("agents")  # agent id -> {"status", "at"}
        self.owners = self.services.store(
            "owners"
        )  # conversation id -> {"agent", "team", "since", "customer"}
        self.handles = self.services.store("handles")  # team -> recent handle times (seconds)
        self.turns = self.services.store("round_robin")  # team -> the agent who got the last one
        self.metrics: _Metrics | None = None

    async def start(self) -> None:
        """Register the metrics."""
        if self.services.metrics_registry is not None:
            self.metrics = _Metrics(self.services.metrics_registry)

    async def stop(self) -> None:
        """Unregister the metrics."""
        if self.metrics is not None:
            self.metrics.unregister()
            self.metrics = None

    # -- small helpers -------------------------------------------------------------------------

    def now(self) -> datetime:
        """The desk's clock."""
        return self.services.now()

    def team(self, name: str | None) -> TeamConfig:
        """A team's settings (the default team's for an unknown name)."""
        return self.config.teams.get(name or "") or self.config.teams[self.config.default_team]

    def hours(self, team: str) -> Hours:
        """A team's opening hours."""
        return Hours.of(self.team(team))

    def texts_for(self, ctx: Context) -> Texts:
        """The customer's language's texts (English if there is no file for it)."""
        tags = {*ctx.conversation.tags, *ctx.customer.tags}
        language = language_of(sorted(tags), ctx.customer.locale) or "en"
        return self.texts.get(language) or self.texts["en"]

    def customer_zone(self, ctx: Context, team: str) -> ZoneInfo:
        """The customer's time zone, else the team's."""
        return ZoneInfo(ctx.customer.timezone or self.team(team).timezone)

    async def team_of(self, ctx: Context) -> str:
        """The team this conversation is with (as routed or transferred), else the default team."""
        return str(await ctx.state.get("team", self.config.default_team))

    def teams_of(self, agent_id: str) -> list[str]:
        """The teams ``agent_id`` is a member of."""
        return [name for name, team in self.config.teams.items() if agent_id in team.members]

    def capacity_of(self, agent_id: str, team: str) -> int:
        """How many open conversations ``agent_id`` may hold: the largest of their teams' capacities."""
        mine = [self.config.teams[t].capacity for t in self.teams_of(agent_id)]
        return max(mine) if mine else self.team(team).capacity

    def resolve_agent(self, name: str) -> str | None:
        """``@bob`` or ``@bob:example.org`` → the member's id (a full id of a non-member is taken as given);
        ``@U0BOB`` → ``U0BOB`` (Slack's member ids have no ``@``)."""
        members = [m for team in self.config.teams.values() for m in team.members]
        if name in members:
            return name
        if name.startswith("@") and name[1:] in members:
            return name[1:]
        short = [m for m in members if m.split(":", 1)[0] == name]
        if len(short) == 1:
            return short[0]
        return name if ":" in name else None

    async def status(self, agent_id: str) -> str:
        """``available``, ``away`` or ``offline`` (never told: offline)."""
        data = await self.agents.get(agent_id)
        return str(data["status"]) if data else "offline"

    async def loads(self) -> dict[str, int]:
        """Open conversations per agent."""
        out: dict[str, int] = {}
        for owner in (await self.owners.items()).values():
            out[owner["agent"]] = out.get(owner["agent"], 0) + 1
        return out

    async def slots(self, team: str) -> tuple[int, int]:
        """(free, busy) slots of ``team``'s available agents."""
        loads = await self.loads()
        free = busy = 0
        for member in self.team(team).members:
            if await self.status(member) != "available":
                continue
            capacity = self.capacity_of(member, team)
            load = loads.get(member, 0)
            busy += min(load, capacity)
            free += max(capacity - load, 0)
        return free, busy

    async def waits(self, team: str, waiting: int) -> list[float] | None:
        """The expected waits of the first ``waiting`` of ``team``'s line (None: nobody available)."""
        free, busy = await self.slots(team)
        return expected_waits(free, busy, await self.handles.get(team, []), waiting)

    async def _record_handle(self, team: str, seconds: float) -> None:
        recent = [*await self.handles.get(team, []), round(seconds, 1)][-HANDLES_KEPT:]
        await self.handles.set(team, recent)

    async def _gauge(self, team: str) -> None:
        if self.metrics is not None:
            self.metrics.waiting.labels(team).set(len(await self.queue.line(team)))

    # -- the customer's side -------------------------------------------------------------------

    @on_customer_message()
    async def customer_wrote(self, ctx: Context, msg: CustomerMessage) -> Handled | None:
        """Remember what was written (keyword rules); queue it if configured; watch the next-response target."""
        if msg.edit_of:
            return None
        state = ctx.conversation.state
        if not await ctx.state.get("started_at"):
            await ctx.state.set("started_at", _iso(self.now()))  # the resolution clock (the desk's clock)
        if state == "bot":
            kept = f"{await ctx.state.get('text', '')}\n{msg.text}"[-TEXT_KEEP:]
            await ctx.state.set("text", kept)
            if self.config.queue_unhandled:
                facts = await self._facts(ctx)
                await ctx.queue(route(self.config, facts).team)
            return None
        if state == "queued":
            # the place is kept; what they wrote is in the room already. Tell them again if it changed enough.
            entry = await self.queue.find(ctx.customer.id, ctx.conversation.id)
            if entry is not None:
                await self._tell_place(ctx, entry, update=True)
            return None
        if state == "assigned":
            team = await self.team_of(ctx)
            target = self.team(team).targets.next_response
            if target is not None and not await ctx.state.get("awaiting_since"):
                await ctx.state.set("awaiting_since", _iso(self.now()))
                await self._watch(ctx, "next_response", team, self.now() + target, target)
        return None

    @on_agent_message()
    async def agent_answered(self, ctx: Context, msg: AgentMessage) -> None:
        """An agent answered: the next-response clock stops."""
        if msg.edit_of or msg.redacts:
            return
        if await ctx.state.get("awaiting_since"):
            await ctx.state.delete("awaiting_since")
        await ctx.cancel("target:next_response")

    async def _facts(self, ctx: Context) -> Facts:
        tags = frozenset({*ctx.conversation.tags, *ctx.customer.tags})
        return Facts(
            text=str(await ctx.state.get("text", "")),
            tags=tags,
            language=language_of(sorted(tags), ctx.customer.locale),
            channel=ctx.customer.channel,
            attributes=ctx.customer.attributes,
            now=self.now(),
        )

    # -- lifecycle -----------------------------------------------------------------------------

    @on_conversation_event(LifecycleKind.QUEUED)
    async def queued(self, ctx: Context, event: ConversationEvent) -> None:
        """Route the hand-over, put it in the team's line, and tell the customer their place and wait."""
        if ctx.conversation.state != "queued":
            return  # taken (or closed) before this ran
        facts = await self._facts(ctx)
        chosen = route(self.config, facts)
        await ctx.state.set("team", chosen.team)
        await ctx.state.set("priority", chosen.priority)
        why = "the default team" if chosen.rule is None else f"rule {chosen.rule + 1}"
        priority = f", priority {chosen.priority}" if chosen.priority else ""
        await ctx.notice(f"🧭 Routed to {chosen.team} ({why}{priority}).")
        if event.team != chosen.team:
            await ctx.transfer(chosen.team)  # its event finds the entry below in place
        await self._enqueue(ctx, chosen.team, chosen.priority)

    @on_conversation_event(LifecycleKind.TRANSFERRED)
    async def transferred(self, ctx: Context, event: ConversationEvent) -> None:
        """Another team takes it: out of the owner's hands, into the new team's line."""
        team = event.team or self.config.default_team
        owner = await self.owners.get(str(ctx.conversation.id))
        if owner is not None:
            await self.owners.delete(str(ctx.conversation.id))
            since = datetime.fromisoformat(owner["since"])
            await self._record_handle(owner["team"], (self.now() - since).total_seconds())
        entry = await self.queue.find(ctx.customer.id, ctx.conversation.id)
        if entry is not None and entry.team == team:
            return  # routed here by :meth:`queued`, already in line
        await ctx.state.set("team", team)
        if ctx.conversation.state == "queued":
            await self._enqueue(ctx, team, int(await ctx.state.get("priority", 0)))
        if owner is not None:
            await self._dispatch(ctx, owner["team"])

    async def _enqueue(self, ctx: Context, team: str, priority: int) -> None:
        now = self.now()
        old = await self.queue.find(ctx.customer.id, ctx.conversation.id) or await self.queue.get(
            ctx.customer.id
        )
        if old is not None and old.team == team:
            # the same customer again (another channel, a new conversation): the place is kept
            entry = replace(old, conversation=ctx.conversation.id, priority=max(priority, old.priority))
        else:
            entry = Entry(ctx.customer.id, ctx.conversation.id, team, priority, _iso(now), ctx.customer.name)
        await self.queue.put(entry)
        if not await ctx.state.get("queued_at"):
            await ctx.state.set("queued_at", _iso(now))
        targets = self.team(team).targets
        if targets.first_response is not None and not await ctx.state.get("first_taken"):
            await self._watch(
                ctx, "first_response", team, now + targets.first_response, targets.first_response
            )
        if targets.resolution is not None:
            start = await self._started(ctx)
            await self._watch(
                ctx, "resolution", team, max(start + targets.resolution, now), targets.resolution
            )
        await self._gauge(team)
        if await self._sticky(ctx, team):
            return
        await self._dispatch(ctx, team)
        waiting = await self.queue.get(ctx.customer.id)
        if waiting is not None and waiting.conversation == ctx.conversation.id:
            await self._tell_place(ctx, waiting, update=False)

    async def _started(self, ctx: Context) -> datetime:
        """When the conversation started on the desk's clock (its first customer message handled here;
        for one queued without any, now, recorded)."""
        started = await ctx.state.get("started_at")
        if not started:
            started = _iso(self.now())
            await ctx.state.set("started_at", started)
        return datetime.fromisoformat(started)

    async def _tell_place(self, ctx: Context, entry: Entry, *, update: bool) -> None:
        """Tell the customer their place (and wait); with ``update``, only if it changed enough."""
        texts = self.texts_for(ctx)
        hours, now = self.hours(entry.team), self.now()
        if not hours.is_open(now):
            opens = hours.next_open(now)
            if opens is not None and entry.hours_told != _iso(opens):
                moment = texts.moment(opens, self.customer_zone(ctx, entry.team), now)
                await ctx.reply(texts.say("closed", team=entry.team, opens=moment))
                fresh = await self.queue.get(entry.customer)
                if fresh is not None:
                    await self.queue.put(replace(fresh, hours_told=_iso(opens)))
            return
        line = await self.queue.line(entry.team)
        position = next((n for n, e in enumerate(line, 1) if e.customer == entry.customer), None)
        if position is None:
            return
        waits = await self.waits(entry.team, position)
        wait = waits[-1] if waits else None
        if update and not self._changed_enough(entry, position, wait):
            return
        if wait is None:
            text = texts.say("moved_unknown" if update else "queued_unknown", position=position)
        elif wait < SOON:
            text = texts.say("queued_soon", position=position)
        else:
            text = texts.say("moved" if update else "queued", position=position, wait=texts.duration(wait))
        await ctx.reply(text)
        await self.queue.told(entry, position, wait)

    def _changed_enough(self, entry: Entry, position: int, wait: float | None) -> bool:
        """Whether a waiting customer should hear again: their wait moved by ``requeue_change`` of what they
        were told (and at least two minutes), or with no wait known their place halved."""
        if entry.told_position is None:
            return True
        if wait is not None and entry.told_wait is not None:
            moved = abs(wait - entry.told_wait)
            return moved >= max(120.0, self.config.requeue_change * entry.told_wait)
        if wait is not None and entry.told_wait is None:
            return True
        return position <= entry.told_position // 2

    async def _tell_line(self, ctx: Context, team: str) -> None:
        """After the line moved, tell those whose place or wait changed enough."""
        for entry in await self.queue.line(team):
            if entry.told_position is None:
                continue  # told when they joined, in their own handling
            line = await self.queue.line(team)
            position = next((n for n, e in enumerate(line, 1) if e.customer == entry.customer), None)
            if position is None:
                continue
            waits = await self.waits(team, position)
            wait = waits[-1] if waits else None
            if not self._changed_enough(entry, position, wait) or not self.hours(team).is_open(self.now()):
                continue
            other = await ctx.for_customer(entry.customer, reuse_closed=True)
            if other.conversation.id != entry.conversation or other.conversation.state != "queued":
                continue
            await self._tell_place(other, entry, update=True)

    @on_conversation_event(LifecycleKind.ASSIGNED)
    async def assigned(self, ctx: Context, event: ConversationEvent) -> None:
        """An agent has it: out of the line, owned, first-response clock stopped, the agent told."""
        agent = event.agent_id or ""
        team = await self.team_of(ctx)
        now = self.now()
        entry = await self.queue.remove(ctx.customer.id, ctx.conversation.id)
        previous = await self.owners.get(str(ctx.conversation.id))
        if previous is not None and previous["agent"] != agent:
            since = datetime.fromisoformat(previous["since"])
            await self._record_handle(previous["team"], (now - since).total_seconds())
        if previous is None or previous["agent"] != agent:
            owner = {"agent": agent, "team": team, "since": _iso(now), "customer": ctx.customer.id}
            await self.owners.set(str(ctx.conversation.id), owner)
        await ctx.cancel("target:first_response")
        if not await ctx.state.get("first_taken"):
            await ctx.state.set("first_taken", _iso(now))
            queued_at = await ctx.state.get("queued_at")
            if queued_at and self.metrics is not None:
                waited = (now - datetime.fromisoformat(queued_at)).total_seconds()
                self.metrics.first_response.labels(team).observe(max(waited, 0.0))
        if entry is not None and self.metrics is not None:
            self.metrics.wait.labels(entry.team).observe(max((now - entry.arrived_at).total_seconds(), 0.0))
        if agent and event.by != agent:  # handed to them (not their own !claim or answer): bring them in
            await ctx.invite(agent)
            await ctx.mention(f"🔔 {agent}: this conversation is yours now ({ctx.customer.name}).", agent)
        if entry is not None:
            await self._gauge(entry.team)
            await self._tell_line(ctx, entry.team)

    @on_conversation_event(LifecycleKind.CLOSED)
    async def closed(self, ctx: Context, event: ConversationEvent) -> None:
        """Closed: out of the line and the owner's hands; the sticky agent remembered; open promises named."""
        now = self.now()
        team = await self.team_of(ctx)
        entry = await self.queue.remove(ctx.customer.id, ctx.conversation.id)
        owner = await self.owners.get(str(ctx.conversation.id))
        if owner is not None:
            await self.owners.delete(str(ctx.conversation.id))
            since = datetime.fromisoformat(owner["since"])
            await self._record_handle(owner["team"], (now - since).total_seconds())
            await self._remember_agent(ctx, owner["agent"], now)
        for target in TARGET_NAMES:
            await ctx.cancel(f"target:{target}")
        if self.metrics is not None:
            started = await self._started(ctx)
            self.metrics.resolution.labels(team).observe(max((now - started).total_seconds(), 0))
        open_promises = [p for p in await ctx.state.get("followups", []) if not p.get("done")]
        if open_promises:
            lines = "\n".join(f"#{p['n']} {p['due'][:16]} UTC: {p['what']}" for p in open_promises)
            await ctx.notice(
                f"⚠ This conversation was closed with {len(open_promises)} open follow-up(s):\n{lines}\n"
                "They still fire. Drop one with !followup cancel <n>."
            )
        if entry is not None:
            await self._gauge(entry.team)
            await self._tell_line(ctx, entry.team)
        if owner is not None:
            await self._dispatch(ctx, owner["team"])

    # -- handing out ---------------------------------------------------------------------------

    async def _pick(self, team: str) -> str | None:
        """The agent who gets ``team``'s next conversation (None: nobody with room, or the team claims)."""
        settings = self.team(team)
        if settings.assignment is Assignment.CLAIM:
            return None
        loads = await self.loads()
        eligible = [
            m
            for m in settings.members
            if await self.status(m) == "available" and loads.get(m, 0) < self.capacity_of(m, team)
        ]
        if not eligible:
            return None
        if settings.assignment is Assignment.LEAST_BUSY:
            return min(eligible, key=lambda m: (loads.get(m, 0), settings.members.index(m)))
        last = await self.turns.get(team)
        order = settings.members
        start = order.index(last) + 1 if last in order else 0
        for m in order[start:] + order[:start]:
            if m in eligible:
                return m
        return None

    async def _give(self, ctx: Context, entry: Entry, agent: str, team: str) -> bool:
        """Hand ``entry``'s conversation to ``agent`` (only if no agent has it); False if it had gone."""
        other = await ctx.for_customer(entry.customer, reuse_closed=True)
        if other.conversation.id != entry.conversation or other.conversation.state not in ("bot", "queued"):
            await self.queue.remove(entry.customer, entry.conversation)
            return False
        # owned before the change's event runs, so the next pick already counts it
        await self.queue.remove(entry.customer, entry.conversation)
        owner = {"agent": agent, "team": team, "since": _iso(self.now()), "customer": entry.customer}
        await self.owners.set(str(entry.conversation), owner)
        if not await other.assign(agent, unowned=True):
            mine = await self.owners.get(str(entry.conversation))
            if mine == owner:
                await self.owners.delete(str(entry.conversation))
            return False
        if self.team(team).assignment is Assignment.ROUND_ROBIN:
            await self.turns.set(team, agent)
        return True

    def _handing_out(self) -> AbstractAsyncContextManager[None]:
        """The lock every hand-out runs under, shared by every worker (a database lock): reading the
        line and the agents' loads, choosing, and recording the new owner never interleave, so no agent
        is given more than their capacity and no waiting conversation goes to two agents."""
        return self.owners.lock("hand-out")

    async def _dispatch(self, ctx: Context, team: str) -> None:
        """Hand out ``team``'s line while it is open and an agent has room."""
        if self.team(team).assignment is Assignment.CLAIM or not self.hours(team).is_open(self.now()):
            return
        async with self._handing_out():
            for _ in range(100):
                line = await self.queue.line(team)
                if not line:
                    return
                agent = await self._pick(team)
                if agent is None:
                    return
                await self._give(ctx, line[0], agent, team)

    async def _sticky(self, ctx: Context, team: str) -> bool:
        """A returning customer goes back to the agent who served them last, if recent and they have room."""
        window = self.team(team).sticky
        last = await self._last_agent(ctx) if window is not None else None
        if window is None or last is None:
            return False
        agent, at = last["agent"], datetime.fromisoformat(last["at"])
        if self.now() - at > window:
            return False
        async with self._handing_out():
            if await self.status(agent) != "available":
                return False
            if (await self.loads()).get(agent, 0) >= self.capacity_of(agent, team):
                return False
            entry = await self.queue.get(ctx.customer.id)
            if entry is None or not await self._give(ctx, entry, agent, team):
                return False
        await ctx.notice(
            f"↩ Back to {agent_label(agent)}, who served this customer last ({_ago((self.now() - at).total_seconds())} ago)."
        )
        return True

    async def _last_agent(self, ctx: Context) -> dict[str, str] | None:
        """The agent who served this customer last, and when (the most recent of the records).

        Each record is kept under ``last_agent:<customer id when written>`` in the customer's store: when
        two customers are linked into one, the core moves the absorbed customer's keys to the survivor
        (keeping the survivor's where both have one), so both records arrive and the more recent wins.
        """
        found = [
            value
            for key, value in (await ctx.customer_state.items()).items()
            if key == "last_agent" or key.startswith("last_agent:")
        ]
        return max(found, key=lambda v: datetime.fromisoformat(v["at"]), default=None)

    async def _remember_agent(self, ctx: Context, agent: str, now: datetime) -> None:
        """Record ``agent`` as the one who served this customer last (older records dropped)."""
        store = ctx.customer_state
        for key in await store.items():
            if key == "last_agent" or key.startswith("last_agent:"):
                await store.delete(key)
        await store.set(f"last_agent:{ctx.customer.id}", {"agent": agent, "at": _iso(now)})

    def follows_presence(self, agent_id: str) -> bool:
        """Whether one of ``agent_id``'s teams follows workspace presence."""
        return any(self.config.teams[t].presence for t in self.teams_of(agent_id))

    async def follow_presence(self, ctx: Context) -> None:
        """The members of teams that follow presence: a change of their workspace presence sets their
        status (and an agent who became available is handed conversations).

        Precedence: the latest change wins. A presence seen again unchanged changes nothing, so an
        explicit ``!away`` typed while online stands until the agent's presence changes (they go idle or
        offline, or come back); a command records the presence it was typed under for that comparison.
        """
        members = dict.fromkeys(
            m for team in self.config.teams.values() if team.presence for m in team.members
        )
        for member in members:
            seen = await self.services.presence(member)
            if seen not in PRESENCE_STATUS:
                continue  # the workspace cannot say: the status stays as it is
            record = await self.agents.get(member) or {}
            if record.get("presence") == seen:
                continue
            status = PRESENCE_STATUS[seen]
            await self.agents.set(
                member, {"status": status, "at": _iso(self.now()), "source": "presence", "presence": seen}
            )
            if status == "available" and record.get("status") != "available":
                for team in self.teams_of(member):
                    await self._dispatch(ctx, team)

    @on_schedule("dispatch", every=60)
    async def every_minute(self, ctx: Context, fire: ScheduledFire) -> None:
        """Follow agents' presence where teams ask for it; hand out every open team's line (a team that
        just opened, an agent freed elsewhere)."""
        await self.follow_presence(ctx)
        for team in sorted(await self.queue.teams()):
            if team in self.config.teams:
                await self._dispatch(ctx, team)

    # -- agents' commands ----------------------------------------------------------------------

    async def _set_status(self, ctx: Context, cmd: AgentCommand, status: str) -> Handled:
        record: dict[str, Any] = {"status": status, "at": _iso(self.now()), "source": "command"}
        until = ""
        if self.follows_presence(cmd.agent_id):
            record["presence"] = await self.services.presence(cmd.agent_id)  # what a later change is against
            until = " (until your presence changes)"
        await self.agents.set(cmd.agent_id, record)
        load = (await self.loads()).get(cmd.agent_id, 0)
        teams = self.teams_of(cmd.agent_id)
        where = f" ({', '.join(teams)})" if teams else " (in no team: nothing is handed to you)"
        await ctx.notice(
            f"{agent_label(cmd.agent_id)} is {status}{until}{where}; open conversations: {load}."
        )
        if status == "available":
            for team in teams:
                await self._dispatch(ctx, team)
        return HANDLED

    @on_command("available", help="take conversations from your teams' lines", ops_rooms=True)
    async def available(self, ctx: Context, cmd: AgentCommand) -> Handled:
        """The agent takes new conversations."""
        return await self._set_status(ctx, cmd, "available")

    @on_command("away", help="keep your conversations, take no new ones", ops_rooms=True)
    async def away(self, ctx: Context, cmd: AgentCommand) -> Handled:
        """The agent steps away."""
        return await self._set_status(ctx, cmd, "away")

    @on_command("offline", help="take no new conversations (yours stay yours)", ops_rooms=True)
    async def offline(self, ctx: Context, cmd: AgentCommand) -> Handled:
        """The agent goes offline."""
        return await self._set_status(ctx, cmd, "offline")

    async def _team_here(self, ctx: Context, cmd: AgentCommand) -> str:
        """The team a command names, else the ops room's team, else the conversation's (else the default)."""
        if cmd.args:
            return cmd.args[0]
        if not ctx.has_conversation:
            return ctx.ops_team or self.config.default_team
        return await self.team_of(ctx)

    @on_command(
        "queue", usage="[<team>]", help="who waits in the team's line, and the agents", ops_rooms=True
    )
    async def show_queue(self, ctx: Context, cmd: AgentCommand) -> Handled:
        """Post the team's line in the room (a customer's room, or the team's ops room)."""
        team = await self._team_here(ctx, cmd)
        if team not in self.config.teams:
            await ctx.notice(f"No team {team!r}. Teams: {', '.join(self.config.teams)}.")
            return HANDLED
        line = await self.queue.line(team)
        now = self.now()
        hours = self.hours(team)
        state = "open" if hours.is_open(now) else "closed"
        waits = await self.waits(team, len(line)) if line else []
        lines = [f"Line of {team} ({state}, {self.team(team).assignment.value}): {len(line)} waiting"]
        for n, entry in enumerate(line, 1):
            waited = _ago((now - entry.arrived_at).total_seconds())
            expect = f", expected {_ago(waits[n - 1])}" if waits else ""
            prio = f", priority {entry.priority}" if entry.priority else ""
            lines.append(
                f"{n}. {entry.name or 'customer'} (#{entry.conversation}) waiting {waited}{prio}{expect}"
            )
        loads = await self.loads()
        agents = [
            f"{agent_label(m)}: {await self.status(m)}, {loads.get(m, 0)}/{self.capacity_of(m, team)}"
            for m in self.team(team).members
        ]
        lines.append("Agents: " + ("; ".join(agents) if agents else "none"))
        await ctx.notice("\n".join(lines))
        return HANDLED

    @on_command(
        "team",
        usage="[<team>]",
        help="the team at a glance: each agent's status, load and conversations, the line",
        ops_rooms=True,
    )
    async def show_team(self, ctx: Context, cmd: AgentCommand) -> Handled:
        """Post a team's view (every team's in the desk-wide ``ops`` room when none is named)."""
        if cmd.args or ctx.has_conversation or ctx.ops_team:
            names = [await self._team_here(ctx, cmd)]
        else:
            names = list(self.config.teams)
        unknown = [n for n in names if n not in self.config.teams]
        if unknown:
            await ctx.notice(f"No team {unknown[0]!r}. Teams: {', '.join(self.config.teams)}.")
            return HANDLED
        owned: dict[str, list[str]] = {}
        for conversation, owner in sorted((await self.owners.items()).items(), key=lambda kv: int(kv[0])):
            owned.setdefault(owner["agent"], []).append(f"#{conversation}")
        now = self.now()
        blocks = []
        for team in names:
            line = await self.queue.line(team)
            state = "open" if self.hours(team).is_open(now) else "closed"
            oldest = f", oldest waiting {_ago((now - line[0].arrived_at).total_seconds())}" if line else ""
            rows = [f"Team {team} ({state}, {self.team(team).assignment.value}): {len(line)} waiting{oldest}"]
            for member in self.team(team).members:
                mine = owned.get(member, [])
                status = await self.status(member)
                source = (await self.agents.get(member) or {}).get("source")
                how = f" ({source})" if source == "presence" else ""
                rows.append(
                    f"• {agent_label(member)}: {status}{how}, {len(mine)}/{self.capacity_of(member, team)}"
                    + (f": {', '.join(mine)}" if mine else "")
                )
            blocks.append("\n".join(rows))
        await ctx.notice("\n\n".join(blocks))
        return HANDLED

    @on_command("transfer", usage="<team>|@<agent>[: note]", help="hand this conversation on, with a note")
    async def transfer(self, ctx: Context, cmd: AgentCommand) -> Handled:
        """Hand the conversation to a team's line or to an agent; the note and the history go with it."""
        raw = cmd.raw.strip()
        if not raw:
            await ctx.notice(
                f"Usage: !transfer <team>|@<agent>[: note]. Teams: {', '.join(self.config.teams)}."
            )
            return HANDLED
        head, _, rest = raw.partition(" ")
        target = head.rstrip(":")
        note = rest.strip().lstrip(":").strip()
        if not head.endswith(":") and ":" in head and not head.startswith("@"):
            target, _, first = head.partition(":")  # "billing:refund approved"
            note = f"{first} {note}".strip()
        texts = self.texts_for(ctx)
        who = agent_label(cmd.agent_id)
        if target.startswith("@"):
            agent = self.resolve_agent(target)
            if agent is None:
                await ctx.notice(f"No agent {target!r} in the teams. Give the full id (@bob:example.org).")
                return HANDLED
            if note:
                await ctx.note(f"Hand-over from {who} to {agent_label(agent)}: {note}")
            if not await ctx.assign(agent):
                await ctx.notice(f"!transfer changed nothing: this conversation is {ctx.conversation.state}.")
                return HANDLED
            await ctx.reply(texts.say("transfer_agent", agent=agent_label(agent)))
            return HANDLED
        if target not in self.config.teams:
            await ctx.notice(f"No team {target!r}. Teams: {', '.join(self.config.teams)}.")
            return HANDLED
        if note:
            await ctx.note(f"Hand-over from {who} to {target}: {note}")
        if not await ctx.transfer(target):
            await ctx.notice(f"!transfer changed nothing: this conversation is {ctx.conversation.state}.")
            return HANDLED
        for member in self.team(target).members:
            await ctx.invite(member)  # in Matrix: into this room, which holds the whole history
        members = ", ".join(self.team(target).members) or "(no members)"
        await ctx.mention(
            f"🔔 {target}: {members}: a conversation is handed to you{' with a note' if note else ''}.",
            *self.team(target).members,
        )
        await ctx.reply(texts.say("transfer_team", team=target))
        return HANDLED

    # -- response targets ----------------------------------------------------------------------

    async def _watch(self, ctx: Context, target: str, team: str, due: datetime, limit: timedelta) -> None:
        data = {"target": target, "team": team, "limit": limit.total_seconds()}
        await ctx.schedule("target", key=f"target:{target}", at=due, data=data)

    @on_schedule("target")
    async def target_missed(self, ctx: Context, fire: ScheduledFire) -> None:
        """A response target passed: tell the room and the team's ops room, once."""
        if not ctx.has_conversation:
            return
        target, team = str(fire.data["target"]), str(fire.data["team"])
        state = ctx.conversation.state
        if state == "closed" or (target == "first_response" and state == "assigned"):
            return
        label = TARGET_NAMES.get(target, target)
        limit = _ago(float(fire.data["limit"]))
        name = ctx.customer.name
        await ctx.notice(f"⚠ The {label} target ({limit}) of team {team} was missed in this conversation.")
        await self.services.post_to_ops(
            team,
            f"⚠ {label} target ({limit}) missed: {name} (conversation #{ctx.conversation.id}, {state}).",
            key=f"breach:{ctx.conversation.id}:{target}:{fire.task_id}:{fire.revision}",
        )
        if self.metrics is not None:
            self.metrics.breaches.labels(team, target).inc()

    # -- promises ------------------------------------------------------------------------------

    @on_command(
        "followup",
        usage="<when> <what> [--tell-customer] | cancel <n>",
        help="promise a follow-up: a reminder to the owner (and the customer) then",
    )
    async def followup(self, ctx: Context, cmd: AgentCommand) -> Handled:
        """Schedule a promise, or cancel one."""
        promises: list[dict[str, Any]] = list(await ctx.state.get("followups", []))
        if len(cmd.args) == 2 and cmd.args[0].lower() == "cancel":
            which = cmd.args[1].lstrip("#")
            found = next((p for p in promises if str(p["n"]) == which and not p.get("done")), None)
            if found is None:
                await ctx.notice(f"No open follow-up #{which}.")
                return HANDLED
            await ctx.cancel(f"followup:{which}")
            found["done"] = "cancelled"
            await ctx.state.set("followups", promises)
            await self._card_promises(ctx, promises)
            await ctx.notice(f"Follow-up #{which} cancelled.")
            return HANDLED
        team = await self.team_of(ctx)
        zone = ZoneInfo(self.team(team).timezone)
        try:
            promise = parse_followup(cmd.raw, self.now(), zone)
        except FollowupError as exc:
            await ctx.notice(str(exc))
            return HANDLED
        n = len(promises) + 1
        record: dict[str, Any] = {
            "n": n,
            "due": _iso(promise.due.astimezone(ZoneInfo("UTC"))),
            "what": promise.what,
            "tell": promise.tell_customer,
            "by": cmd.agent_id,
        }
        await ctx.schedule("followup", key=f"followup:{n}", at=promise.due, data=record)
        await ctx.state.set("followups", [*promises, record])
        await self._card_promises(ctx, [*promises, record])
        told = " The customer will get a message then." if promise.tell_customer else ""
        await ctx.notice(
            f"⏰ Follow-up #{n} set for {promise.due.astimezone(zone):%a %Y-%m-%d %H:%M} ({zone.key}): {promise.what}.{told}"
        )
        return HANDLED

    @on_command("followups", help="the open follow-ups of this conversation")
    async def followups(self, ctx: Context, cmd: AgentCommand) -> Handled:
        """List the open promises."""
        open_promises = [p for p in await ctx.state.get("followups", []) if not p.get("done")]
        if not open_promises:
            await ctx.notice("No open follow-ups.")
            return HANDLED
        lines = [
            f"#{p['n']} {p['due'][:16]} UTC: {p['what']}{' (tells the customer)' if p['tell'] else ''}"
            for p in open_promises
        ]
        await ctx.notice("Open follow-ups:\n" + "\n".join(lines))
        return HANDLED

    @on_schedule("followup")
    async def followup_due(self, ctx: Context, fire: ScheduledFire) -> None:
        """A promise is due: remind the owner (or whoever made it), and tell the customer if promised."""
        if not ctx.has_conversation:
            return
        n = fire.data["n"]
        owner = await self.owners.get(str(ctx.conversation.id))
        who = owner["agent"] if owner else str(fire.data["by"])
        await ctx.notice(f"⏰ {who}: follow-up #{n} is due: {fire.data['what']}")
        if fire.data.get("tell"):
            await ctx.reply(self.texts_for(ctx).say("followup", what=fire.data["what"]))
        promises: list[dict[str, Any]] = list(await ctx.state.get("followups", []))
        for p in promises:
            if p["n"] == n:
                p["done"] = "fired"
        await ctx.state.set("followups", promises)
        await self._card_promises(ctx, promises)

    async def _card_promises(self, ctx: Context, promises: list[dict[str, Any]]) -> None:
        """The card lists the open promises (in the team's time zone), or nothing when none is open."""
        zone = ZoneInfo(self.team(await self.team_of(ctx)).timezone)
        open_ones = [
            f"#{p['n']} {datetime.fromisoformat(p['due']).astimezone(zone):%a %d %b %H:%M} {p['what']}"
            + (" (tells the customer)" if p.get("tell") else "")
            for p in promises
            if not p.get("done")
        ]
        await ctx.card_note("promises", "Promises: " + "; ".join(open_ones) if open_ones else None)
