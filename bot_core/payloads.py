"""What an outbox row carries: one pydantic model per kind of delivery, told apart by ``kind``.

To the customer (target ``customer``): ``message`` (an answer, a bot reply, a correction of one, or
relaydesk's own short word about a delivery) and ``template`` (a template the platform approved, with
its rendering as fallback text), both possibly with choices (:mod:`bot_core.choices`), and ``reaction``
(an emoji on a customer's message). Into a room (target ``room``): ``customer_message`` (the mirror of
what the customer wrote), ``notice``, ``card``, ``status`` (a delivery status shown on an agent's
message) and ``ops`` (a post in a team's ops room, outside conversations).

Rows are stored as the model's JSON and parsed when the outbox reads them (:func:`parse_payload`).
Rows written before these models existed parse as they are: customer rows had no ``kind`` (they are
all ``message``), room rows always had one. A row that does not parse (an unknown kind, a missing or
mistyped field) raises :class:`PayloadError`, and the outbox gives it up without stopping.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from bot_core.adapters import TemplateRef
from bot_core.choices import Choice
from bot_core.events import Attachment, DeliveryStatusValue

CUSTOMER_KINDS = frozenset({"message", "template", "reaction"})
ROOM_KINDS = frozenset(
    {"customer_message", "notice", "card", "status", "invite", "mention", "ops", "ops_image"}
)


class _Payload(BaseModel):
    # keys this version does not know (written by a newer one) are ignored, not an error
    model_config = ConfigDict(frozen=True, extra="ignore")

    delay: str | None = None
    """Set by :mod:`bot_core.delivery_notices` on a row reported late (``notice``, ``told``, ``covered``)."""


class CustomerText(_Payload):
    """A message to the customer; ``correction`` (``edit``/``delete``) makes it follow up a sent one."""

    kind: Literal["message"] = "message"
    text: str = ""
    attachments: tuple[Attachment, ...] = ()
    agent_name: str | None = None
    correction: Literal["edit", "delete"] | None = None
    topic: str = "service"
    """The consent topic the row is checked against when it is sent."""
    choices: tuple[Choice, ...] = ()
    """Options offered with the text: buttons where the channel has them, else a numbered list."""
    choices_listed: bool = False
    """The text lists the choices already (numbered): a channel without buttons gets it unchanged."""
    menu: str = ""
    """The label of the button that opens the choices, where the channel needs one."""


class CustomerTemplate(_Payload):
    """A template message to the customer (outreach outside the platform's reply window, say)."""

    kind: Literal["template"] = "template"
    template: TemplateRef
    text: str = ""
    """The template rendered, for channels that send no templates (and for the room)."""
    agent_name: str | None = None
    topic: str = "service"
    choices: tuple[Choice, ...] = ()
    """As for :class:`CustomerText`, when the text goes instead of the template."""
    choices_listed: bool = False
    menu: str = ""


class CustomerReaction(_Payload):
    """An emoji (``text``) on one of the customer's messages (``message``: its id on the channel); ``""``
    removes it."""

    kind: Literal["reaction"] = "reaction"
    text: str = ""
    message: str
    topic: str = "service"


class RoomCustomerMessage(_Payload):
    """The mirror of a customer's message in the room (``edit``: of one mirrored before)."""

    kind: Literal["customer_message"] = "customer_message"
    text: str = ""
    sender: str = ""
    channel: str = ""
    user: str = ""
    attachments: tuple[Attachment, ...] = ()
    edit: bool = False
    reply_to: str | None = None
    channel_message_id: str | None = None
    """The message's id on the channel (rows from before it was kept have none: it is looked up)."""


class RoomNotice(_Payload):
    """A notice from relaydesk in the room (never sent to the customer)."""

    kind: Literal["notice"] = "notice"
    text: str = ""


class RoomCard(_Payload):
    """Show (or refresh) the room's customer card, as it is when the row is sent."""

    kind: Literal["card"] = "card"
    text: str = ""


class RoomStatus(_Payload):
    """Mark an agent's message in the room (the row's message) with its delivery status."""

    kind: Literal["status"] = "status"
    status: DeliveryStatusValue
    text: str = ""


class RoomInvite(_Payload):
    """Invite an agent into the room, where the workspace's agents see a room by being in it (Matrix)."""

    kind: Literal["invite"] = "invite"
    user: str
    text: str = ""


class RoomMention(_Payload):
    """A notice addressed to ``users`` so that their clients notify them (a plain notice elsewhere)."""

    kind: Literal["mention"] = "mention"
    users: tuple[str, ...] = ()
    text: str = ""


class OpsPost(_Payload):
    """A post in a team's ops room (the row's address is the channel)."""

    kind: Literal["ops"] = "ops"
    text: str = ""


class OpsImage(_Payload):
    """A caption and a PNG in a team's ops room (the supervisor's chart); the image travels in the row
    (base64), so any worker can send it after a restart. Workspaces without images post the caption."""

    kind: Literal["ops_image"] = "ops_image"
    text: str = ""
    name: str = "chart.png"
    image: str = ""


OutboxPayload = Annotated[
    CustomerText
    | CustomerTemplate
    | CustomerReaction
    | RoomCustomerMessage
    | RoomNotice
    | RoomCard
    | RoomStatus
    | RoomInvite
    | RoomMention
    | OpsPost
    | OpsImage,
    Field(discriminator="kind"),
]
_ADAPTER: TypeAdapter[OutboxPayload] = TypeAdapter(OutboxPayload)


class PayloadError(ValueError):
    """An outbox row's payload that this version cannot read (unknown kind, missing or mistyped field)."""


def dump_payload(payload: _Payload) -> dict[str, Any]:
    """The JSON a row stores (defaults left out, so rows stay as small as before)."""
    data = payload.model_dump(mode="json", exclude_defaults=True)
    data["kind"] = payload.kind  # type: ignore[attr-defined]
    return data


def parse_payload(target: str, data: object) -> OutboxPayload:
    """The payload of a row for ``target`` (``customer`` or ``room``); raises :class:`PayloadError`."""
    if not isinstance(data, dict):
        raise PayloadError(f"payload is not a JSON object: {data!r:.200}")
    kind = data.get("kind")
    if target == "customer":
        if kind is None:  # written before payloads were typed: every customer row was a message
            data = {**data, "kind": "message"}
        elif kind not in CUSTOMER_KINDS:
            raise PayloadError(f"unknown kind {kind!r} for a delivery to the customer")
    elif kind not in ROOM_KINDS:
        raise PayloadError(f"unknown kind {kind!r} for a room post")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'][1:]) or 'payload'}: {error['msg']}"
            for error in exc.errors()
        )
        raise PayloadError(f"{kind or 'message'} payload: {problems}") from None
