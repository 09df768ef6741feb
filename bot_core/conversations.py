"""Conversation bookkeeping shared by the relay, the plugin context and the outbox.

Get-or-create of customers and conversations runs inside one bus partition per conversation key,
so two events of one customer never race; unique constraints catch the rest (another worker
creating the same identity) and the loser re-reads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from tortoise.exceptions import DoesNotExist, IntegrityError

from bot_core.adapters import (
    WINDOW_ATTRIBUTE_SUFFIX,
    ConversationView,
    CustomerCard,
    EarlierConversation,
    IdentityView,
)
from bot_core.contacts import KINDS as CONTACT_KINDS
from bot_core.contacts import contact_points, without_contacts
from bot_core.events import CustomerMessage, LifecycleKind
from bot_core.locales import LOCALE, TIMEZONE, customer_hints, valid_locale, valid_timezone
from storage import hot
from storage.models import (
    Agent,
    Conversation,
    ConversationLog,
    ConversationState,
    Customer,
    CustomerContact,
    Identity,
    Message,
    PluginState,
    Room,
    Team,
)


@dataclass
class Opened:
    """The result of resolving an inbound customer message to its conversation."""

    customer: Customer
    identity: Identity
    conversation: Conversation
    new_conversation: bool
    customer_changed: bool = False
    """The message brought new attributes, time zone or locale, linked customers or came from another
    identity than the last (the card shows them)."""
    opened_log: ConversationLog | None = None
    """A new conversation's "opened" log entry, when it was written with the conversation (``opened_log``
    of :func:`resolve_customer`)."""


def opened_log_columns(event_key: str, by: str, state: ConversationState) -> dict[str, object]:
    """The columns of a new conversation's "opened" log entry but ``conversation_id`` and ``at`` (the
    conversation's id and creation time); its action key is the event's, plus ``:opened``."""
    return {
        "what": LifecycleKind.OPENED.value,
        "from_state": None,
        "to_state": state.value,
        "team": None,
        "agent_id": None,
        "by": by,
        "event_key": event_key,
        "action_key": f"{event_key}:opened",
    }


Link = Callable[[Customer, Identity, list[tuple[str, str]]], Awaitable[Customer]]
"""Records an identity's verified contacts and merges the customers they link; returns the customer the
identity belongs to afterwards (:meth:`bot_core.linking.CustomerLinks.link_contacts`)."""


async def resolve_customer(
    msg: CustomerMessage,
    bus_key: str | None = None,
    link: Link | None = None,
    opened_log: dict[str, object] | None = None,
) -> Opened:
    """Find or create the customer, the identity and the open conversation for ``msg``.

    A customer has one open conversation whichever identity they write from; the conversation's
    ``identity`` becomes the one they wrote from last (replies go there unless an agent picked another
    with ``!via``). ``bus_key`` is the key ``msg`` was handled under: a new customer keeps it for all
    their events. ``link`` records the verified phone or email the message brings, which may merge this
    customer with another. ``opened_log`` (:func:`opened_log_columns`): a new customer's conversation gets
    its "opened" log entry in the same step (:attr:`Opened.opened_log`; not when contacts may merge it).
    """
    contacts = contact_points(msg.attributes, quiet=True)
    # Most messages continue an open conversation: one joined query finds all three rows (or that the
    # identity is new).
    known = await hot.identity_state(msg.channel, msg.external_user_id)
    if known is not None:
        identity, customer, open_now = known
        if (
            open_now is not None
            and open_now.identity_id == identity.id
            and _unchanged(identity, customer, msg)
            and (not contacts or await _contacts_of(customer.id, contacts))
        ):
            await hot.touch_conversation(open_now, msg.timestamp)
            return Opened(customer, identity, open_now, False)
    contacts = contact_points(msg.attributes)  # again, logging what is not valid
    attributes, zone, locale = customer_hints(without_contacts(msg.attributes))
    changed_customer_shown = False  # something the card shows changed (the card is refreshed)
    if known is None:
        # a new identity with a verified contact a customer has joins that customer at once
        owners = await hot.customer_keys(None, None, contacts) if contacts and link is not None else []
        merging = bool(contacts) and link is not None  # (the new conversation may be merged away)
        log = None if merging else opened_log
        created = None if owners else await _new_customer(msg, bus_key, attributes, zone, locale, log)
        if created is not None:
            customer, identity, opened, logged = created
            if not merging:
                return Opened(customer, identity, opened, True, opened_log=logged)
            assert link is not None
            linked = await link(customer, identity, contacts)
            if linked.id == customer.id:
                return Opened(customer, identity, opened, True)
            # the contacts were another's meanwhile: merged, and the conversation is found below
            customer, changed_customer_shown = linked, True
            identity.customer_id = customer.id
            contacts = []
        elif owners:
            with contextlib.suppress(IntegrityError):  # (another worker created it first)
                await Identity.create(
                    customer_id=min(owners)[0],
                    channel=msg.channel,
                    external_id=msg.external_user_id,
                    display_name=msg.display_name,
                    avatar_url=msg.avatar_url,
                )
            known = await hot.identity_state(msg.channel, msg.external_user_id)
            assert known is not None, "the identity was just created"
            identity, customer, _open = known
        else:  # another worker created the identity first
            known = await hot.identity_state(msg.channel, msg.external_user_id)
            assert known is not None, "the identity exists (its insert failed on the unique key)"
            identity, customer, _open = known
    if contacts and link is not None:
        before = customer.id
        customer = await link(customer, identity, contacts)
        identity.customer_id = customer.id
        if customer.id != before:
            changed_customer_shown = True
    changed_identity = False
    if msg.display_name and identity.display_name != msg.display_name:
        identity.display_name = msg.display_name
        changed_identity = True
    if msg.avatar_url and identity.avatar_url != msg.avatar_url:
        identity.avatar_url = msg.avatar_url
        changed_identity = True
    if changed_identity:
        await identity.save(update_fields=["display_name", "avatar_url"])
    changed_customer: list[str] = []
    if attributes and any(customer.attributes.get(k) != v for k, v in attributes.items()):
        customer.attributes = {**customer.attributes, **attributes}
        changed_customer.append("attributes")
    if zone and customer.timezone != zone:
        customer.timezone = zone
        changed_customer.append("timezone")
    if locale and customer.locale != locale:
        customer.locale = locale
        changed_customer.append("locale")
    if customer.bus_key is None and bus_key:  # a customer from before keys per customer
        customer.bus_key = bus_key
        await customer.save(update_fields=["bus_key"])
    if changed_customer:
        await customer.save(update_fields=changed_customer)

    conversation = (
        await Conversation.filter(customer_id=customer.id)
        .exclude(state=ConversationState.CLOSED)
        .order_by("-id")
        .first()
    )
    new = conversation is None
    if conversation is None:
        previous = await Conversation.filter(customer_id=customer.id).order_by("-id").first()
        conversation = await Conversation.create(
            customer=customer,
            identity=identity,
            room_id=previous.room_id if previous else None,  # a returning customer keeps their room
            state=ConversationState.BOT,
            last_customer_message_at=msg.timestamp,
        )
    else:
        conversation.last_customer_message_at = msg.timestamp
        fields = ["last_customer_message_at", "updated_at"]
        if conversation.identity_id != identity.id:  # they wrote from another channel: replies follow
            conversation.identity_id = identity.id
            fields.append("identity_id")
            changed_customer_shown = True
        await conversation.save(update_fields=fields)
    return Opened(customer, identity, conversation, new, bool(changed_customer) or changed_customer_shown)


async def _new_customer(
    msg: CustomerMessage,
    bus_key: str | None,
    attributes: dict[str, str],
    zone: str | None,
    locale: str | None,
    opened_log: dict[str, object] | None = None,
) -> tuple[Customer, Identity, Conversation, ConversationLog | None] | None:
    """A new customer for ``msg``'s identity, with that identity and an open conversation (and with
    ``opened_log`` the conversation's first log entry): all or nothing; None when another worker created
    the identity first."""
    try:
        return await hot.create_customer(
            {
                "display_name": msg.display_name or msg.external_user_id,
                "attributes": attributes,
                "timezone": zone,
                "locale": locale,
                "bus_key": bus_key,
            },
            {
                "channel": msg.channel,
                "external_id": msg.external_user_id,
                "display_name": msg.display_name,
                "avatar_url": msg.avatar_url,
            },
            {"state": ConversationState.BOT, "last_customer_message_at": msg.timestamp},
            opened_log,
        )
    except IntegrityError:
        return None


async def _contacts_of(customer_id: int, contacts: list[tuple[str, str]]) -> bool:
    """True when every one of ``contacts`` is known as this customer's (nothing to link)."""
    owners = await hot.customer_keys(None, None, contacts)
    return len(owners) == len(contacts) and all(owner == customer_id for owner, _key in owners)


def _unchanged(identity: Identity, customer: Customer, msg: CustomerMessage) -> bool:
    """True when ``msg`` brings no new name, avatar, customer attribute, time zone or locale (nothing to
    update); its verified contacts are checked apart."""
    return (
        (not msg.display_name or identity.display_name == msg.display_name)
        and (not msg.avatar_url or identity.avatar_url == msg.avatar_url)
        and all(
            (customer.timezone == v.strip() or valid_timezone(v) is None)
            if k == TIMEZONE
            else customer.locale == valid_locale(v)
            if k == LOCALE
            else True
            if k in CONTACT_KINDS
            else customer.attributes.get(k) == v
            for k, v in msg.attributes.items()
        )
    )


async def current_customer_id(customer_id: int) -> int:
    """The customer ``customer_id`` is now: the one it was merged into, if it was (following merges)."""
    seen: set[int] = set()
    while customer_id not in seen:
        seen.add(customer_id)
        row = await Customer.get_or_none(id=customer_id)
        if row is None or row.merged_into_id is None:
            return customer_id
        customer_id = row.merged_into_id
    return customer_id


def reply_identity_id(conversation: Conversation) -> int:
    """The identity replies in ``conversation`` go to: the agent's pick (``!via``), else the one the
    customer last wrote from."""
    return conversation.via_identity_id or conversation.identity_id


async def conversation_view(conversation: Conversation, workspace: str | None = None) -> ConversationView:
    """The read-only view of ``conversation`` that workspaces receive.

    With ``workspace``, ``existing_room_id`` is the conversation's room only if it is a room of that
    workspace: a room id of one workspace is never handed to another.
    """
    return (await view_and_customer(conversation, workspace))[0]


async def view_and_customer(
    conversation: Conversation,
    workspace: str | None = None,
    people: tuple[Customer, Identity] | None = None,
) -> tuple[ConversationView, Customer]:
    """:func:`conversation_view`, with the customer row it was made from (for :func:`customer_card`).
    ``people``: the conversation's customer and identity, when the caller has just read them."""
    both = people or await hot.customer_and_identity(conversation.customer_id, conversation.identity_id)
    if both is None:
        raise DoesNotExist(f"the customer or identity of conversation {conversation.id} is gone")
    customer, identity = both
    team = await Team.get_or_none(id=conversation.team_id) if conversation.team_id else None
    agent = await Agent.get_or_none(id=conversation.assignee_id) if conversation.assignee_id else None
    rooms = await hot.select(Room, '"id"=?', [conversation.room_id]) if conversation.room_id else []
    room = rooms[0] if rooms else None
    if room is not None and workspace is not None and room.workspace != workspace:
        room = None
    view = ConversationView(
        conversation_id=conversation.id,
        customer_id=customer.id,
        customer_name=identity.display_name or customer.display_name,
        channel=identity.channel,
        external_user_id=identity.external_id,
        state=conversation.state.value,
        team=team.name if team else None,
        assignee=(agent.display_name or agent.external_id) if agent else None,
        avatar_url=identity.avatar_url,
        existing_room_id=room.external_id if room else None,
    )
    return view, customer


async def customer_card(
    conversation: Conversation, known: tuple[ConversationView, Customer] | None = None
) -> CustomerCard:
    """The pinned card of a conversation's room: identities, tags, status, owner, earlier conversations and
    the plugins' notes. ``known``: the conversation's view and customer, when the caller has just read them
    (:func:`view_and_customer`)."""
    view, customer = known or await view_and_customer(conversation)
    identities, contacts, earlier, rated, notes = await hot.select_several(
        hot.Select(Identity, '"customer_id"=?', [customer.id], order='"id"'),
        hot.Select(CustomerContact, '"customer_id"=?', [customer.id], order='"id"'),
        hot.Select(
            Conversation,
            '"customer_id"=? AND "id"<?',
            [customer.id, conversation.id],
            order='"id" DESC',
            limit=10,
        ),
        _rated_read(customer.id),
        _notes_read(conversation.id),
    )
    replies_to = reply_identity_id(conversation)
    return CustomerCard(
        customer_id=customer.id,
        name=view.customer_name,
        identities=tuple(
            IdentityView(
                i.channel,
                i.external_id,
                i.display_name,
                i.reachable,
                i.id == replies_to,
                *_window(customer, i.channel),
            )
            for i in identities
        ),
        tags=tuple(sorted(set(customer.tags) | set(conversation.tags))),
        state=view.state,
        team=view.team,
        assignee=view.assignee,
        attributes={**_card_attributes(customer, contacts), **_satisfaction_shown(rated)},
        earlier_conversations=tuple([await _earlier(c) for c in earlier]),
        notes=_notes_shown(notes),
    )


def card_notes_scope(conversation_id: int) -> str:
    """The plugin-state scope holding the lines plugins keep on a conversation's card."""
    return f"card:{conversation_id}"


def _notes_read(conversation_id: int) -> hot.Select:
    return hot.Select(PluginState, '"scope"=?', [card_notes_scope(conversation_id)], order='"plugin", "key"')


def _notes_shown(rows: list[PluginState]) -> tuple[str, ...]:
    return tuple(str(row.value["v"]) for row in rows)  # type: ignore[index]


async def card_notes(conversation_id: int) -> tuple[str, ...]:
    """The lines plugins keep on the conversation's card (``ctx.card_note``), by plugin and key."""
    (rows,) = await hot.select_several(_notes_read(conversation_id))
    return _notes_shown(rows)


def _window(customer: Customer, channel: str) -> tuple[str, bool]:
    """The end of ``channel``'s service window for the customer (``<channel>_window_until``) and whether it
    is still ahead; ("", False) for a channel without one."""
    until = str(customer.attributes.get(channel + WINDOW_ATTRIBUTE_SUFFIX) or "")
    try:
        end = datetime.strptime(until, "%Y-%m-%d %H:%M UTC").replace(tzinfo=UTC)
    except ValueError:
        return until, False
    return until, end > datetime.now(UTC)


def _card_attributes(customer: Customer, contacts: list[CustomerContact]) -> dict[str, str]:
    """What the card lists as the customer's details: their attributes (a service window's end is shown on
    its identity instead), verified contacts, time zone and locale."""
    shown = {k: v for k, v in customer.attributes.items() if not k.endswith(WINDOW_ATTRIBUTE_SUFFIX)}
    for kind in CONTACT_KINDS:
        values = [c.value for c in contacts if c.kind == kind]
        if values:
            shown[f"verified {kind}"] = ", ".join(values)
    if customer.timezone:
        shown["time zone"] = customer.timezone
    if customer.locale:
        shown["locale"] = customer.locale
    return shown


def _rated_read(customer_id: int) -> hot.Select:
    """The read of the customer's latest rated conversation."""
    return hot.Select(
        Conversation,
        '"customer_id"=? AND "satisfaction" IS NOT NULL',
        [customer_id],
        order='"id" DESC',
        limit=1,
    )


def _satisfaction_shown(found: list[Conversation]) -> dict[str, str]:
    """The customer's latest rating of a conversation, for the card (none: nothing shown)."""
    rated = found[0] if found else None
    if rated is None or rated.satisfaction is None:
        return {}
    text = f"{rated.satisfaction}/5 (conversation {rated.id})"
    if rated.satisfaction_comment:
        text += f": {rated.satisfaction_comment[:200]}"
    return {"satisfaction": text}


async def _earlier(conversation: Conversation) -> EarlierConversation:
    found = await hot.select(
        Message,
        '"conversation_id"=? AND "workspace_message_id" IS NOT NULL',
        [conversation.id],
        order='"id"',
        limit=1,
    )
    first = found[0] if found else None
    return EarlierConversation(
        conversation_id=conversation.id,
        started_at=conversation.created_at.strftime("%Y-%m-%d %H:%M"),
        state=conversation.state.value,
        first_room_message_id=first.workspace_message_id if first else None,
    )


async def get_or_create_team(name: str) -> Team:
    """The team called ``name``, created on first use."""
    team, _ = await Team.get_or_create(name=name)
    return team


async def get_or_create_agent(workspace: str, external_id: str, display_name: str | None) -> Agent:
    """The agent with this workspace id, created (or renamed) on sight."""
    agent, created = await Agent.get_or_create(
        workspace=workspace, external_id=external_id, defaults={"display_name": display_name}
    )
    if not created and display_name and agent.display_name != display_name:
        agent.display_name = display_name
        await agent.save(update_fields=["display_name"])
    return agent


async def conversation_for_room(workspace: str, room_id: str) -> Conversation | None:
    """The newest conversation bound to a workspace room, or None for a room relaydesk does not know."""
    room = await Room.get_or_none(workspace=workspace, external_id=room_id)
    if room is None:
        return None
    return await Conversation.filter(room_id=room.id).order_by("-id").first()
