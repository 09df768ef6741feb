"""The handler context: the only way a plugin acts on a conversation.

Every action is stored before it has any effect outside: replies become outbox rows, state changes
go through the conversation service (compare-and-set, logged, published as conversation events). Outbox rows get idempotency keys derived from the event
being handled, so an event handled again after a crash does not send twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F

from bot_core import consent
from bot_core.adapters import TemplateRef
from bot_core.choices import Choice, numbered
from bot_core.consent import ConsentInfo
from bot_core.conversations import card_notes_scope
from bot_core.events import Attachment, LifecycleKind, utcnow
from storage.locks import db_lock
from storage.models import (
    Agent,
    Conversation,
    ConversationState,
    Customer,
    Direction,
    Identity,
    Message,
    PluginState,
    ScheduledTask,
)

if TYPE_CHECKING:
    from bot_core.outbox import Outbox

MAX_TASK_KEY = 255  # the column's width (scheduled_task.key)


class EngineHooks(Protocol):
    """What a context needs from the engine beyond storage (:class:`bot_core.conversation_service.ConversationService`)."""

    outbox: Outbox

    async def room_workspace(self, conversation: Conversation) -> str | None:
        """The workspace instance whose room shows this conversation (None if no workspace is enabled)."""
        ...

    async def change(
        self,
        ctx: Context,
        kind: LifecycleKind,
        *,
        team: str | None = None,
        agent_id: str | None = None,
        only_from: Iterable[ConversationState] | None = None,
    ) -> bool:
        """Apply a lifecycle change if the transition table allows it now; True if it applied."""
        ...

    async def customer_context(
        self, ctx: Context, customer_id: int, *, channel: str | None = None, reuse_closed: bool = False
    ) -> Context:
        """A context writing to the customer: their open conversation, or a new outbound one."""
        ...


@dataclass(frozen=True)
class CustomerInfo:
    """What a plugin may read about the customer."""

    id: int
    name: str
    channel: str
    external_user_id: str
    attributes: dict[str, str]
    tags: tuple[str, ...]
    reachable: bool
    timezone: str | None = None
    """An IANA time zone name (``Europe/Berlin``), when a channel told it."""
    locale: str | None = None
    """A BCP 47 language tag (``de-CH``), when a channel told it."""


@dataclass(frozen=True)
class ConversationInfo:
    """What a plugin may read about the conversation (as of when the event was taken)."""

    id: int
    state: str
    team_id: int | None
    assignee_id: int | None
    tags: tuple[str, ...]
    created_at: datetime


class StateStore:
    """A plugin's key-value store for one scope (this conversation, this customer, or global)."""

    def __init__(self, plugin: str, scope: str) -> None:
        self.plugin = plugin
        self.scope = scope

    async def get(self, key: str, default: Any = None) -> Any:
        """The stored value for ``key``, or ``default``."""
        row = await PluginState.get_or_none(plugin=self.plugin, scope=self.scope, key=key)
        return default if row is None else row.value["v"]  # type: ignore[index]

    async def set(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable ``value`` under ``key``."""
        # wrapped: tortoise's JSONField reads a bare str given to update() as already-encoded JSON
        value = {"v": value}
        updated = await PluginState.filter(plugin=self.plugin, scope=self.scope, key=key).update(value=value)
        if not updated:
            try:
                await PluginState.create(plugin=self.plugin, scope=self.scope, key=key, value=value)
            except IntegrityError:
                await PluginState.filter(plugin=self.plugin, scope=self.scope, key=key).update(value=value)

    async def add(self, key: str, value: Any) -> bool:
        """Store ``value`` under ``key`` only if the key is new; False (nothing changed) if it exists.

        One of several workers adding the same key at once wins: a record made once (a click, a vote).
        """
        try:
            await PluginState.create(plugin=self.plugin, scope=self.scope, key=key, value={"v": value})
        except IntegrityError:
            return False
        return True

    async def delete(self, key: str) -> None:
        """Forget ``key``."""
        await PluginState.filter(plugin=self.plugin, scope=self.scope, key=key).delete()

    async def items(self, *, changed_since: datetime | None = None) -> dict[str, Any]:
        """Every key and value in this scope (with ``changed_since``: only those set at or after it)."""
        query = PluginState.filter(plugin=self.plugin, scope=self.scope)
        if changed_since is not None:
            query = query.filter(updated_at__gte=changed_since)
        rows = await query.values("key", "value")
        return {r["key"]: r["value"]["v"] for r in rows}

    def lock(self, key: str, *, timeout: float = 60.0) -> AbstractAsyncContextManager[None]:
        """``async with store.lock(key):`` runs the block in one task of one worker at a time, across
        every worker on the database (PostgreSQL: an advisory lock; SQLite, one process: an in-process
        lock; see :mod:`storage.locks`). For a read-decide-write that must not interleave (handing out
        a team's line against agents' capacities). Keep the block short; it is not re-entrant; raises
        ``TimeoutError`` when the lock is not free within ``timeout`` seconds."""
        return db_lock(f"{self.plugin}:{self.scope}:{key}", timeout=timeout)


@dataclass
class ActionKeys:
    """Hands out deterministic idempotency keys for the outbox rows one event produces."""

    event_key: str
    _n: int = field(default=0)

    def next(self, what: str) -> str:
        """A key unique to this event and this action's position in its handling."""
        self._n += 1
        return f"{self.event_key}:{self._n}:{what}"


class Context:
    """Handed to every handler: read the customer and conversation, act through the methods."""

    def __init__(
        self,
        engine: EngineHooks,
        plugin: str,
        keys: ActionKeys,
        *,
        conversation: Conversation | None = None,
        customer: Customer | None = None,
        identity: Identity | None = None,
        agent: Agent | None = None,
        ops_room: tuple[str, str] | None = None,
    ) -> None:
        self._engine = engine
        self.plugin = plugin
        self._keys = keys
        self._conversation = conversation
        self._customer = customer
        self._identity = identity
        self.agent = agent
        self._ops_room = ops_room  # (workspace, ops channel) of a command typed in an ops room
        self._topic = consent.SERVICE

    def for_plugin(self, plugin: str) -> Context:
        """The same context seen by another plugin (same event, same key sequence)."""
        other = Context(
            self._engine,
            plugin,
            self._keys,
            conversation=self._conversation,
            customer=self._customer,
            identity=self._identity,
            agent=self.agent,
            ops_room=self._ops_room,
        )
        other._topic = self._topic
        return other

    async def for_customer(
        self,
        customer_id: int,
        *,
        channel: str | None = None,
        reuse_closed: bool = False,
        topic: str = consent.SERVICE,
    ) -> Context:
        """A context for writing to customer ``customer_id`` (outreach, follow-ups, surveys), from any handler.

        Its ``reply`` goes into the customer's open conversation; when they have none, an outbound
        conversation is opened (in their room, logged and announced as ``opened``; their answer
        continues it), or with ``reuse_closed=True`` it writes into their last conversation even though
        it is closed (it stays closed). ``channel`` chooses which of their identities gets it.

        ``topic`` is what its replies are about: ``service`` (the customer's own case: sent unless
        they opted out) or ``marketing`` (sent only with their opt-in, see :meth:`consent`). A reply
        without consent is not sent and the room is told why.
        """
        consent.check_topic(topic)
        out = await self._engine.customer_context(
            self, customer_id, channel=channel, reuse_closed=reuse_closed
        )
        out._topic = topic
        return out

    # -- reading -------------------------------------------------------------------------------

    @property
    def customer(self) -> CustomerInfo:
        """The customer of this conversation."""
        customer, identity = self._require_customer()
        return CustomerInfo(
            id=customer.id,
            name=identity.display_name or customer.display_name,
            channel=identity.channel,
            external_user_id=identity.external_id,
            attributes=dict(customer.attributes),
            tags=tuple(customer.tags),
            reachable=identity.reachable,
            timezone=customer.timezone,
            locale=customer.locale,
        )

    @property
    def conversation(self) -> ConversationInfo:
        """The conversation the event belongs to."""
        conv = self._require_conversation()
        return ConversationInfo(
            id=conv.id,
            state=conv.state.value,
            team_id=conv.team_id,
            assignee_id=conv.assignee_id,
            tags=tuple(conv.tags),
            created_at=conv.created_at,
        )

    async def consent(self, topic: str) -> ConsentInfo | None:
        """The customer's recorded consent for ``topic`` (``service`` or ``marketing``), None if never given.

        None means the defaults apply: service replies are sent, marketing is not.
        """
        return await consent.read(self._require_customer()[0].id, topic)

    @property
    def has_conversation(self) -> bool:
        """False for global scheduled jobs and commands typed in an ops room, which have no conversation."""
        return self._conversation is not None

    @property
    def ops_channel(self) -> str | None:
        """For a command typed in an ops room: that room's channel (``ops-<team>``, or ``ops``); else None."""
        return self._ops_room[1] if self._ops_room else None

    @property
    def ops_team(self) -> str | None:
        """For a command typed in a team's ops room (``ops-<team>``): the team; else None."""
        channel = self.ops_channel
        return channel.removeprefix("ops-") if channel and channel.startswith("ops-") else None

    @property
    def state(self) -> StateStore:
        """This plugin's store scoped to this conversation."""
        return StateStore(self.plugin, f"conversation:{self._require_conversation().id}")

    @property
    def customer_state(self) -> StateStore:
        """This plugin's store scoped to this customer (kept across conversations)."""
        return StateStore(self.plugin, f"customer:{self._require_customer()[0].id}")

    @property
    def global_state(self) -> StateStore:
        """This plugin's store shared by every conversation."""
        return StateStore(self.plugin, "global")

    # -- acting --------------------------------------------------------------------------------

    async def reply(
        self,
        text: str,
        attachments: tuple[Attachment, ...] = (),
        *,
        topic: str | None = None,
        template: TemplateRef | None = None,
        choices: Iterable[Choice] = (),
        choices_listed: bool = False,
        menu: str = "",
    ) -> str:
        """Send ``text`` to the customer as the bot; agents see it in the room as a notice.

        ``choices`` (:class:`~bot_core.choices.Choice`) are offered as buttons where the channel has
        them and as a numbered list after ``text`` elsewhere (``choices_listed``: ``text`` lists them
        already, numbered); ``menu`` labels the button that opens them where the channel needs one. A
        press comes back as a customer message with ``choice`` set to the choice's id
        (:func:`~bot_core.choices.picked` also reads a typed number or title).

        ``topic`` defaults to the context's (``service``, or the one given to :meth:`for_customer`); a
        reply the customer has not consented to is not sent, and the room is told why. With
        ``template`` the channel sends that approved template where it can (WhatsApp outside its
        24-hour window, say) and ``text`` (its rendering) otherwise.

        Returns the delivery's key (the same when the event is handled again):
        :func:`bot_core.api.deliveries` tells later whether it went through.
        """
        conv = self._require_conversation()
        _, identity = self._require_customer()
        offered = tuple(choices)
        message = await Message.create(
            conversation_id=conv.id,
            direction=Direction.OUTBOUND,
            author=f"bot:{self.plugin}",
            text=text,
            attachments=[a.model_dump(mode="json") for a in attachments],
            channel=identity.channel,
        )
        key = self._keys.next("reply")
        await self._engine.outbox.enqueue_customer(
            conv,
            identity,
            text,
            key=key,
            attachments=attachments,
            message=message,
            topic=topic or self._topic,
            template=template,
            choices=offered,
            choices_listed=choices_listed,
            menu=menu,
        )
        shown = text if choices_listed or not offered else numbered(text, offered)
        await self._room_notice(f"🤖 {self.plugin} answered: {shown}")
        return key

    async def react(self, emoji: str, message: str) -> None:
        """Put ``emoji`` on the customer's message ``message`` (its ``external_message_id``), on channels
        with reactions (``""`` removes it); skipped elsewhere. Sent through the outbox like a reply."""
        conv = self._require_conversation()
        _, identity = self._require_customer()
        await self._engine.outbox.enqueue_reaction(
            conv, identity, emoji, message, key=self._keys.next("reaction")
        )

    async def note(self, text: str) -> None:
        """Post an internal note in the room; it is stored and never sent to the customer."""
        conv = self._require_conversation()
        await Message.create(
            conversation_id=conv.id,
            direction=Direction.NOTE,
            author=self.agent.display_name or self.agent.external_id if self.agent else f"bot:{self.plugin}",
            text=text,
            channel="",
        )
        await self._room_notice(f"📝 Note: {text}")

    async def notice(self, text: str) -> None:
        """Post a notice from the bot in the room (not stored as a conversation message)."""
        await self._room_notice(text)

    async def set_consent(self, topic: str, granted: bool, source: str) -> None:
        """Record the customer's opt-in (``granted``) or opt-out for ``topic``, and where it came from
        (``"web widget checkbox"``, ``"agent !consent"``); the room is told when it changes."""
        customer, _ = self._require_customer()
        key = self._keys.next("consent")  # taken either way: the keys of later actions stay the same
        changed = await consent.record(customer.id, topic, granted, source)
        workspace = await self._engine.room_workspace(self._conversation) if self._conversation else None
        if changed and workspace and self._conversation is not None:
            word = "opted in to" if granted else "opted out of"
            text = f"✓ The customer {word} {topic} messages ({source})."
            await self._engine.outbox.enqueue_room(
                self._conversation, workspace, "notice", key=key, text=text
            )

    async def queue(self, team: str | None = None) -> bool:
        """Put the conversation in the queue (of ``team`` when given) for an agent to take.

        Only a conversation still with the bot is queued: False when it is not (an agent claimed it
        meanwhile, it is closed, or it already waits).
        """
        return await self._engine.change(self, LifecycleKind.QUEUED, team=team)

    async def assign(self, agent_id: str, *, unowned: bool = False) -> bool:
        """Give the conversation to the agent with workspace id ``agent_id``; False if it is closed or theirs.

        With ``unowned=True`` only a conversation no agent has (with the bot, or waiting) is given: an
        automatic hand-out never takes a conversation from an agent who claimed it meanwhile.
        """
        only_from = (ConversationState.BOT, ConversationState.QUEUED) if unowned else None
        return await self._engine.change(self, LifecycleKind.ASSIGNED, agent_id=agent_id, only_from=only_from)

    async def transfer(self, team: str) -> bool:
        """Hand the conversation, with its whole history, to ``team``'s queue; False if it is closed."""
        return await self._engine.change(self, LifecycleKind.TRANSFERRED, team=team)

    async def close(self) -> bool:
        """Close the conversation (the customer's next message opens a new one in the same room); False if
        it was closed already."""
        return await self._engine.change(self, LifecycleKind.CLOSED)

    async def card_note(self, key: str, text: str | None) -> None:
        """Keep ``text`` as a line of this conversation's card under ``key`` (this plugin's), or drop it
        with None; the card is refreshed. For what agents must see at a glance: open promises, a deadline."""
        conv = self._require_conversation()
        store = StateStore(self.plugin, card_notes_scope(conv.id))
        if text is None:
            await store.delete(key)
        else:
            await store.set(key, text)
        workspace = await self._engine.room_workspace(conv)
        card_key = self._keys.next("card")
        if workspace:
            await self._engine.outbox.enqueue_room(conv, workspace, "card", key=card_key)

    async def mention(self, text: str, *agent_ids: str) -> None:
        """Post ``text`` in the room addressed to the agents ``agent_ids``: their clients notify them where
        the workspace can (Matrix: a mention), else it is a notice like :meth:`notice`."""
        conv = self._require_conversation()
        key = self._keys.next("mention")
        workspace = await self._engine.room_workspace(conv)
        if workspace:
            await self._engine.outbox.enqueue_room(
                conv, workspace, "mention", key=key, text=text, details={"users": list(agent_ids)}
            )

    async def invite(self, agent_id: str) -> None:
        """Make sure the agent with workspace id ``agent_id`` can see this conversation's room.

        In a workspace whose agents see a room by being in it (Matrix) they are invited unless they are
        there already (through the outbox: a crash loses nothing); elsewhere nothing needs doing.
        """
        conv = self._require_conversation()
        key = self._keys.next("invite")
        workspace = await self._engine.room_workspace(conv)
        if workspace:
            await self._engine.outbox.enqueue_room(
                conv, workspace, "invite", key=key, details={"user": agent_id}
            )

    async def tag(self, *tags: str) -> None:
        """Add tags to the conversation and the customer (shown on the card)."""
        conv = self._require_conversation()
        customer, _ = self._require_customer()
        clean = [t.strip().lower() for t in tags if t.strip()]
        conv.tags = sorted(set(conv.tags) | set(clean))
        await conv.save(update_fields=["tags", "updated_at"])
        customer.tags = sorted(set(customer.tags) | set(clean))
        await customer.save(update_fields=["tags"])
        workspace = await self._engine.room_workspace(conv)
        if workspace:
            await self._engine.outbox.enqueue_room(conv, workspace, "card", key=self._keys.next("card"))

    async def rate(
        self, score: int, comment: str | None = None, *, conversation_id: int | None = None
    ) -> bool:
        """Record the customer's satisfaction with a conversation of theirs (``score`` 1-5, an optional
        ``comment``): this one, or ``conversation_id`` (a survey answered after its conversation closed).

        Shown on the card (``satisfaction``). A score of None keeps the recorded one (a comment added
        later). False when ``conversation_id`` is not this customer's conversation.
        """
        if not 1 <= score <= 5:
            raise ValueError(f"plugin '{self.plugin}': a satisfaction score is 1 to 5, not {score}")
        customer, _ = self._require_customer()
        target = conversation_id if conversation_id is not None else self._require_conversation().id
        values: dict[str, Any] = {"satisfaction": score}
        if comment is not None:
            values["satisfaction_comment"] = comment[:2000]
        updated = await Conversation.filter(id=target, customer_id=customer.id).update(**values)
        if updated and self._conversation is not None:
            workspace = await self._engine.room_workspace(self._conversation)
            if workspace:
                await self._engine.outbox.enqueue_room(
                    self._conversation, workspace, "card", key=self._keys.next("card")
                )
        return bool(updated)

    async def schedule(
        self,
        job: str,
        *,
        key: str | None = None,
        delay: float | timedelta | None = None,
        at: datetime | None = None,
        data: dict[str, Any] | None = None,
    ) -> str:
        """Run this plugin's ``@on_schedule(job)`` handler at ``at`` or after ``delay``; returns the task's key.

        The task belongs to this conversation (or is global for an event without one). ``key`` names it
        within this plugin and conversation: scheduling a key that exists *moves* it (new time, job and
        data; a task that fired or was cancelled is armed again), so one task per key is ever pending.
        Without ``key``, the key is derived from the event being handled and this call's place in its
        handling. Either way, an event handled again after a crash (a replay) does not schedule twice.
        """
        if at is not None and delay is not None:
            raise ValueError(f"plugin '{self.plugin}': schedule() takes at= or delay=, not both")
        if at is None:
            seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay or 0)
            at = utcnow() + timedelta(seconds=seconds)
        elif at.tzinfo is None:
            raise ValueError(f"plugin '{self.plugin}': schedule(at=) needs a timezone-aware datetime")
        if key is not None and not 0 < len(key) <= MAX_TASK_KEY:
            raise ValueError(f"plugin '{self.plugin}': a task key must have 1 to {MAX_TASK_KEY} characters")
        source = self._keys.next("schedule")
        task_key = key or source
        ident: dict[str, Any] = {"plugin": self.plugin, "scope": self._task_scope(), "key": task_key}
        values: dict[str, Any] = {
            "job": job,
            "conversation_id": self._conversation.id if self._conversation else None,
            "data": data or {},
            "due_at": at,
            "source": source,
        }
        existing = await ScheduledTask.get_or_none(**ident)
        if existing is None:
            try:
                await ScheduledTask.create(**ident, **values)
                return task_key
            except IntegrityError:  # another worker created it first (a global key): move it below
                existing = await ScheduledTask.get(**ident)
        if existing.source == source:
            return task_key  # this very call, made before a crash: the event is being replayed
        await ScheduledTask.filter(id=existing.id).update(
            **values, fired_at=None, ran_at=None, cancelled_at=None, revision=F("revision") + 1
        )
        return task_key

    async def cancel(self, key: str) -> bool:
        """Cancel this plugin's task ``key`` (in this conversation) unless it ran; True if this call did.

        A cancelled task never runs, even one already due and waiting on the bus behind this event.
        Cancelling again (or in a replay of this event) returns False. ``fired_at`` is set too, so the
        scheduler's scan for due tasks (``fired_at IS NULL``, indexed) never wades through cancelled ones.
        """
        cancelled = await ScheduledTask.filter(
            plugin=self.plugin, scope=self._task_scope(), key=key, ran_at=None, cancelled_at=None
        ).update(cancelled_at=utcnow(), fired_at=utcnow(), revision=F("revision") + 1)
        return bool(cancelled)

    # -- internals -----------------------------------------------------------------------------

    async def _room_notice(self, text: str) -> None:
        if self._conversation is None and self._ops_room is not None:
            ops_workspace, channel = self._ops_room  # the answer to a command typed in an ops room
            await self._engine.outbox.enqueue_ops(ops_workspace, channel, text, key=self._keys.next("ops"))
            return
        conv = self._require_conversation()
        workspace = await self._engine.room_workspace(conv)
        if workspace:
            await self._engine.outbox.enqueue_room(
                conv, workspace, "notice", key=self._keys.next("notice"), text=text
            )

    def _task_scope(self) -> str:
        return f"conversation:{self._conversation.id}" if self._conversation else "global"

    def _require_conversation(self) -> Conversation:
        if self._conversation is None:
            raise RuntimeError(f"plugin '{self.plugin}': this event has no conversation")
        return self._conversation

    def _require_customer(self) -> tuple[Customer, Identity]:
        if self._customer is None or self._identity is None:
            raise RuntimeError(f"plugin '{self.plugin}': this event has no customer")
        return self._customer, self._identity

    @property
    def keys(self) -> ActionKeys:
        """The idempotency-key sequence of the event being handled (for the engine)."""
        return self._keys

    @property
    def raw_conversation(self) -> Conversation | None:
        """The stored conversation (for the engine; plugins use :attr:`conversation`)."""
        return self._conversation
