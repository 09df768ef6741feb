"""Consent: whether a message on a topic may go to a customer, and the records that decide it.

Two topics. ``service`` (answers, follow-ups of the customer's own case) is allowed unless the
customer opted out, and a customer who writes after opting out consents again to replies in that
conversation: their writing asks for an answer. ``marketing`` (outreach the customer did not ask
for) needs an explicit opt-in record. An opt-out (the customer wrote STOP, an agent's ``!consent``)
is a record too. Reachability (the platform says the customer blocked the bot) is a separate matter:
see :attr:`storage.models.Identity.reachable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.exceptions import IntegrityError

from bot_core.events import utcnow
from storage import hot
from storage.models import Consent, Conversation

SERVICE = "service"
MARKETING = "marketing"
TOPICS = (SERVICE, MARKETING)
STOP_WORDS = frozenset({"stop", "unsubscribe", "stopall"})
"""A customer message consisting of one of these words (any case) opts them out of marketing."""


@dataclass(frozen=True)
class ConsentInfo:
    """A customer's recorded word on one topic."""

    topic: str
    granted: bool
    source: str
    at: datetime


def check_topic(topic: str) -> str:
    """``topic`` if it is a known one; ValueError otherwise."""
    if topic not in TOPICS:
        raise ValueError(f"unknown consent topic '{topic}' (known: {', '.join(TOPICS)})")
    return topic


def is_stop(text: str) -> bool:
    """True when a customer's message is an opt-out keyword (STOP)."""
    return text.strip().strip(".!").lower() in STOP_WORDS


async def read(customer_id: int, topic: str) -> ConsentInfo | None:
    """The customer's record for ``topic``, or None when they never said."""
    row = await Consent.get_or_none(customer_id=customer_id, topic=check_topic(topic))
    return None if row is None else ConsentInfo(row.topic, row.granted, row.source, row.at)


async def record(customer_id: int, topic: str, granted: bool, source: str) -> bool:
    """Record the customer's word on ``topic``; True if it changed what was recorded.

    Saying the same again keeps the first record (its source and time), so an event handled again
    after a crash changes nothing.
    """
    check_topic(topic)
    source = source.strip()[:255] or "unknown"
    values: dict[str, Any] = {"granted": granted, "source": source, "at": utcnow()}
    changed = (
        await Consent.filter(customer_id=customer_id, topic=topic).exclude(granted=granted).update(**values)
    )
    if changed:
        return True
    if await Consent.exists(customer_id=customer_id, topic=topic):
        return False
    try:
        await Consent.create(customer_id=customer_id, topic=topic, **values)
    except IntegrityError:  # recorded meanwhile by another worker
        return bool(
            await Consent.filter(customer_id=customer_id, topic=topic)
            .exclude(granted=granted)
            .update(**values)
        )
    return True


async def refusal(conversation_id: int, topic: str) -> str | None:
    """Why a message on ``topic`` in this conversation may not go to its customer; None if it may."""
    row = await hot.consent_of_conversation(conversation_id, topic)
    if topic == MARKETING:
        if row is not None and row.granted:
            return None
        if row is None:
            return "no consent for marketing (the customer never opted in)"
        return f"no consent for marketing (opted out: {row.source})"
    if row is None or row.granted:
        return None
    conversation = await Conversation.get(id=conversation_id)
    wrote = conversation.last_customer_message_at
    if wrote is not None and wrote > row.at:
        return None  # they wrote after opting out: a reply to them is what they asked for
    return f"no consent for {topic} (opted out: {row.source})"
