"""The conversation service: every change of a conversation's state, team or owner, logged and published.

A customer's events and an agent's events of one conversation run in parallel (different bus keys),
so a change is a compare-and-set: ``UPDATE conversation SET ... WHERE id = ? AND state = ? AND
team_id IS ? AND assignee_id IS ?`` on the values last read, retried on a fresh read while the
transition is still allowed by :data:`TRANSITIONS`. It says whether it applied. An applied change
is appended to the conversation log (:class:`storage.models.ConversationLog`) in the same
transaction, announced in the room (notice, card) and published as a :class:`ConversationEvent` on
the bus under the conversation's key ``conv:<id>``, where plugins' ``@on_conversation_event``
handlers run like any other event's.

Replay: a log row carries the key of the action that made it (unique), so an event handled again
after a crash finds its change there (the compare-and-set no longer applies), counts it as applied
and publishes it again; the ConversationEvent's receipt (``conversation``, log id) drops the copy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from tortoise.exceptions import IntegrityError

from bot_core.conversations import (
    current_customer_id,
    get_or_create_agent,
    get_or_create_team,
    opened_log_columns,
)
from bot_core.events import ConversationEvent, LifecycleKind, utcnow
from bot_core.rooms import RoomDirectory
from storage import hot
from storage.db import transaction
from storage.models import (
    Agent,
    Conversation,
    ConversationLog,
    ConversationState,
    Customer,
    Identity,
    Room,
    Team,
)

if TYPE_CHECKING:
    from bot_core.context import ActionKeys, Context
    from bot_core.outbox import Outbox

log = logging.getLogger("relaydesk.conversations")

S = ConversationState
_OPEN = frozenset({S.BOT, S.QUEUED, S.ASSIGNED})


@dataclass(frozen=True)
class Transition:
    """Which states a lifecycle change may start from, and the state it leads to."""

    from_states: frozenset[ConversationState]
    to: ConversationState


TRANSITIONS: Mapping[LifecycleKind, Transition] = {
    # a bot hands over to the queue; never from assigned: a hand-over must not undo an agent's claim
    LifecycleKind.QUEUED: Transition(frozenset({S.BOT}), S.QUEUED),
    # an agent takes it (claims, or answers first); assigned -> assigned only to another agent
    LifecycleKind.ASSIGNED: Transition(_OPEN, S.ASSIGNED),
    # to another team's queue, with the whole conversation
    LifecycleKind.TRANSFERRED: Transition(_OPEN, S.QUEUED),
    LifecycleKind.CLOSED: Transition(_OPEN, S.CLOSED),
}
"""The allowed changes. ``opened`` is no transition: a conversation is created in ``bot`` (by a customer's
message, or by outreach). ``closed`` is final: nothing leads out of it; the customer's next message opens
a new conversation (in the same room), which is how a closed case is "reopened"."""

_STAMP = {S.QUEUED: "queued_at", S.ASSIGNED: "assigned_at", S.CLOSED: "closed_at"}
_CAS_TRIES = 5

Publish = Callable[[ConversationEvent], Awaitable[None]]


@dataclass
class _Opening:
    """Serialises one process's outreaches to one customer (dropped when no one uses it)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


def _always(kind: LifecycleKind) -> bool:
    return True


class ConversationService:
    """Changes conversations (compare-and-set, log, room notice, bus event); the engine behind a Context."""

    def __init__(
        self,
        outbox: Outbox,
        rooms: RoomDirectory,
        publish: Publish,
        *,
        wants: Callable[[LifecycleKind], bool] = _always,
    ) -> None:
        self.outbox = outbox
        self.rooms = rooms
        self._publish = publish
        self._wants = wants
        self._opening: dict[int, _Opening] = {}

    # -- what a Context needs ------------------------------------------------------------------

    async def room_workspace(self, conversation: Conversation) -> str | None:
        """The workspace whose room shows the conversation now (:class:`bot_core.rooms.RoomDirectory`)."""
        return await self.rooms.workspace_of(conversation)

    async def ensure_agent(self, agent_id: str, workspace: str | None) -> Agent:
        """The agent with ``agent_id`` in ``workspace``."""
        return await get_or_create_agent(workspace or "", agent_id, None)

    # -- changes -------------------------------------------------------------------------------

    async def change(
        self,
        ctx: Context,
        kind: LifecycleKind,
        *,
        team: str | None = None,
        agent_id: str | None = None,
        only_from: Iterable[ConversationState] | None = None,
    ) -> bool:
        """Apply the ``kind`` change to the context's conversation if :data:`TRANSITIONS` allows it from
        the state it is in now (and, with ``only_from``, only from those states); True if it applied
        (or had applied in an earlier, interrupted handling of the same event)."""
        conversation = ctx.raw_conversation
        if conversation is None:
            raise RuntimeError(f"plugin '{ctx.plugin}': this event has no conversation")
        rule = TRANSITIONS[kind]
        allowed = rule.from_states if only_from is None else rule.from_states & frozenset(only_from)
        action_key = ctx.keys.next("state")
        team_row = await get_or_create_team(team) if team else None
        agent = None
        if agent_id:
            acting = ctx.agent if ctx.agent and ctx.agent.external_id == agent_id else None
            workspace = acting.workspace if acting else await self.room_workspace(conversation)
            agent = await self.ensure_agent(agent_id, workspace)
        by = ctx.agent.external_id if ctx.agent else ctx.plugin
        entry: ConversationLog | None = None
        current = conversation
        for attempt in range(_CAS_TRIES):
            if attempt:
                fresh = await Conversation.get_or_none(id=conversation.id)
                if fresh is None:
                    break
                current = fresh
            if current.state not in allowed:
                break
            new_team = team_row.id if team_row else current.team_id
            new_assignee = agent.id if agent else (None if rule.to is S.QUEUED else current.assignee_id)
            if (rule.to, new_team, new_assignee) == (current.state, current.team_id, current.assignee_id):
                break  # nothing would change (the same agent claims again)
            entry = await self._compare_and_set(
                current, rule.to, new_team, new_assignee, kind, team, agent_id, by, ctx.keys, action_key
            )
            if entry is not None:
                break
        if entry is None:
            entry = await ConversationLog.get_or_none(action_key=action_key)  # applied before a crash?
            if entry is None:
                log.info(
                    "conversation change refused",
                    extra={
                        "conversation": conversation.id,
                        "change": kind.value,
                        "state": current.state.value,
                        "by": by,
                    },
                )
                await self._sync(conversation)
                return False
        await self._sync(conversation)
        await self._announce(ctx, kind, conversation, team)
        await self._emit(entry)
        return True

    async def _compare_and_set(
        self,
        seen: Conversation,
        to: ConversationState,
        team_id: int | None,
        assignee_id: int | None,
        kind: LifecycleKind,
        team: str | None,
        agent_id: str | None,
        by: str,
        keys: ActionKeys,
        action_key: str,
    ) -> ConversationLog | None:
        """One compare-and-set on the values in ``seen``, and its log row in the same transaction."""
        now = utcnow()
        values: dict[str, object] = {
            "state": to,
            "team_id": team_id,
            "assignee_id": assignee_id,
            "updated_at": now,
        }
        if to in _STAMP:
            values[_STAMP[to]] = now
        async with transaction():
            applied = await Conversation.filter(
                id=seen.id, state=seen.state, team_id=seen.team_id, assignee_id=seen.assignee_id
            ).update(**values)
            if not applied:
                return None
            columns = {
                "conversation_id": seen.id,
                "what": kind.value,
                "from_state": seen.state.value,
                "to_state": to.value,
                "team": team,
                "agent_id": agent_id,
                "by": by,
                "event_key": keys.event_key,
                "action_key": action_key,
                "at": now,
            }
            log_id = await hot.insert_conversation_log(**columns)
        return ConversationLog(id=log_id, **columns)

    @staticmethod
    async def _sync(conversation: Conversation) -> None:
        """Bring the context's copy of the conversation up to date with the row."""
        fresh = await Conversation.get_or_none(id=conversation.id)
        if fresh is None:
            return
        for name in (
            "state",
            "team_id",
            "assignee_id",
            "queued_at",
            "assigned_at",
            "closed_at",
            "updated_at",
        ):
            setattr(conversation, name, getattr(fresh, name))

    async def opened(self, ctx: Context, *, by: str, logged: ConversationLog | None = None) -> None:
        """Log and publish that the context's conversation was just created (in ``bot``); ``logged``: its
        log entry, when it was written with the conversation (:attr:`Opened.opened_log`)."""
        conversation = ctx.raw_conversation
        assert conversation is not None
        entry = logged or await self._log_opened(conversation, ctx.keys, by)
        await self._opened_room(ctx)
        await self._emit(entry)

    @staticmethod
    async def _log_opened(conversation: Conversation, keys: ActionKeys, by: str) -> ConversationLog:
        columns = {
            **opened_log_columns(keys.event_key, by, conversation.state),
            "conversation_id": conversation.id,
            "at": conversation.created_at,
        }
        action_key = str(columns["action_key"])
        try:
            return ConversationLog(id=await hot.insert_conversation_log(**columns), **columns)
        except IntegrityError:
            found = await ConversationLog.get_or_none(action_key=action_key)
            if found is None:
                raise
            return found

    async def _opened_room(self, ctx: Context) -> None:
        conversation = ctx.raw_conversation
        assert conversation is not None
        workspace = await self.room_workspace(conversation)
        if workspace and conversation.room_id:
            # a new conversation in a returning customer's room refreshes its card (a new room shows one)
            await self.outbox.enqueue_room(conversation, workspace, "card", key=ctx.keys.next("card"))

    async def republish(self, event_key: str) -> None:
        """Publish again every change the event ``event_key`` made (after a crash interrupted it)."""
        for entry in await ConversationLog.filter(event_key=event_key).order_by("id"):
            await self._emit(entry)

    async def _emit(self, entry: ConversationLog) -> None:
        kind = LifecycleKind(entry.what)
        if not self._wants(kind):
            return
        await self._publish(
            ConversationEvent(
                kind=kind,
                conversation_id=entry.conversation_id,
                team=entry.team,
                agent_id=entry.agent_id,
                by=entry.by,
                log_id=entry.id,
                from_state=entry.from_state,
                to_state=entry.to_state,
                timestamp=entry.at,
            )
        )

    async def _announce(
        self,
        ctx: Context,
        kind: LifecycleKind,
        conversation: Conversation,
        team: str | None,
    ) -> None:
        """The room's notice of a change, and the card refreshed.

        A transfer to a team on another workspace first tells the room the conversation is shown in
        (bound to), then the room in the team's workspace (the customer's, opened by its first post)
        gets the notice and card. Whether it moved is read from the binding, not from before the change,
        so an event replayed after a crash decides the same while that notice was not posted yet.
        """
        workspace = await self.room_workspace(conversation)
        if kind is LifecycleKind.TRANSFERRED:
            moved_key = ctx.keys.next("moved")  # taken either way: the keys after it stay the same
            shown_in = await _bound_workspace(conversation)
            if shown_in and shown_in != workspace:
                await self.outbox.enqueue_room(
                    conversation,
                    shown_in,
                    "notice",
                    key=moved_key,
                    text=f"➡ Transferred to {team} on {workspace or 'no workspace'}: the conversation "
                    "continues there (the earlier messages stay here); answers written here are no longer "
                    "relayed.",
                )
        if not workspace:
            return
        text = await _lifecycle_text(kind, conversation, team)
        if text:
            await self.outbox.enqueue_room(
                conversation, workspace, "notice", key=ctx.keys.next("lifecycle"), text=text
            )
        await self.outbox.enqueue_room(conversation, workspace, "card", key=ctx.keys.next("card"))

    # -- outreach --------------------------------------------------------------------------------

    async def customer_context(
        self, ctx: Context, customer_id: int, *, channel: str | None = None, reuse_closed: bool = False
    ) -> Context:
        """A context for writing to a customer outside of their conversation's events.

        It writes into the customer's open conversation when there is one; else into their last
        conversation when ``reuse_closed`` (a satisfaction survey about the case just closed: the
        closed conversation stays closed), else it opens an outbound conversation (in ``bot``, in the
        customer's room; their answer continues it). ``channel`` picks the identity to write to; by
        default the one of their last conversation.
        """
        from bot_core.context import Context

        customer_id = await current_customer_id(customer_id)  # a merged customer's id names the survivor
        customer = await Customer.get_or_none(id=customer_id)
        if customer is None:
            raise LookupError(f"plugin '{ctx.plugin}': no customer {customer_id}")
        opening = self._opening.setdefault(customer_id, _Opening())
        opening.users += 1
        try:
            async with opening.lock:  # two outreaches of one process never open two conversations
                conversation, identity, entry = await self._outbound_conversation(
                    ctx, customer_id, channel, reuse_closed
                )
        finally:
            opening.users -= 1
            if not opening.users:
                del self._opening[customer_id]
        out = Context(
            self, ctx.plugin, ctx.keys, conversation=conversation, customer=customer, identity=identity
        )
        if entry is not None:
            log.info(
                "outbound conversation opened",
                extra={"conversation": conversation.id, "customer": customer_id, "plugin": ctx.plugin},
            )
            await self._opened_room(out)
            await self._emit(entry)
        return out

    async def _outbound_conversation(
        self, ctx: Context, customer_id: int, channel: str | None, reuse_closed: bool
    ) -> tuple[Conversation, Identity, ConversationLog | None]:
        """The conversation an outreach writes into, and the log row when it was opened for it."""
        last = await Conversation.filter(customer_id=customer_id).order_by("-id").first()
        identity = await _identity_for(customer_id, channel, last)
        if identity is None:
            raise LookupError(f"plugin '{ctx.plugin}': customer {customer_id} has no identity on {channel}")
        conversation = (  # one open conversation per customer, whichever identity it runs on
            await Conversation.filter(customer_id=customer_id).exclude(state=S.CLOSED).order_by("-id").first()
        )
        if conversation is None and reuse_closed and last is not None:
            conversation = last
        if conversation is not None:
            return conversation, identity, None
        async with transaction():  # created and logged together
            conversation = await Conversation.create(
                customer_id=customer_id,
                identity_id=identity.id,
                room_id=last.room_id if last else None,
                state=S.BOT,
            )
            entry = await self._log_opened(conversation, ctx.keys, ctx.plugin)
        return conversation, identity, entry


async def _bound_workspace(conversation: Conversation) -> str | None:
    """The workspace of the room the conversation is bound to (None before its first post)."""
    if not conversation.room_id:
        return None
    room = await Room.get_or_none(id=conversation.room_id)
    return room.workspace if room else None


async def _identity_for(customer_id: int, channel: str | None, last: Conversation | None) -> Identity | None:
    if channel is not None:
        return await Identity.filter(customer_id=customer_id, channel=channel).order_by("-id").first()
    if last is not None:
        return await Identity.get_or_none(id=last.via_identity_id or last.identity_id)
    return await Identity.filter(customer_id=customer_id).order_by("-id").first()


async def _lifecycle_text(kind: LifecycleKind, conversation: Conversation, team: str | None) -> str:
    if kind is LifecycleKind.QUEUED:
        current = await Team.get_or_none(id=conversation.team_id) if conversation.team_id else None
        name = team or (current.name if current else None)
        return f"⏳ Waiting for an agent{f' in {name}' if name else ''}."
    if kind is LifecycleKind.ASSIGNED:
        agent = await Agent.get_or_none(id=conversation.assignee_id) if conversation.assignee_id else None
        who = (agent.display_name or agent.external_id) if agent else "an agent"
        return f"👤 Assigned to {who}."
    if kind is LifecycleKind.TRANSFERRED:
        current = await Team.get_or_none(id=conversation.team_id) if conversation.team_id else None
        return f"➡ Transferred to {current.name if current else team}, with the whole conversation."
    if kind is LifecycleKind.CLOSED:
        return "✅ Conversation closed. The customer's next message opens a new one here."
    return ""


# -- times from the log ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConversationTimes:
    """Durations of one conversation, from its log (None: that moment has not come).

    ``first_response``: from opened to the first ``assigned`` (an agent claimed it or answered).
    ``queue_wait``: the time spent ``queued`` in all (every wait, transfers included), up to ``now``
    while it still waits. ``first_wait``: from the first time it was queued to the first ``assigned``.
    ``handle``: the time spent ``assigned`` in all (up to ``now`` while assigned). ``resolution``:
    from opened to closed. ``transfers``: how many times it was transferred.
    """

    first_response: timedelta | None
    first_wait: timedelta | None
    queue_wait: timedelta
    handle: timedelta
    resolution: timedelta | None
    transfers: int


def times_from_log(entries: Iterable[ConversationLog], now: datetime | None = None) -> ConversationTimes:
    """Compute :class:`ConversationTimes` from a conversation's log rows (in any order)."""
    rows = sorted(entries, key=lambda e: (e.at, e.id))
    now = now or utcnow()
    opened_at = next(
        (e.at for e in rows if e.what == LifecycleKind.OPENED.value), rows[0].at if rows else None
    )
    first_assigned = next((e.at for e in rows if e.what == LifecycleKind.ASSIGNED.value), None)
    first_queued = next((e.at for e in rows if e.to_state == S.QUEUED.value), None)
    closed_at = next((e.at for e in rows if e.to_state == S.CLOSED.value), None)
    spent = {S.QUEUED.value: timedelta(), S.ASSIGNED.value: timedelta()}
    for entry, following in zip(rows, [*rows[1:], None], strict=True):
        if entry.to_state in spent:
            end = following.at if following is not None else now
            spent[entry.to_state] += end - entry.at
    return ConversationTimes(
        first_response=first_assigned - opened_at if first_assigned and opened_at else None,
        first_wait=first_assigned - first_queued
        if first_assigned and first_queued and first_assigned >= first_queued
        else None,
        queue_wait=spent[S.QUEUED.value],
        handle=spent[S.ASSIGNED.value],
        resolution=closed_at - opened_at if closed_at and opened_at else None,
        transfers=sum(e.what == LifecycleKind.TRANSFERRED.value for e in rows),
    )


async def conversation_times(conversation_id: int, now: datetime | None = None) -> ConversationTimes:
    """First response, waits and handle time of one conversation, from its log."""
    return times_from_log(await ConversationLog.filter(conversation_id=conversation_id), now)
