"""The two adapter roles as the engine sees them: channels (customer side) and workspaces (agent side).

Adapters are plugins (kind ``channel`` or ``workspace``) that also implement one of these protocols.
They push events through ``self.services.inbound`` (an :class:`Inbound`), from their ``start()`` on,
and are called back by the outbox.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from bot_core.choices import Choice
from bot_core.events import AgentCommand, AgentMessage, Attachment, CustomerMessage, DeliveryStatus


class NotAccepting(RuntimeError):
    """Raised by ``inbound`` while the desk shuts down: webhooks should answer 503 so the platform retries."""


class DeliveryError(Exception):
    """Base class of the errors an adapter raises from ``send`` or ``post``."""


class RetryAfter(DeliveryError):
    """The platform asked us to slow down: try again after ``seconds``."""

    def __init__(self, seconds: float, reason: str = "rate limited") -> None:
        super().__init__(f"{reason} (retry after {seconds:g}s)")
        self.seconds = seconds
        self.reason = reason


class TemporaryFailure(DeliveryError):
    """A failure worth retrying with backoff (timeout, 5xx, connection reset)."""


class Undeliverable(DeliveryError):
    """A permanent failure: retrying cannot help (blocked by the user, bad request, unknown chat).

    ``unreachable``: the identity is marked unreachable until the customer writes again. ``opted_out``:
    the platform refused because the customer opted out there (Twilio's 21610 after an SMS STOP): it is
    recorded as their opt-out of ``service`` messages, as if they had said it to relaydesk.
    """

    def __init__(self, reason: str, *, unreachable: bool = False, opted_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unreachable = unreachable
        self.opted_out = opted_out


class AwaitingCustomer(DeliveryError):
    """The platform takes this message only after the customer writes again (WhatsApp outside its
    24-hour window, once the channel has sent its re-engagement template).

    The outbox holds the row, and its lane behind it, without counting a failure, tells the room once
    (``reason``, and ``notice`` for what the channel did about it), and tries again as soon as the relay
    handles the customer's next message on this identity. A row still held when ``outbox.retry_window``
    ends is given up (the room is told). Only channels whose capabilities say ``waits_for_customer``
    have their holds released, so others cost the relay nothing.
    """

    def __init__(self, reason: str, notice: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.notice = notice


@dataclass(frozen=True)
class ChannelCapabilities:
    """What a channel can carry; the engine adapts outbound messages to it."""

    max_text_length: int = 4096
    media_kinds: frozenset[str] = frozenset({"image", "file"})
    edits: bool = False
    deletes: bool = False
    waits_for_customer: bool = False  # it may raise AwaitingCustomer (see there)
    choices: int = 0
    """Up to this many choices of a reply are shown as buttons (:mod:`bot_core.choices`); a reply with more
    (or any, at 0) gets them as a numbered list in its text instead."""
    reactions: bool = False
    """It can put an emoji reaction on a customer's message (``ctx.react``); elsewhere a reaction is skipped."""


@dataclass(frozen=True)
class TemplateRef:
    """A message template the platform approved beforehand (WhatsApp's, say): its name, language and the
    values of its placeholders, in order. A channel that cannot send templates sends the delivery's text."""

    name: str
    language: str
    variables: tuple[str, ...] = ()


@dataclass(frozen=True)
class Delivery:
    """One outbound message to a customer, as the outbox hands it to a channel.

    ``kind`` says what it is: ``message`` (an answer, a bot reply, a correction of one) or ``template``
    (``template`` names it; ``text`` is its rendering, for channels that send no templates), or
    ``notice`` (relaydesk's own word to the customer about a delivery: late, lost), or ``reaction``
    (``text`` is an emoji to put on the customer's message ``react_to``; only for channels whose
    capabilities say ``reactions``).
    """

    outbox_id: int
    channel: str
    external_user_id: str
    text: str
    attachments: tuple[Attachment, ...] = ()
    conversation_id: int | None = None
    agent_name: str | None = None
    idempotency_key: str = ""
    edit_of: str | None = None  # replace the earlier message with this platform id (channel supports edits)
    delete_of: str | None = (
        None  # delete the earlier message with this platform id (channel supports deletes)
    )
    # the stored message this delivers (or corrects), for channels keeping history
    message_id: int | None = None
    kind: str = "message"
    template: TemplateRef | None = None
    choices: tuple[Choice, ...] = ()
    """Buttons to show with ``text`` (never more than the channel's ``capabilities.choices``)."""
    menu: str = ""
    """The label of the control that opens the choices where the channel needs one (a WhatsApp list)."""
    react_to: str | None = None
    """``kind == "reaction"``: the platform id of the customer's message to put ``text`` (an emoji) on;
    an empty ``text`` removes the reaction."""


@dataclass(frozen=True)
class SentRef:
    """What the platform returned for a sent message: its id there."""

    external_message_id: str
    note: str = ""
    """Something the room should know about this delivery (it cost 5 SMS segments): posted as a notice."""


@dataclass(frozen=True)
class RoomRef:
    """A conversation's room in a workspace."""

    workspace: str
    room_id: str


@dataclass(frozen=True)
class PostedRef:
    """The id of something posted into a room."""

    external_message_id: str


@dataclass(frozen=True)
class IdentityView:
    """One of the customer's identities, as a workspace shows it."""

    channel: str
    external_user_id: str
    display_name: str | None = None
    reachable: bool = True
    replies: bool = False
    """Replies in the room's conversation go to this identity (the last one written from, or ``!via``)."""
    window_until: str = ""
    """For a channel with a service window (WhatsApp's 24 hours): until when free-form replies are possible,
    e.g. ``"2026-12-07 16:57 UTC"`` (from the customer attribute ``<channel>_window_until``); empty otherwise."""
    window_open: bool = False
    """The window was open when the card was made (``window_until`` still ahead)."""


WINDOW_ATTRIBUTE_SUFFIX = "_window_until"
"""A channel with a service window keeps its end on the customer as ``<channel>_window_until`` (UTC, to the
minute: ``%Y-%m-%d %H:%M UTC``); the card shows it on that channel's identity."""


@dataclass(frozen=True)
class ConversationView:
    """Read-only facts about a conversation that a workspace needs to make or find its room."""

    conversation_id: int
    customer_id: int
    customer_name: str
    channel: str
    external_user_id: str
    state: str
    team: str | None = None
    assignee: str | None = None
    avatar_url: str | None = None
    existing_room_id: str | None = None


@dataclass(frozen=True)
class MessageView:
    """A customer message as it is mirrored into the room."""

    message_id: int
    text: str
    sender_name: str
    channel: str
    external_user_id: str
    attachments: tuple[Attachment, ...] = ()
    edit_of: str | None = None
    reply_to: str | None = None  # the workspace id of the message the customer replied to, if known
    idempotency_key: str = ""
    """The outbox row's key: a retried post carries the same one, so a workspace can show it only once."""


@dataclass(frozen=True)
class EarlierConversation:
    """A closed conversation of the same customer, for the card: when, how it ended, where it starts."""

    conversation_id: int
    started_at: str
    state: str
    first_room_message_id: str | None = None  # the workspace id of its first message, for a link


@dataclass(frozen=True)
class CustomerCard:
    """What a room shows about its customer: identities, tags, status, owner and earlier conversations."""

    customer_id: int
    name: str
    identities: tuple[IdentityView, ...]
    tags: tuple[str, ...]
    state: str
    team: str | None
    assignee: str | None
    attributes: dict[str, str] = field(default_factory=dict)
    earlier_conversations: tuple[EarlierConversation, ...] = ()
    notes: tuple[str, ...] = ()
    """Lines plugins keep on this conversation's card (``ctx.card_note``), e.g. the open promises."""


InboundEvent = CustomerMessage | AgentMessage | AgentCommand | DeliveryStatus
"""What an adapter hands the core: a customer's or an agent's message or command, or a channel's news
about a delivery (:class:`DeliveryStatus`)."""


class Inbound(Protocol):
    """Where adapters push events: the bus append happens before this returns (so the webhook can ack)."""

    async def __call__(self, event: InboundEvent) -> None: ...


@runtime_checkable
class Channel(Protocol):
    """Customer-side adapter: telegram, whatsapp, sms, web."""

    capabilities: ChannelCapabilities

    async def send(self, delivery: Delivery) -> SentRef:
        """Deliver one message; raise RetryAfter, TemporaryFailure or Undeliverable on failure."""
        ...


@runtime_checkable
class TypingChannel(Protocol):
    """A channel that can show the customer that an agent is typing (optional, on top of :class:`Channel`)."""

    async def typing(self, external_user_id: str, agent_name: str, active: bool) -> None:
        """Show (``active``) or stop showing that ``agent_name`` is typing; best effort, quick to return."""
        ...


@runtime_checkable
class DeliveryStateChannel(Protocol):
    """A channel that shows customers whether their messages reached the agents (optional, on top of
    :class:`Channel`): the web widget. The outbox tells it when a customer's message is late reaching
    the room (``pending``), gets there after all (``delivered``), or was given up (``undelivered``).
    Channels without it get a short message instead when a delay or a give-up is worth telling.
    """

    async def delivery_state(self, external_user_id: str, channel_message_id: str, state: str) -> None:
        """Show ``state`` on the customer's message ``channel_message_id``; best effort, quick to return.

        The state must also be readable later from storage (:func:`bot_core.transcript.room_states`).
        """
        ...


@runtime_checkable
class TypingWorkspace(Protocol):
    """A workspace that can show agents that the customer is typing (optional, on top of :class:`Workspace`)."""

    async def customer_typing(
        self, room: RoomRef, channel: str, external_user_id: str, name: str, active: bool
    ) -> None:
        """Show (``active``) or stop showing the customer typing in ``room``; best effort, quick to return."""
        ...


@runtime_checkable
class DeliveryStatusWorkspace(Protocol):
    """A workspace that marks an agent's message with what the customer's channel reported about it
    (optional, on top of :class:`Workspace`): ``delivered`` or ``read``. The Matrix workspace reacts to
    the message (``✓ delivered``, ``✓✓ read``). A ``failed`` is told in a notice by the core instead, and
    ``sent`` is every relayed message's state (not shown)."""

    async def show_delivery_status(
        self, room: RoomRef, workspace_message_id: str, status: str, key: str = ""
    ) -> None:
        """Mark the room's message ``workspace_message_id`` with ``status`` (``key``: as for :meth:`Workspace.notice`)."""
        ...


@runtime_checkable
class OpsWorkspace(Protocol):
    """A workspace that can post into a named channel outside conversations (optional, on top of
    :class:`Workspace`): a team's ops room for alerts and digests. The workspace makes the channel's room
    once (and invites the agents), then posts there as the bot."""

    async def post_to_channel(self, channel: str, text: str, key: str = "") -> PostedRef:
        """Post ``text`` into ``channel``'s room (``key``: the outbox row's, as for :meth:`Workspace.notice`)."""
        ...


@runtime_checkable
class MentioningWorkspace(Protocol):
    """A workspace that can address a post to people so that their clients notify them (optional, on top
    of :class:`Workspace`): Matrix, where the bot's notices never notify. ``ctx.mention`` uses it; a
    workspace without it gets a plain notice."""

    async def mention(self, room: RoomRef, user_ids: tuple[str, ...], text: str, key: str = "") -> PostedRef:
        """Post ``text`` into ``room`` mentioning ``user_ids`` (``key``: as for :meth:`Workspace.notice`)."""
        ...


PRESENCES = ("online", "unavailable", "offline")
"""What :meth:`PresenceWorkspace.presence` answers (Matrix's words; Slack's ``active`` is ``online``, its
``away`` ``unavailable``)."""


@runtime_checkable
class PresenceWorkspace(Protocol):
    """A workspace that knows whether its people are there (optional, on top of :class:`Workspace`):
    Matrix's presence, Slack's. The handoff plugin can make agents' availability follow it."""

    async def presence(self, user_id: str) -> str | None:
        """``online``, ``unavailable`` (idle, away) or ``offline`` for ``user_id``; None when this workspace
        cannot say (not one of its users, presence turned off on the server, an error)."""
        ...


@runtime_checkable
class InvitingWorkspace(Protocol):
    """A workspace whose rooms an agent must be in to see them (optional, on top of :class:`Workspace`):
    Matrix. ``ctx.invite`` (a hand-over to an agent or a team) reaches the room through the outbox; a
    workspace without this method shows every room to its agents, and the row is done."""

    async def invite(self, room: RoomRef, user_id: str) -> None:
        """Make sure ``user_id`` can join ``room``: invite them unless they are in it or invited already.

        Raise :class:`Undeliverable` when they may not be there (not one of the workspace's agents).
        """
        ...


@runtime_checkable
class OpsImageWorkspace(Protocol):
    """A workspace that can post an image into an ops channel (optional, on top of :class:`OpsWorkspace`):
    the supervisor's daily chart. Without it the caption is posted as text."""

    async def post_image_to_channel(
        self, channel: str, caption: str, image: bytes, name: str, key: str = ""
    ) -> PostedRef:
        """Post ``caption`` and the PNG ``image`` (file name ``name``) into ``channel``'s ops room, once per ``key``."""
        ...


@runtime_checkable
class Workspace(Protocol):
    """Agent-side adapter: slack, matrix."""

    async def ensure_room(self, conversation: ConversationView) -> RoomRef:
        """Return the conversation's room, creating it on first contact."""
        ...

    async def post_as_customer(self, room: RoomRef, message: MessageView) -> PostedRef:
        """Post a customer's message into the room, shown as the customer."""
        ...

    async def notice(self, room: RoomRef, text: str, key: str = "") -> PostedRef:
        """Post a notice from the bot into the room (never sent to the customer).

        ``key`` is the outbox row's idempotency key: a retried post carries the same one, so a
        workspace can show it only once.
        """
        ...

    async def show_card(self, room: RoomRef, card: CustomerCard, key: str = "") -> None:
        """Create or update the room's pinned customer card (``key``: as for :meth:`notice`)."""
        ...
