"""Reading customers for plugins that write first (outreach, surveys): look one up, or walk them all.

A :class:`CustomerRecord` is what a segment or a trigger needs to know about a customer: their
attributes and tags, identities (channel, id, reachable), time zone and locale, their last contact
(the last message they wrote) and their recorded consent per topic. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

from tortoise.functions import Max

from bot_core.consent import ConsentInfo
from bot_core.contacts import valid_email, valid_phone
from storage.models import Consent, Conversation, Customer, CustomerContact, Identity, OutboxItem

CONTACT_ATTRIBUTES = ("email", "phone")
"""The attributes a customer is found by: the verified contact points channels set (issue 19 contract 2)."""


@dataclass(frozen=True)
class IdentityRef:
    """One of a customer's identities: where a message to them can go."""

    channel: str
    external_user_id: str
    reachable: bool = True


@dataclass(frozen=True)
class CustomerRecord:
    """What a plugin may read about a customer to decide whether and how to write to them."""

    id: int
    name: str
    attributes: dict[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    identities: tuple[IdentityRef, ...] = ()
    timezone: str | None = None
    locale: str | None = None
    last_contact_at: datetime | None = None  # the last message the customer wrote, on any channel
    last_channel: str | None = None  # the channel of their latest conversation
    consents: dict[str, ConsentInfo] = field(default_factory=dict)  # topic -> their recorded word

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels the customer can be written to on (reachable identities, newest first)."""
        return tuple(i.channel for i in self.identities if i.reachable)


async def _records(customers: list[Customer]) -> list[CustomerRecord]:
    ids = [c.id for c in customers]
    if not ids:
        return []
    identities: dict[int, list[IdentityRef]] = {}
    channel_of: dict[int, str] = {}
    for row in await Identity.filter(customer_id__in=ids).order_by("-id"):
        identities.setdefault(row.customer_id, []).append(
            IdentityRef(row.channel, row.external_id, row.reachable)
        )
        channel_of[row.id] = row.channel
    last_channel: dict[int, str] = {}
    for customer_id, identity_id in (
        await Conversation.filter(customer_id__in=ids)
        .order_by("id")
        .values_list("customer_id", "identity_id")
    ):
        last_channel[int(customer_id)] = channel_of.get(int(identity_id), "")
    last: dict[int, datetime | None] = {
        int(r["customer_id"]): r["last"]
        for r in await Conversation.filter(customer_id__in=ids)
        .annotate(last=Max("last_customer_message_at"))
        .group_by("customer_id")
        .values("customer_id", "last")
    }
    consents: dict[int, dict[str, ConsentInfo]] = {}
    for word in await Consent.filter(customer_id__in=ids):
        consents.setdefault(word.customer_id, {})[word.topic] = ConsentInfo(
            word.topic, word.granted, word.source, word.at
        )
    return [
        CustomerRecord(
            id=c.id,
            name=c.display_name,
            attributes=dict(c.attributes),
            tags=tuple(c.tags),
            identities=tuple(identities.get(c.id, ())),
            timezone=c.timezone,
            locale=c.locale,
            last_contact_at=last.get(c.id),
            last_channel=last_channel.get(c.id) or None,
            consents=consents.get(c.id, {}),
        )
        for c in customers
    ]


async def get_customer(customer_id: int) -> CustomerRecord | None:
    """The customer with this id, or None."""
    customer = await Customer.get_or_none(id=customer_id)
    return None if customer is None else (await _records([customer]))[0]


async def find_customer(
    *,
    email: str | None = None,
    phone: str | None = None,
    channel: str | None = None,
    external_user_id: str | None = None,
    attribute: tuple[str, str] | None = None,
) -> CustomerRecord | None:
    """The customer with this verified ``email`` (compared lower-cased) or ``phone`` (E.164), this
    identity (``channel`` and ``external_user_id``), or this ``attribute`` (name, value: the shop's own
    customer id); None when nobody matches. With several customers matching, the newest wins.
    """
    if channel is not None and external_user_id is not None:
        identity = (
            await Identity.filter(channel=channel, external_id=external_user_id).order_by("-id").first()
        )
        return None if identity is None else await get_customer(identity.customer_id)
    wanted: tuple[str, str] | None = attribute
    if email is not None:
        wanted = ("email", valid_email(email) or email.strip().lower())
    elif phone is not None:
        wanted = ("phone", valid_phone(phone) or phone.strip())
    if wanted is not None and attribute is None:
        # a verified contact (bot_core.contacts: one customer per phone or email) is one indexed lookup
        contact = await CustomerContact.get_or_none(kind=wanted[0], value=wanted[1])
        if contact is not None:
            return await get_customer(await _surviving(contact.customer_id))
    if wanted is None:
        raise ValueError("find_customer needs email, phone, channel and external_user_id, or attribute")
    name, value = wanted
    # attributes are JSON: scanned in batches (no index over them yet; a contact column would be one)
    found: int | None = None
    last_id = 0
    while True:
        rows = await Customer.filter(id__gt=last_id).order_by("id").limit(1000).values("id", "attributes")
        if not rows:
            break
        for row in rows:
            stored = (row["attributes"] or {}).get(name)
            if isinstance(stored, str) and (stored.lower() if name == "email" else stored) == value:
                found = int(row["id"])
        last_id = int(rows[-1]["id"])
    return None if found is None else await get_customer(await _surviving(found))


async def _surviving(customer_id: int) -> int:
    """The customer a merged customer became (itself when never merged)."""
    for _ in range(16):  # merges chain at most a few steps; the bound only guards against a cycle
        customer = await Customer.get_or_none(id=customer_id)
        if customer is None or customer.merged_into_id is None:
            return customer_id
        customer_id = customer.merged_into_id
    return customer_id


async def all_customers(batch: int = 500) -> AsyncIterator[CustomerRecord]:
    """Every customer, oldest first, read ``batch`` at a time (for segments)."""
    last_id = 0
    while True:
        customers = await Customer.filter(id__gt=last_id).order_by("id").limit(batch)
        if not customers:
            return
        for record in await _records(customers):
            yield record
        last_id = customers[-1].id


@dataclass(frozen=True)
class DeliveryInfo:
    """How a delivery to a customer (``ctx.reply``'s key) is doing.

    ``status``: ``pending`` (stored, not sent yet: retrying, rate-limited or held), ``sent``, ``delivered``,
    ``read`` (as the channel reported) or ``failed`` (given up, or the platform reported a failure);
    ``error`` says why it failed or why it is still being retried.
    """

    status: str
    error: str | None = None
    at: datetime | None = None  # when the status last changed


async def deliveries(keys: list[str]) -> dict[str, DeliveryInfo]:
    """The deliveries of these keys (those not stored are left out), read in batches."""
    found: dict[str, DeliveryInfo] = {}
    for start in range(0, len(keys), 500):
        rows = await OutboxItem.filter(idempotency_key__in=keys[start : start + 500]).values(
            "idempotency_key", "status", "last_error", "updated_at", "message__delivery_status"
        )
        for row in rows:
            status = str(row["status"])
            reported = row["message__delivery_status"] or ""
            if status == "sent" and reported:
                status = str(reported)  # delivered, read, or failed later (asynchronously)
            elif status == "sending":
                status = "pending"
            found[str(row["idempotency_key"])] = DeliveryInfo(status, row["last_error"], row["updated_at"])
    return found
