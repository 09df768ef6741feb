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

Each worker keeps the keys of identities it saw lately in a :class:`CustomerKeyCache`, so a follow-up
without contacts is published without a query. The key of an identity changes only when its customer is
merged into another (:mod:`bot_core.linking`); a merge clears the cache of every worker (at once in the
merging one, through the fan-out in the others), and entries expire after a minute in case a worker missed
that message.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

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


MERGED_TOPIC = "customers-merged"
"""The fan-out topic a merge is announced on: every worker clears its :class:`CustomerKeyCache`."""


class CustomerKeyCache:
    """The bus keys of identities this worker saw lately: ``(channel, user id) -> key``.

    Why it stays right: an identity's key is its customer's ``bus_key``, which never changes; the identity
    moves to another customer (another key) only in a merge, and a merge calls :meth:`clear` in the worker
    that made it (after its transaction committed) and, through the fan-out (:data:`MERGED_TOPIC`), in
    every other worker. A lookup that read the database before a merge committed and ends after the clear
    does not fill the cache (:attr:`generation` moved on). Until the fan-out message arrives (a few
    milliseconds; see docs/architecture.md, "Bus keys are per customer") another worker may still
    publish a merged identity's message under its old key, which is the same limit merges had without
    the cache; entries expire after ``ttl`` seconds, which bounds it if a worker missed the message.

    ``unknown``: also remember the key of an identity not stored yet (its ``<channel>:<user>``), which is
    the key its customer will be created under unless one of its messages brings a verified contact. Only
    right when this process publishes every event (one worker, the in-process bus): a message with
    contacts then forgets the identity here (:meth:`taint`) until a message of it was handled
    (:meth:`put`, the stored key), so no later message is published under a guessed key that the contact
    made wrong. With several workers another one may publish that message: they look unknown identities up.
    """

    def __init__(
        self,
        ttl: float = 60.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        *,
        unknown: bool = False,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.unknown = unknown
        self._clock = clock
        self._keys: dict[tuple[str, str], tuple[str, float]] = {}
        self._tainted: set[tuple[str, str]] = set()
        self.generation = 0
        """Moves on with every :meth:`clear`: a lookup begun under an older one is not stored."""

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, channel: str, user: str) -> str | None:
        """The key of this identity, if known and fresh."""
        found = self._keys.get((channel, user))
        if found is None:
            return None
        key, expires = found
        if expires < self._clock():
            del self._keys[(channel, user)]
            return None
        return key

    def put(self, channel: str, user: str, key: str, generation: int) -> None:
        """Remember this identity's ``key``, read from the database under ``generation`` (ignored when a
        merge came since). The oldest entry makes room when the cache is full."""
        self._tainted.discard((channel, user))
        if generation != self.generation:
            return
        self._store(channel, user, key)

    def put_unknown(self, channel: str, user: str, key: str, generation: int) -> None:
        """Remember the key a message of an identity not stored yet was published under (only with
        ``unknown``, and not while a message of it with contacts waits to be handled)."""
        if self.unknown and generation == self.generation and (channel, user) not in self._tainted:
            self._store(channel, user, key)

    def taint(self, channel: str, user: str) -> None:
        """A message of this identity brings verified contacts: forget its key, and guess none for it until
        one of its messages was handled."""
        self._keys.pop((channel, user), None)
        if self.unknown:
            if len(self._tainted) >= self.max_entries:  # (messages dropped before being handled)
                self._tainted.clear()
                self.generation += 1  # no guess stays that one of them would have stopped
                self._keys.clear()
            self._tainted.add((channel, user))

    def _store(self, channel: str, user: str, key: str) -> None:
        entries = self._keys
        entries.pop((channel, user), None)  # re-inserted last: the dict's order is the age
        if len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        entries[(channel, user)] = (key, self._clock() + self.ttl)

    def clear(self, _message: object = None) -> None:
        """Forget every key (customers were merged); usable as a fan-out callback."""
        self._keys.clear()
        self.generation += 1


async def publish_key(msg: CustomerMessage, cache: CustomerKeyCache | None = None) -> str:
    """The bus key to publish ``msg`` under: its customer's (see the module's docstring).

    With ``cache``, a message without verified contacts from an identity seen lately needs no query (a
    message with contacts is always looked up: they may name other customers).
    """
    contacts = contact_points(msg.attributes, quiet=True)
    if cache is not None:
        if contacts:
            cache.taint(msg.channel, msg.external_user_id)
        else:
            key = cache.get(msg.channel, msg.external_user_id)
            if key is not None:
                return key
    generation = cache.generation if cache is not None else 0
    found = await hot.customer_keys(msg.channel, msg.external_user_id, contacts)
    if found:
        # several customers: the message will merge them into the oldest, whose key is used
        _customer_id, key = min(found)
        if key:
            if cache is not None and not contacts:
                cache.put(msg.channel, msg.external_user_id, key, generation)
            return key
    key = fresh_key(msg, contacts)
    if cache is not None and not contacts and not found:
        cache.put_unknown(msg.channel, msg.external_user_id, key, generation)
    return key
