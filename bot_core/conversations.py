"""Conversation bookkeeping shared by the relay, the plugin context and the outbox.

Get-or-create of customers and conversations runs inside one bus partition per conversation key,
so two events of one customer never race; unique constraints catch the rest (another worker
creating the same identity) and the loser re-reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from tortoise.exceptions import IntegrityError

from bot_core.adapters import ConversationView, CustomerCard, EarlierConversation, IdentityView
from bot_core.events import CustomerMessage
from bot_core.locales import LOCALE, TIMEZONE, customer_hints, valid_locale, valid_timezone
from storage import hot
from storage.db import transaction
from storage.models import (
    Agent,
    Conversation,
    ConversationState,
    Customer,
    Identity,
    Message,
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
    """The message brought new attributes, time zone or locale (the card shows them)."""


async def resolve_customer(msg: CustomerMessage) -> Opened:
    """Find or create the customer, the identity and the open conversation for ``msg``."""
    # Most messages continue an open conversation: one joined query finds all three rows.
    open_now = await hot.open_conversation_of(msg.channel, msg.external_user_id)
    if open_now is not None and _unchanged(open_now[1], open_now[2], msg):
        await hot.touch_conversation(open_now[0], msg.timestamp)
        return Opened(open_now[2], open_now[1], open_now[0], False)
    attributes, zone, locale = customer_hints(msg.attributes)
    identity = await Identity.get_or_none(channel=msg.channel, external_id=msg.external_user_id)
    if identity is None:
        try:
            async with transaction():
                customer = await Customer.create(
                    display_name=msg.display_name or msg.external_user_id,
                    attributes=attributes,
                    timezone=zone,
                    locale=locale,
                )
                identity = await Identity.create(
                    customer=customer,
                    channel=msg.channel,
                    external_id=msg.external_user_id,
                    display_name=msg.display_name,
                    avatar_url=msg.avatar_url,
                )
        except IntegrityError:
            identity = await Identity.get(channel=msg.channel, external_id=msg.external_user_id)
    customer = await identity.customer
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
    if changed_customer:
        await customer.save(update_fields=changed_customer)

    conversation = (
        await Conversation.filter(identity_id=identity.id)
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
        await conversation.save(update_fields=["last_customer_message_at", "updated_at"])
    return Opened(customer, identity, conversation, new, bool(changed_customer))


def _unchanged(identity: Identity, customer: Customer, msg: CustomerMessage) -> bool:
    """True when ``msg`` brings no new name, avatar, customer attribute, time zone or locale (nothing to
    update)."""
    return (
        (not msg.display_name or identity.display_name == msg.display_name)
        and (not msg.avatar_url or identity.avatar_url == msg.avatar_url)
        and all(
            (customer.timezone == v.strip() or valid_timezone(v) is None)
            if k == TIMEZONE
            else customer.locale == valid_locale(v)
            if k == LOCALE
            else customer.attributes.get(k) == v
            for k, v in msg.attributes.items()
        )
    )


async def conversation_view(conversation: Conversation, workspace: str | None = None) -> ConversationView:
    """The read-only view of ``conversation`` that workspaces receive.

    With ``workspace``, ``existing_room_id`` is the conversation's room only if it is a room of that
    workspace: a room id of one workspace is never handed to another.
    """
    customer = await Customer.get(id=conversation.customer_id)
    identity = await Identity.get(id=conversation.identity_id)
    team = await Team.get_or_none(id=conversation.team_id) if conversation.team_id else None
    agent = await Agent.get_or_none(id=conversation.assignee_id) if conversation.assignee_id else None
    room = await Room.get_or_none(id=conversation.room_id) if conversation.room_id else None
    if room is not None and workspace is not None and room.workspace != workspace:
        room = None
    return ConversationView(
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


async def customer_card(conversation: Conversation) -> CustomerCard:
    """The pinned card of a conversation's room: identities, tags, status, owner, earlier conversations."""
    view = await conversation_view(conversation)
    customer = await Customer.get(id=conversation.customer_id)
    identities = await Identity.filter(customer_id=customer.id).order_by("id")
    earlier = (
        await Conversation.filter(customer_id=customer.id, id__lt=conversation.id).order_by("-id").limit(10)
    )
    return CustomerCard(
        customer_id=customer.id,
        name=view.customer_name,
        identities=tuple(
            IdentityView(i.channel, i.external_id, i.display_name, i.reachable) for i in identities
        ),
        tags=tuple(sorted(set(customer.tags) | set(conversation.tags))),
        state=view.state,
        team=view.team,
        assignee=view.assignee,
        attributes=_card_attributes(customer),
        earlier_conversations=tuple([await _earlier(c) for c in earlier]),
    )


def _card_attributes(customer: Customer) -> dict[str, str]:
    """What the card lists as the customer's details: their attributes, time zone and locale."""
    shown = dict(customer.attributes)
    if customer.timezone:
        shown["time zone"] = customer.timezone
    if customer.locale:
        shown["locale"] = customer.locale
    return shown


async def _earlier(conversation: Conversation) -> EarlierConversation:
    first = (
        await Message.filter(conversation_id=conversation.id, workspace_message_id__isnull=False)
        .order_by("id")
        .first()
    )
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
