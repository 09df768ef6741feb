"""Customers across channels: identities linked into one customer, merges, and where replies go.

Identities are linked by a verified phone number or email address their channel gives
(:mod:`bot_core.contacts`), or by an agent's ``!link`` in a room. Linking two customers merges the
younger into the older (the lower id survives): identities, verified contacts, conversations, rooms
(where the survivor has none in that workspace), consent (the later word per topic wins), tags,
attributes (the survivor's win), time zone, locale and the plugins' customer-scoped state (the
survivor's keys win) move to the survivor; the other customer's row stays, ``merged_into`` naming the
survivor (a room it keeps stays its own). A customer has one open conversation: when both had one, the
older conversation goes on and the other is closed, its room told where the case continues, and the
surviving room shown the closed one's last messages.

Replies go to the identity the customer last wrote from, or to the one an agent picked for the
conversation with ``!via <channel>`` (until ``!via auto``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tortoise.exceptions import IntegrityError

from bot_core.contacts import EMAIL, PHONE, valid_email, valid_phone
from bot_core.conversations import current_customer_id, reply_identity_id
from bot_core.events import LifecycleKind
from storage.db import transaction
from storage.models import (
    Agent,
    Consent,
    Conversation,
    ConversationState,
    Customer,
    CustomerContact,
    Direction,
    Identity,
    Message,
    PluginState,
    Room,
)

if TYPE_CHECKING:
    from bot_core.context import ActionKeys, Context
    from bot_core.conversation_service import ConversationService

log = logging.getLogger("relaydesk.customers")

TRANSCRIPT_LINES = 20  # of a conversation closed by a merge, shown in the room that goes on
AUTO = ("auto", "last")


@dataclass(frozen=True)
class LinkTarget:
    """What ``!link`` was given: a phone number, an email address or a channel identity."""

    kind: str  # "phone", "email" or "identity"
    value: str
    channel: str = ""


def parse_link_target(arg: str) -> LinkTarget | str:
    """``!link``'s argument as a :class:`LinkTarget`, or the reason it is not one.

    ``+4915112345678`` (or ``0049 151 …``) is a phone number, ``name@example.com`` an email address,
    ``telegram:12345`` an identity (channel, then the user's id there).
    """
    arg = arg.strip()
    if arg.startswith(("+", "00")):
        phone = valid_phone(arg)
        return LinkTarget(PHONE, phone) if phone else f"{arg} is not a phone number in E.164 (+4915112345678)"
    channel, colon, external = arg.partition(":")
    if "@" in arg and not colon:
        email = valid_email(arg)
        return LinkTarget(EMAIL, email) if email else f"{arg} is not a valid email address"
    if not colon or not channel or not external:
        return f"{arg} is neither a phone number (+49…), an email address nor <channel>:<user id>"
    return LinkTarget("identity", external, channel)


def identity_label(identity: Identity) -> str:
    """An identity as the room reads it: ``telegram (Anna, 12345)``."""
    name = identity.display_name
    return (
        f"{identity.channel} ({name}, {identity.external_id})"
        if name
        else f"{identity.channel} ({identity.external_id})"
    )


class CustomerLinks:
    """Links and merges customers, and routes replies (``!link``, ``!via``); announces both in the rooms."""

    def __init__(
        self, conversations: ConversationService, merged: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self._service = conversations
        self._merged = merged
        """Called once a merge committed (the desk clears every worker's bus-key cache with it)."""

    # -- linking by verified contacts ----------------------------------------------------------

    async def link_contacts(
        self, keys: ActionKeys, customer: Customer, identity: Identity, contacts: list[tuple[str, str]]
    ) -> Customer:
        """Record ``identity``'s verified contacts; a contact another customer has merges the two.

        Returns the customer ``identity`` belongs to afterwards.
        """
        for kind, value in contacts:
            owner = await CustomerContact.get_or_none(kind=kind, value=value)
            if owner is None:
                try:
                    await CustomerContact.create(
                        customer_id=customer.id, kind=kind, value=value, identity_id=identity.id
                    )
                    continue
                except IntegrityError:  # another event recorded it first
                    owner = await CustomerContact.get(kind=kind, value=value)
            if owner.customer_id != customer.id:
                customer, _shown_in = await self.merge(
                    keys,
                    customer.id,
                    owner.customer_id,
                    reason=f"the same verified {kind} {value}",
                    by="core",
                )
        return customer

    # -- merging -------------------------------------------------------------------------------

    async def merge(
        self,
        keys: ActionKeys,
        one: int,
        other: int,
        *,
        reason: str,
        by: str,
        agent: Agent | None = None,
    ) -> tuple[Customer, set[int]]:
        """Merge customers ``one`` and ``other`` into the older (see the module); returns the survivor and
        the conversations whose rooms were told."""
        survivor_id, absorbed_id = sorted((await current_customer_id(one), await current_customer_id(other)))
        survivor = await Customer.get(id=survivor_id)
        if survivor_id == absorbed_id:
            return survivor, set()
        absorbed = await Customer.get(id=absorbed_id)
        moved = await Identity.filter(customer_id=absorbed_id).order_by("id")
        open_s = await _open_conversation(survivor_id)
        open_a = await _open_conversation(absorbed_id)
        keep, close = open_s or open_a, None
        if open_s is not None and open_a is not None:
            keep, close = (open_s, open_a) if open_s.id < open_a.id else (open_a, open_s)
        async with transaction():
            await Identity.filter(customer_id=absorbed_id).update(customer_id=survivor_id)
            await CustomerContact.filter(customer_id=absorbed_id).update(customer_id=survivor_id)
            await Conversation.filter(customer_id=absorbed_id).update(customer_id=survivor_id)
            taken = await Room.filter(customer_id=survivor_id).values_list("workspace", flat=True)
            rooms = Room.filter(customer_id=absorbed_id)
            if taken:
                rooms = rooms.exclude(workspace__in=list(taken))
            await rooms.update(customer_id=survivor_id)
            await _merge_consent(survivor_id, absorbed_id)
            await _merge_plugin_state(survivor_id, absorbed_id)
            survivor.tags = sorted(set(survivor.tags) | set(absorbed.tags))
            survivor.attributes = {**absorbed.attributes, **survivor.attributes}
            survivor.timezone = survivor.timezone or absorbed.timezone
            survivor.locale = survivor.locale or absorbed.locale
            if survivor.bus_key is None:
                first = await Identity.filter(customer_id=survivor_id).order_by("id").first()
                survivor.bus_key = f"{first.channel}:{first.external_id}" if first else absorbed.bus_key
            await survivor.save(update_fields=["tags", "attributes", "timezone", "locale", "bus_key"])
            absorbed.merged_into_id = survivor_id
            await absorbed.save(update_fields=["merged_into_id"])
        if self._merged is not None:  # the absorbed identities' bus key changed: no worker may keep the old
            await self._merged()
        log.info(
            "customers merged",
            extra={"customer": survivor_id, "merged": absorbed_id, "reason": reason, "by": by},
        )
        shown_in = await self._announce_merge(keys, survivor, absorbed, moved, keep, close, reason, agent)
        return await Customer.get(id=survivor_id), shown_in

    async def _announce_merge(
        self,
        keys: ActionKeys,
        survivor: Customer,
        absorbed: Customer,
        moved: list[Identity],
        keep: Conversation | None,
        close: Conversation | None,
        reason: str,
        agent: Agent | None,
    ) -> set[int]:
        from bot_core.context import Context

        outbox = self._service.outbox
        shown_in: set[int] = set()
        names = "; ".join(identity_label(i) for i in moved) or "no identities"
        if close is not None:
            other = survivor.id if close.customer_id == absorbed.id else absorbed.id
            close.customer_id = survivor.id
            workspace = await self._service.room_workspace(close)
            if workspace:
                await outbox.enqueue_room(
                    close,
                    workspace,
                    "notice",
                    key=keys.next("merged"),
                    text=f"🔗 This customer is the same person as customer #{other} ({reason}): "
                    f"the case goes on in conversation #{keep.id if keep else '?'}, in that "
                    "conversation's room; this conversation is closed.",
                )
            identity = await Identity.get(id=reply_identity_id(close))
            ctx = Context(
                self._service,
                "core",
                keys,
                conversation=close,
                customer=survivor,
                identity=identity,
                agent=agent,
            )
            await self._service.change(ctx, LifecycleKind.CLOSED)
            shown_in.add(close.id)
        if keep is None:
            return shown_in
        keep.customer_id = survivor.id
        workspace = await self._service.room_workspace(keep)
        if not workspace:
            return shown_in
        text = f"🔗 Linked with customer #{absorbed.id} ({reason}): {names} now belong to this customer, with their conversations and tags."
        if close is not None:
            text += (
                f"\nTheir open conversation #{close.id} was closed; its last messages:\n"
                + await _transcript(close)
            )
        await outbox.enqueue_room(keep, workspace, "notice", key=keys.next("linked"), text=text)
        await outbox.enqueue_room(keep, workspace, "card", key=keys.next("card"))
        shown_in.add(keep.id)
        return shown_in

    # -- the commands --------------------------------------------------------------------------

    async def link_command(self, ctx: Context, args: tuple[str, ...]) -> None:
        """``!link <+phone|email|channel:user>``: merge the room's customer with the one named."""
        conversation = ctx.raw_conversation
        assert conversation is not None
        if not args:
            await ctx.notice(
                "Usage: !link <+phone> | <email> | <channel>:<user id>, e.g. !link +4915112345678, "
                "!link anna@example.com, !link telegram:12345 — makes that customer and this one one customer."
            )
            return
        target = parse_link_target(args[0])
        if isinstance(target, str):
            await ctx.notice(f"!link changed nothing: {target}.")
            return
        owner = await _owner_of(target)
        if owner is None:
            await ctx.notice(f"!link changed nothing: no customer is known with {args[0]}.")
            return
        if owner == conversation.customer_id:
            await ctx.notice(f"!link changed nothing: {args[0]} is this customer's already.")
            return
        agent = ctx.agent
        who = agent.external_id if agent else ctx.plugin
        absorbed_names = "; ".join(
            identity_label(i) for i in await Identity.filter(customer_id=owner).order_by("id")
        )
        _customer, shown_in = await self.merge(
            ctx.keys,
            conversation.customer_id,
            owner,
            reason=f"linked by {who}: !link {args[0]}",
            by=who,
            agent=agent,
        )
        if conversation.id not in shown_in:  # this room's conversation is closed: say it here too
            await ctx.notice(f"🔗 Linked: {absorbed_names} and this customer are one customer now.")
            workspace = await self._service.room_workspace(conversation)
            if workspace:
                await self._service.outbox.enqueue_room(
                    conversation, workspace, "card", key=ctx.keys.next("card")
                )

    async def via_command(self, ctx: Context, args: tuple[str, ...]) -> None:
        """``!via [<channel>|<channel>:<user>|auto]``: where replies in this conversation go."""
        conversation = ctx.raw_conversation
        assert conversation is not None
        await conversation.refresh_from_db(fields=["identity_id", "via_identity_id"])
        identities = await Identity.filter(customer_id=conversation.customer_id).order_by("id")
        channels = [i.channel for i in identities]

        def token(identity: Identity) -> str:
            unique = channels.count(identity.channel) == 1
            return identity.channel if unique else f"{identity.channel}:{identity.external_id}"

        current = next((i for i in identities if i.id == reply_identity_id(conversation)), None)
        if not args:
            why = (
                "picked with !via"
                if conversation.via_identity_id
                else "the channel the customer last wrote from"
            )
            options = ", ".join(
                f"!via {token(i)}{'' if i.reachable else ' (unreachable)'}" for i in identities
            )
            now = identity_label(current) if current else "nowhere"
            await ctx.notice(f"Replies go to {now} ({why}).\nOptions: {options}, !via auto")
            return
        arg = args[0].strip()
        if arg.lower() in AUTO:
            conversation.via_identity_id = None
            await Conversation.filter(id=conversation.id).update(via_identity_id=None)
            now_to = next((i for i in identities if i.id == conversation.identity_id), None)
            await ctx.notice(
                "Replies go to the channel the customer last wrote from"
                + (f" (now {identity_label(now_to)})." if now_to else ".")
            )
        else:
            matches = [i for i in identities if arg in (i.channel, f"{i.channel}:{i.external_id}")]
            if len(matches) != 1:
                options = ", ".join(token(i) for i in identities)
                reason = (
                    "several identities on it, name one" if matches else "the customer has no identity there"
                )
                await ctx.notice(f"!via changed nothing: {arg}: {reason} (options: {options}, auto).")
                return
            chosen = matches[0]
            conversation.via_identity_id = chosen.id
            await Conversation.filter(id=conversation.id).update(via_identity_id=chosen.id)
            text = f"Replies in this conversation go to {identity_label(chosen)} until changed (!via auto: the channel the customer last wrote from)."
            if not chosen.reachable:
                text += (
                    f"\n⚠ That identity is unreachable now ({chosen.unreachable_reason or 'unreachable'})."
                )
            await ctx.notice(text)
        workspace = await self._service.room_workspace(conversation)
        if workspace:
            await self._service.outbox.enqueue_room(
                conversation, workspace, "card", key=ctx.keys.next("card")
            )


async def _open_conversation(customer_id: int) -> Conversation | None:
    return (
        await Conversation.filter(customer_id=customer_id)
        .exclude(state=ConversationState.CLOSED)
        .order_by("-id")
        .first()
    )


async def _owner_of(target: LinkTarget) -> int | None:
    """The customer ``!link``'s target names, if any."""
    if target.kind == "identity":
        identity = await Identity.get_or_none(channel=target.channel, external_id=target.value)
        return identity.customer_id if identity else None
    contact = await CustomerContact.get_or_none(kind=target.kind, value=target.value)
    if contact is not None:
        return contact.customer_id
    # a channel whose user ids are the number or address itself (SMS, email)
    identity = await Identity.filter(external_id=target.value).order_by("id").first()
    return identity.customer_id if identity else None


async def _merge_consent(survivor_id: int, absorbed_id: int) -> None:
    """Consent rows move to the survivor; where both have a topic, the later word wins."""
    for row in await Consent.filter(customer_id=absorbed_id):
        mine = await Consent.get_or_none(customer_id=survivor_id, topic=row.topic)
        if mine is None:
            await Consent.filter(id=row.id).update(customer_id=survivor_id)
            continue
        if row.at > mine.at:
            await Consent.filter(id=mine.id).update(granted=row.granted, source=row.source, at=row.at)
        await Consent.filter(id=row.id).delete()


async def _merge_plugin_state(survivor_id: int, absorbed_id: int) -> None:
    """Plugins' customer-scoped keys move to the survivor; where both have a key, the survivor's stays."""
    scope, into = f"customer:{absorbed_id}", f"customer:{survivor_id}"
    taken = {(p, k) for p, k in await PluginState.filter(scope=into).values_list("plugin", "key")}
    for row in await PluginState.filter(scope=scope):
        if (row.plugin, row.key) not in taken:
            await PluginState.filter(id=row.id).update(scope=into)


async def _transcript(conversation: Conversation) -> str:
    """The last messages of ``conversation`` as lines for a notice."""
    rows = await (
        Message.filter(conversation_id=conversation.id, direction__in=[Direction.INBOUND, Direction.OUTBOUND])
        .order_by("-id")
        .limit(TRANSCRIPT_LINES)
    )
    lines = [
        f"{'→' if m.direction is Direction.OUTBOUND else '←'} {m.author or m.channel} ({m.channel}): {m.text}"
        for m in reversed(rows)
    ]
    return "\n".join(lines) or "(no messages)"
