"""Verified contact points (phone numbers, email addresses) and the bus key of a customer's events.

A channel that knows a verified phone number or email address of the person writing puts it in the
message's ``attributes`` under :data:`PHONE` (E.164, ``+4915112345678``) or :data:`EMAIL`; the core
checks it here (a value that does not pass is logged and ignored) and links every identity that brings
the same one into one customer (:mod:`bot_core.linking`).

Bus keys: every event of one customer must be handled in order, whichever channel it came from, but
an inbound event is published before anyone knows its customer. :func:`publish_key` looks the customer
up when the event is published (one indexed query): an identity seen before is published under its
customer's ``bus_key``; a new identity bringing a verified contact that belongs to a customer under
that customer's; a new identity with a verified contact nobody has under ``phone:<E.164>`` (or
``email:<address>``), so two new identities with the same number are ordered together from their first
message on; anything else under ``<channel>:<user>`` as before. A customer keeps the key its first
message was handled under (``Customer.bus_key``).
"""

from __future__ import annotations

import logging
import re

from bot_core.events import CustomerMessage
from storage import hot

log = logging.getLogger("relaydesk.customers")

PHONE = "phone"
EMAIL = "email"
KINDS = (PHONE, EMAIL)

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_PHONE_SEPARATORS = re.compile(r"[\s().\-/]")
# a dot-atom local part (RFC 5322 atext), as sites and platforms accept it
_LOCAL = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
MAX_EMAIL = 254


def valid_phone(value: str) -> str | None:
    """``value`` as an E.164 number (``+4915112345678``), or None.

    Spaces, dots, dashes, slashes and parentheses are dropped and a leading ``00`` becomes ``+``; a
    number without its country code (no ``+`` or ``00``) is refused: it cannot be told apart from
    another country's.
    """
    if not isinstance(value, str) or len(value) > 40:
        return None
    number = _PHONE_SEPARATORS.sub("", value.strip())
    if number.startswith("00"):
        number = "+" + number[2:]
    return number if _E164.fullmatch(number) else None


def valid_email(value: str) -> str | None:
    """``value`` as a lower-cased email address (an internationalised domain in its ASCII form), or None."""
    if not isinstance(value, str):
        return None
    address = value.strip().lower()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or len(local) > 64:
        return None
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        return None
    if labels[-1].isdigit() or not _LOCAL.fullmatch(local):
        return None
    address = f"{local}@{domain}"
    return address if len(address) <= MAX_EMAIL else None


def contact_points(attributes: dict[str, str], *, quiet: bool = False) -> list[tuple[str, str]]:
    """The verified contacts a message brings, checked: ``[("phone", "+49..."), ("email", "a@b.de")]``.

    A value that does not pass is logged (unless ``quiet``) and left out.
    """
    found: list[tuple[str, str]] = []
    for kind, check in ((PHONE, valid_phone), (EMAIL, valid_email)):
        raw = attributes.get(kind)
        if raw is None:
            continue
        value = check(raw)
        if value is None:
            if not quiet:
                log.warning(f"ignored a {kind} that is not valid", extra={kind: str(raw)[:80]})
            continue
        found.append((kind, value))
    return found


def without_contacts(attributes: dict[str, str]) -> dict[str, str]:
    """``attributes`` without the contact points (those are kept as contacts, not as attributes)."""
    return {k: v for k, v in attributes.items() if k not in KINDS}


def fresh_key(msg: CustomerMessage, contacts: list[tuple[str, str]]) -> str:
    """The key of a message whose customer is not known yet: its first verified contact, else its identity."""
    if contacts:
        kind, value = contacts[0]
        return f"{kind}:{value}"
    return f"{msg.channel}:{msg.external_user_id}"


async def publish_key(msg: CustomerMessage) -> str:
    """The bus key to publish ``msg`` under: its customer's (see the module's docstring)."""
    contacts = contact_points(msg.attributes, quiet=True)
    found = await hot.customer_keys(msg.channel, msg.external_user_id, contacts)
    if found:
        # several customers: the message will merge them into the oldest, whose key is used
        _customer_id, key = min(found)
        if key:
            return key
    return fresh_key(msg, contacts)
