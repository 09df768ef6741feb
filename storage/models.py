"""Tortoise-orm models: customers and their identities, conversations (and their log), messages, rooms,
agents, teams, the outbox, scheduled tasks and periodic runs, plugin state and the inbound-event receipts
used to drop duplicates.

Schema changes go through tortoise's migrations in ``storage/migrations`` (``relaydesk migrate``).
"""

from __future__ import annotations

import enum

from tortoise import fields
from tortoise.models import Model


class ConversationState(enum.StrEnum):
    """Where a conversation stands."""

    BOT = "bot"
    QUEUED = "queued"
    ASSIGNED = "assigned"
    CLOSED = "closed"


class Direction(enum.StrEnum):
    """Which way a stored message went."""

    INBOUND = "inbound"  # customer -> team
    OUTBOUND = "outbound"  # team or bot -> customer
    NOTE = "note"  # internal, never sent to the customer


class OutboxStatus(enum.StrEnum):
    """Life of one outbound delivery."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class OutboxTarget(enum.StrEnum):
    """Whom an outbox row is for."""

    CUSTOMER = "customer"  # a channel delivery
    ROOM = "room"  # a post into the conversation's room in the workspace


class Team(Model):
    """A group of agents that conversations can be routed and transferred to."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=100, unique=True)
    timezone = fields.CharField(max_length=64, null=True)  # an IANA zone name (working hours, handoffs)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "team"


class Agent(Model):
    """A person on the team, as known in one workspace."""

    team_id: int | None  # set by the foreign key below
    id = fields.IntField(primary_key=True)
    workspace = fields.CharField(max_length=50)
    external_id = fields.CharField(max_length=255)
    display_name = fields.CharField(max_length=255, null=True)
    team: fields.ForeignKeyNullableRelation[Team] = fields.ForeignKeyField(
        "models.Team", related_name="agents", null=True, on_delete=fields.SET_NULL
    )
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "agent"
        unique_together = (("workspace", "external_id"),)


class Customer(Model):
    """One person, whatever channels they write from.

    ``bus_key`` is the bus key every event of theirs is published under (the key their first message
    had), so their messages on several channels are handled in order. A customer merged into another
    keeps its row (its rooms may stay with it) with ``merged_into_id`` naming the one it became.
    """

    merged_into_id: int | None  # set by the foreign key below
    id = fields.IntField(primary_key=True)
    display_name = fields.CharField(max_length=255, default="")
    attributes: dict[str, str] = fields.JSONField(default=dict)
    tags: list[str] = fields.JSONField(default=list)
    timezone = fields.CharField(max_length=64, null=True)  # an IANA zone name, from a channel that knows it
    locale = fields.CharField(max_length=35, null=True)  # a BCP 47 language tag, e.g. de-CH
    bus_key = fields.CharField(max_length=255, null=True)
    merged_into: fields.ForeignKeyNullableRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="merged", null=True, on_delete=fields.SET_NULL
    )
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "customer"


class CustomerContact(Model):
    """A verified contact point of a customer: a phone number (E.164) or an email address (lower case).

    Unique per kind and value: a verified phone or email belongs to one customer, and identities that
    bring the same one are linked into that customer. ``identity_id`` is the identity that brought it.
    """

    customer_id: int  # set by the foreign key below
    identity_id: int | None  # set by the foreign key below
    id = fields.IntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="contacts", on_delete=fields.CASCADE
    )
    kind = fields.CharField(max_length=10)
    value = fields.CharField(max_length=255)
    identity: fields.ForeignKeyNullableRelation[Identity] = fields.ForeignKeyField(
        "models.Identity", related_name="contacts", null=True, on_delete=fields.SET_NULL
    )
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "customer_contact"
        unique_together = (("kind", "value"),)
        indexes = (("customer_id",),)  # a customer's contacts, for the card


class Consent(Model):
    """A customer's latest word on one topic (service or marketing), with its source and time.

    One row per customer and topic: a new opt-in or opt-out replaces the old one.
    """

    customer_id: int  # set by the foreign key below
    id = fields.IntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="consents", on_delete=fields.CASCADE
    )
    topic = fields.CharField(max_length=20)
    granted = fields.BooleanField()
    source = fields.CharField(max_length=255)
    at = fields.DatetimeField()

    class Meta:
        table = "consent"
        unique_together = (("customer", "topic"),)


class Identity(Model):
    """A customer's account on one channel (a Telegram user id, a phone number, a web visitor id)."""

    customer_id: int  # set by the foreign key below
    id = fields.IntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="identities", on_delete=fields.CASCADE
    )
    channel = fields.CharField(max_length=50)
    external_id = fields.CharField(max_length=255)
    display_name = fields.CharField(max_length=255, null=True)
    avatar_url = fields.CharField(max_length=1024, null=True)
    reachable = fields.BooleanField(default=True)
    unreachable_reason = fields.CharField(max_length=255, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "identity"
        unique_together = (("channel", "external_id"),)
        indexes = (("customer_id",),)  # a customer's identities: the card, merges, replies


class Room(Model):
    """A customer's room in one workspace (a Matrix portal room, a Slack channel), reused across conversations."""

    customer_id: int  # set by the foreign key below
    id = fields.IntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="rooms", on_delete=fields.CASCADE
    )
    workspace = fields.CharField(max_length=50)
    external_id = fields.CharField(max_length=255)
    card_ref = fields.CharField(max_length=255, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "room"
        unique_together = (("workspace", "external_id"), ("workspace", "customer"))


class Conversation(Model):
    """One support case: opened by a customer's first message, closed by an agent or a plugin."""

    customer_id: int  # set by the foreign key below
    identity_id: int  # set by the foreign key below
    room_id: int | None  # set by the foreign key below
    team_id: int | None  # set by the foreign key below
    assignee_id: int | None  # set by the foreign key below
    via_identity_id: int | None  # set by the foreign key below
    id = fields.IntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="conversations", on_delete=fields.CASCADE
    )
    identity: fields.ForeignKeyRelation[Identity] = fields.ForeignKeyField(
        "models.Identity", related_name="conversations", on_delete=fields.CASCADE
    )  # the identity the customer last wrote from (or was written to first): replies go there
    via_identity: fields.ForeignKeyNullableRelation[Identity] = fields.ForeignKeyField(
        "models.Identity", related_name="via_conversations", null=True, on_delete=fields.SET_NULL
    )  # an agent's pick (!via): replies go there instead, until changed
    room: fields.ForeignKeyNullableRelation[Room] = fields.ForeignKeyField(
        "models.Room", related_name="conversations", null=True, on_delete=fields.SET_NULL
    )
    state = fields.CharEnumField(ConversationState, max_length=20, default=ConversationState.BOT)
    team: fields.ForeignKeyNullableRelation[Team] = fields.ForeignKeyField(
        "models.Team", related_name="conversations", null=True, on_delete=fields.SET_NULL
    )
    assignee: fields.ForeignKeyNullableRelation[Agent] = fields.ForeignKeyField(
        "models.Agent", related_name="conversations", null=True, on_delete=fields.SET_NULL
    )
    tags: list[str] = fields.JSONField(default=list)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)
    queued_at = fields.DatetimeField(null=True)
    assigned_at = fields.DatetimeField(null=True)
    closed_at = fields.DatetimeField(null=True)
    last_customer_message_at = fields.DatetimeField(null=True)
    satisfaction = fields.SmallIntField(null=True)  # the customer's rating of this conversation (csat: 1-5)
    satisfaction_comment = fields.TextField(null=True)

    class Meta:
        table = "conversation"
        # (created_at): the supervisor's figures read conversations opened in a range, (state, queued_at) its queue
        indexes = (
            ("identity_id", "state"),
            ("customer_id", "state"),
            ("created_at",),
            ("state", "queued_at"),
        )


class ConversationLog(Model):
    """One applied change of a conversation's state, team or owner (append-only).

    ``what`` is the lifecycle kind (opened, queued, assigned, transferred, closed), ``by`` who did it
    (an agent's workspace id or a plugin), ``event_key`` the event whose handling made it and
    ``action_key`` that action's own key, unique: a replayed event finds its change here. First
    response, waits and handle times are computed from these rows.
    """

    conversation_id: int  # set by the foreign key below
    id = fields.BigIntField(primary_key=True)
    conversation: fields.ForeignKeyRelation[Conversation] = fields.ForeignKeyField(
        "models.Conversation", related_name="log", on_delete=fields.CASCADE
    )
    what = fields.CharField(max_length=20)
    from_state = fields.CharField(max_length=20, null=True)
    to_state = fields.CharField(max_length=20)
    team = fields.CharField(max_length=100, null=True)
    agent_id = fields.CharField(max_length=255, null=True)
    by = fields.CharField(max_length=255, null=True)
    event_key = fields.CharField(max_length=255, db_index=True)
    action_key = fields.CharField(max_length=255, unique=True)
    at = fields.DatetimeField()

    class Meta:
        table = "conversation_log"
        indexes = (("conversation_id", "id"), ("at",))  # (at): the supervisor's recent hand-overs


class Message(Model):
    """A message in a conversation with its external id on each side and its edit history."""

    conversation_id: int  # set by the foreign key below
    id = fields.BigIntField(primary_key=True)
    conversation: fields.ForeignKeyRelation[Conversation] = fields.ForeignKeyField(
        "models.Conversation", related_name="messages", on_delete=fields.CASCADE
    )
    direction = fields.CharEnumField(Direction, max_length=10)
    author = fields.CharField(max_length=255, default="")
    text = fields.TextField(default="")
    attachments: list[dict[str, object]] = fields.JSONField(default=list)
    channel = fields.CharField(max_length=50)
    channel_message_id = fields.CharField(max_length=255, null=True)
    workspace_message_id = fields.CharField(max_length=255, null=True)
    edits: list[dict[str, object]] = fields.JSONField(default=list)
    created_at = fields.DatetimeField(auto_now_add=True)
    edited_at = fields.DatetimeField(null=True)
    delivery_status = fields.CharField(max_length=10, default="", db_default="")
    """Of a message to the customer: empty (not sent yet), sent, delivered, read or failed (never back)."""

    class Meta:
        table = "message"
        # (conversation_id, created_at): a conversation's messages in order (figures, transcripts)
        indexes = (
            ("channel", "channel_message_id"),
            ("workspace_message_id",),
            ("conversation_id", "created_at"),
        )


class InboundReceipt(Model):
    """One row per inbound platform event, keyed by (source, external id): how duplicates are dropped.

    ``processed`` turns true once the pipeline has run. A receipt left unprocessed by a crash is
    handled again on replay, and its outbox rows are deduplicated by their idempotency keys.
    """

    fresh: bool = False  # not stored: True when this handling created the receipt (not a replay)
    id = fields.BigIntField(primary_key=True)
    source = fields.CharField(max_length=50)
    external_id = fields.CharField(max_length=255)
    processed = fields.BooleanField(default=False)
    received_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "inbound_receipt"
        unique_together = (("source", "external_id"),)


class OutboxItem(Model):
    """An outbound delivery, stored before it is sent and tracked until it is sent or given up."""

    conversation_id: int | None  # set by the foreign key below
    message_id: int | None  # set by the foreign key below
    id = fields.BigIntField(primary_key=True)
    idempotency_key = fields.CharField(max_length=255, unique=True)
    target = fields.CharEnumField(OutboxTarget, max_length=10)
    adapter = fields.CharField(max_length=50)
    address = fields.CharField(max_length=255)
    conversation: fields.ForeignKeyNullableRelation[Conversation] = fields.ForeignKeyField(
        "models.Conversation", related_name="outbox", null=True, on_delete=fields.CASCADE
    )
    message: fields.ForeignKeyNullableRelation[Message] = fields.ForeignKeyField(
        "models.Message", related_name="outbox", null=True, on_delete=fields.SET_NULL
    )
    payload: dict[str, object] = fields.JSONField(default=dict)
    status = fields.CharEnumField(OutboxStatus, max_length=10, default=OutboxStatus.PENDING)
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField()
    claimed_until = fields.DatetimeField(null=True)
    last_error = fields.TextField(null=True)
    external_message_id = fields.CharField(max_length=255, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "outbox_item"
        indexes = (("status", "next_attempt_at"), ("conversation_id", "status"))


class ScheduledTask(Model):
    """A job a plugin scheduled for later (``ctx.schedule``), fired once, even across workers.

    ``key`` is unique per plugin and scope (``conversation:N`` or ``global``): scheduling a key again
    moves its task (``revision`` counts the moves, and a fire of an older revision is dropped).
    ``source`` is the idempotency key of the call that last set the task, so the same event handled
    again (a replay) leaves it alone. ``fired_at`` is when it was published to the bus (or cancelled
    first), ``ran_at`` when its handler started. A task can be cancelled until it ran: it keeps its row (``cancelled_at``)
    and never runs.
    Rows from before keyed scheduling have no key.
    """

    conversation_id: int | None  # set by the foreign key below
    id = fields.BigIntField(primary_key=True)
    plugin = fields.CharField(max_length=100)
    job = fields.CharField(max_length=100)
    scope = fields.CharField(max_length=100, default="global", db_default="global")
    key = fields.CharField(max_length=255, null=True)
    source = fields.CharField(max_length=255, null=True)
    revision = fields.IntField(default=0, db_default=0)
    conversation: fields.ForeignKeyNullableRelation[Conversation] = fields.ForeignKeyField(
        "models.Conversation", related_name="scheduled", null=True, on_delete=fields.CASCADE
    )
    data: dict[str, object] = fields.JSONField(default=dict)
    due_at = fields.DatetimeField()
    fired_at = fields.DatetimeField(null=True)
    ran_at = fields.DatetimeField(null=True)
    cancelled_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "scheduled_task"
        indexes = (("fired_at", "due_at"),)
        unique_together = (("plugin", "scope", "key"),)


class PeriodicRun(Model):
    """The last slot a periodic job (``@on_schedule(every=|cron=)``) fired for, shared by every worker.

    A worker fires a slot only if it moves ``last_slot_at`` forward (a conditional update), so one
    worker fires each slot. The next slot is computed from ``last_slot_at``, so restarts keep the clock.
    """

    id = fields.IntField(primary_key=True)
    plugin = fields.CharField(max_length=100)
    job = fields.CharField(max_length=100)
    last_slot_at = fields.DatetimeField()
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "periodic_run"
        unique_together = (("plugin", "job"),)


class PluginState(Model):
    """A plugin's own key-value store, namespaced by plugin and scope (global, customer:N, conversation:N)."""

    id = fields.BigIntField(primary_key=True)
    plugin = fields.CharField(max_length=100)
    scope = fields.CharField(max_length=100)
    key = fields.CharField(max_length=255)
    value: object = fields.JSONField(null=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "plugin_state"
        unique_together = (("plugin", "scope", "key"),)
        indexes = (("scope",),)  # every plugin's lines of one scope (a conversation's card notes)


class BusJournalEntry(Model):
    """An event appended to the in-process bus, kept until it is acknowledged (replayed after a crash)."""

    id = fields.BigIntField(primary_key=True)
    key = fields.CharField(max_length=255)
    payload: dict[str, object] = fields.JSONField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "bus_journal"
