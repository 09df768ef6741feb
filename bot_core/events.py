"""The core event model: what adapters hand to the engine, platform-neutral.

Every event is a pydantic model with a ``type`` discriminator so that it can travel
through the bus as JSON and come back as the same class.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class Attachment(BaseModel):
    """Metadata of a file or image attached to a message (the bytes stay on the platform or media store)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["image", "file", "audio", "video", "sticker"] = "file"
    url: str | None = None
    mime_type: str | None = None
    name: str | None = None
    size: int | None = None
    platform_file_id: str | None = None


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    def conversation_key(self) -> str:
        """The key that orders this event on the bus: one key per conversation."""
        raise NotImplementedError


class CustomerMessage(_Event):
    """A message a customer wrote on a channel (Telegram, WhatsApp, SMS, web...)."""

    type: Literal["customer_message"] = "customer_message"
    channel: str
    external_user_id: str
    external_message_id: str
    text: str = ""
    attachments: tuple[Attachment, ...] = ()
    reply_to: str | None = None
    display_name: str | None = None
    avatar_url: str | None = None
    edit_of: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)
    timestamp: datetime = Field(default_factory=utcnow)
    choice: str | None = None
    """The id of the choice the customer pressed (a button or list row of a reply that offered choices,
    see :mod:`bot_core.choices`); ``text`` is its title. None for anything typed."""

    def conversation_key(self) -> str:
        """Customer events are ordered per channel identity."""
        return f"{self.channel}:{self.external_user_id}"


class AgentMessage(_Event):
    """A message an agent wrote in a conversation's room in the workspace."""

    type: Literal["agent_message"] = "agent_message"
    workspace: str
    room_id: str
    external_message_id: str
    agent_id: str
    agent_name: str | None = None
    text: str = ""
    attachments: tuple[Attachment, ...] = ()
    edit_of: str | None = None
    redacts: str | None = None  # the agent deleted their earlier message with this workspace id
    timestamp: datetime = Field(default_factory=utcnow)
    ops_channel: str | None = None  # set by the workspace for a command typed in an ops room (ops-<team>)

    def conversation_key(self) -> str:
        """Agent events are ordered per room (one room per conversation)."""
        return f"room:{self.workspace}:{self.room_id}"


class AgentCommand(_Event):
    """An agent command such as ``!claim`` or ``!transfer billing`` typed in a room."""

    type: Literal["agent_command"] = "agent_command"
    workspace: str
    room_id: str
    external_message_id: str
    agent_id: str
    agent_name: str | None = None
    command: str
    args: tuple[str, ...] = ()
    raw: str = ""
    timestamp: datetime = Field(default_factory=utcnow)
    ops_channel: str | None = None  # typed in this ops room (``ops-<team>`` or ``ops``), not a conversation's

    def conversation_key(self) -> str:
        """Commands share the room's order with agent messages."""
        return f"room:{self.workspace}:{self.room_id}"


DeliveryStatusValue = Literal["sent", "delivered", "read", "failed"]


class DeliveryStatus(_Event):
    """A channel's news about a message it was handed: the platform has it (``sent``), the customer's
    device has it (``delivered``), the customer read it (``read``), or it failed after all (``failed``,
    with the platform's code and text in ``error``, e.g. ``"131026 undeliverable"``).

    ``channel_message_id`` is the id the channel returned in ``SentRef.external_message_id``. A channel
    hands it to the core with ``await services.inbound(event)`` like any inbound event; the core keeps
    the message's status (never going back: read > delivered > sent; failed is final) and shows it in
    the workspace.
    """

    type: Literal["delivery_status"] = "delivery_status"
    channel: str
    external_user_id: str
    channel_message_id: str
    status: DeliveryStatusValue
    error: str = ""
    timestamp: datetime = Field(default_factory=utcnow)
    awaiting_customer: bool = False
    """With ``failed``: the platform refused the message only until the customer writes again (WhatsApp's
    131047, reported late in a status): the core sends it again through the outbox, where the channel
    holds it (:class:`~bot_core.adapters.AwaitingCustomer`), instead of marking it failed."""

    def conversation_key(self) -> str:
        """Ordered with the customer's own messages on that channel."""
        return f"{self.channel}:{self.external_user_id}"


class LifecycleKind(enum.StrEnum):
    """What happened to a conversation."""

    OPENED = "opened"
    QUEUED = "queued"
    ASSIGNED = "assigned"
    TRANSFERRED = "transferred"
    CLOSED = "closed"


class ConversationEvent(_Event):
    """A lifecycle change of a conversation, published on the bus once it is stored in the conversation log.

    ``log_id`` is the change's row in the log (what a replayed copy is recognised by); ``from_state``
    and ``to_state`` the conversation's states before and after (``from_state`` is None when opened).
    """

    type: Literal["conversation_event"] = "conversation_event"
    kind: LifecycleKind
    conversation_id: int
    team: str | None = None
    agent_id: str | None = None
    by: str | None = None
    log_id: int | None = None
    from_state: str | None = None
    to_state: str | None = None
    timestamp: datetime = Field(default_factory=utcnow)

    def conversation_key(self) -> str:
        """Lifecycle events are ordered with the conversation's other engine events."""
        return f"conv:{self.conversation_id}"


class ScheduledFire(_Event):
    """A scheduled job that came due (``ctx.schedule`` or a plugin's periodic job)."""

    type: Literal["scheduled_fire"] = "scheduled_fire"
    plugin: str
    job: str
    task_id: int | None = None
    revision: int = 0  # of the task: a task moved or cancelled after this fire was published drops it
    conversation_id: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime = Field(default_factory=utcnow)

    def conversation_key(self) -> str:
        """A job bound to a conversation is ordered with it; a global job has its own key."""
        if self.conversation_id is not None:
            return f"conv:{self.conversation_id}"
        return f"job:{self.plugin}:{self.job}"


Event = Annotated[
    CustomerMessage | AgentMessage | AgentCommand | ConversationEvent | ScheduledFire | DeliveryStatus,
    Field(discriminator="type"),
]
_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def dump_event(event: _Event) -> dict[str, Any]:
    """Serialise an event to a JSON-safe dict for the bus."""
    return event.model_dump(mode="json")


def load_event(data: dict[str, Any]) -> Event:
    """Rebuild an event from what :func:`dump_event` produced."""
    return _EVENT_ADAPTER.validate_python(data)
