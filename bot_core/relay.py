"""The relay: takes bus entries, drops duplicates, stores, runs the pipeline, mirrors and routes replies.

One inbound customer message: receipt (dedup on channel + external id) → customer, identity and
conversation (get-or-create) → message stored → mirrored into the room through the outbox → plugins.
An agent message in a room: receipt → room → conversation → a command, or stored and queued for the
customer in the outbox. A channel's delivery status: kept on its message, shown in the room
(:mod:`bot_core.delivery_status`). A receipt is marked processed last, so an event interrupted by a crash is
handled again on replay, and the outbox's idempotency keys keep its deliveries from doubling.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tortoise.exceptions import IntegrityError

from bot_core import consent, delivery_status
from bot_core.commands import parse_command
from bot_core.contacts import CustomerKeyCache
from bot_core.context import ActionKeys, Context
from bot_core.conversation_service import ConversationService
from bot_core.conversations import (
    conversation_for_room,
    get_or_create_agent,
    opened_log_columns,
    reply_identity_id,
    resolve_customer,
)
from bot_core.events import (
    AgentCommand,
    AgentMessage,
    ConversationEvent,
    CustomerMessage,
    DeliveryStatus,
    LifecycleKind,
    ScheduledFire,
    load_event,
    utcnow,
)
from bot_core.linking import CustomerLinks
from bot_core.metrics import Metrics
from bot_core.outbox import Outbox
from bot_core.pipeline import Pipeline
from bot_core.scheduler import claim_fire, fire_receipt_id
from storage import hot
from storage.bus import BusEntry
from storage.models import (
    Agent,
    Conversation,
    ConversationLog,
    ConversationState,
    Customer,
    Direction,
    Identity,
    InboundReceipt,
    Message,
)

log = logging.getLogger("relaydesk.relay")


@dataclass(frozen=True)
class Receipt:
    """The inbound receipt an event is handled under: its row, and whether this is the first attempt
    (False: a crash interrupted an earlier one, whose writes may be there already)."""

    id: int
    fresh: bool


class Relay:
    """Handles every bus entry: intake (dedup, store, mirror), then the plugins.

    Contexts act through the :class:`ConversationService` (``conversations``), which also publishes the
    conversation events this relay hands to the plugins' ``@on_conversation_event`` handlers.
    """

    def __init__(
        self,
        pipeline: Callable[[], Pipeline],
        outbox: Outbox,
        metrics: Metrics,
        conversations: ConversationService,
        *,
        keys: CustomerKeyCache | None = None,
        merged: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._pipeline = pipeline
        self.outbox = outbox
        self._metrics = metrics
        self.conversations = conversations
        self._keys = keys
        """The desk's bus-key cache: a handled customer message notes its identity's key there."""
        self.links = CustomerLinks(conversations, merged)

    # -- bus entry point -----------------------------------------------------------------------

    async def handle(self, entry: BusEntry) -> None:
        """Handle one bus entry (called by the bus, in order per conversation key)."""
        event = load_event(entry.payload)
        started = time.perf_counter()
        pipeline = self._pipeline()  # pinned for the whole event, even if a reload swaps it
        if isinstance(event, CustomerMessage):
            await self._customer_message(pipeline, event, entry.key)
        elif isinstance(event, AgentMessage):
            await self._agent_message(pipeline, event)
        elif isinstance(event, AgentCommand):
            await self._agent_command(pipeline, event)
        elif isinstance(event, ScheduledFire):
            await self._scheduled(pipeline, event)
        elif isinstance(event, ConversationEvent):
            await self._conversation_event(pipeline, event)
        elif isinstance(event, DeliveryStatus):
            await delivery_status.handle(event, self.conversations)  # idempotent: no receipt needed
        else:
            log.warning("bus entry of an unexpected type dropped", extra={"type": event.type})
        self._metrics.event_seconds.labels(event.type).observe(time.perf_counter() - started)

    async def _receipt(self, source: str, external_id: str) -> Receipt | None:
        """The receipt to handle this event under, or None if it was fully handled before (a duplicate)."""
        try:
            return Receipt(await hot.insert_receipt(source, external_id), fresh=True)
        except IntegrityError:
            existing = await InboundReceipt.get(source=source, external_id=external_id)
            if existing.processed:
                self._metrics.duplicates.labels(source).inc()
                log.info("duplicate dropped", extra={"source": source, "external_id": external_id})
                return None
            return Receipt(existing.id, fresh=False)  # a crash interrupted it: handle again

    async def _done(self, receipt: Receipt, keys: ActionKeys | None = None) -> None:
        if keys is not None and not receipt.fresh:
            # a crash interrupted this event: the conversation events of changes it made before may
            # not have been published (their receipts drop the ones that were)
            await self.conversations.republish(keys.event_key)
        await hot.mark_receipt_processed(receipt.id)

    # -- customer side -------------------------------------------------------------------------

    async def _customer_message(self, pipeline: Pipeline, msg: CustomerMessage, bus_key: str) -> None:
        receipt = await self._receipt(msg.channel, msg.external_message_id)
        if receipt is None:
            return
        keys = ActionKeys(f"{msg.channel}:{msg.external_message_id}")
        # a merge this message causes numbers its room posts apart: a replay (no merge) keeps the keys below
        link_keys = ActionKeys(f"{keys.event_key}:link")
        generation = self._keys.generation if self._keys is not None else 0
        by = f"{msg.channel}:{msg.external_user_id}"
        opened = await resolve_customer(
            msg,
            bus_key,
            functools.partial(self.links.link_contacts, link_keys),
            opened_log_columns(keys.event_key, by, ConversationState.BOT),
        )
        if self._keys is not None and opened.customer.bus_key:
            # the identity's next message is published without a query (unless a merge came meanwhile)
            self._keys.put(msg.channel, msg.external_user_id, opened.customer.bus_key, generation)
        conversation = opened.conversation
        workspace = await self.conversations.room_workspace(conversation)
        attachments = [a.model_dump(mode="json") for a in msg.attachments]
        if msg.edit_of:
            original = await Message.filter(
                channel=msg.channel, channel_message_id=msg.edit_of, direction=Direction.INBOUND
            ).first()
            if original is not None:
                if original.text != msg.text:
                    original.edits = [*original.edits, {"text": original.text, "at": utcnow().isoformat()}]
                    original.text = msg.text
                    original.edited_at = msg.timestamp
                    await original.save(update_fields=["edits", "text", "edited_at"])
                    if workspace:
                        await self.outbox.enqueue_room(
                            conversation,
                            workspace,
                            "customer_message",
                            key=keys.next("edit"),
                            message=original,
                            text=msg.text,
                            details=self._mirror_details(opened.identity, original.attachments, edit=True),
                        )
                await self._done(receipt)
                return
        message = None
        if not receipt.fresh:  # a crash interrupted this event: its message may be stored already
            message = await Message.filter(
                channel=msg.channel, channel_message_id=msg.external_message_id, direction=Direction.INBOUND
            ).first()
        if message is None:
            message = await hot.insert_message(
                conversation_id=conversation.id,
                direction=Direction.INBOUND,
                author=msg.display_name or msg.external_user_id,
                text=msg.text,
                attachments=attachments,
                channel=msg.channel,
                channel_message_id=msg.external_message_id,
            )
        self._metrics.messages_in.labels(msg.channel).inc()
        log.info(
            "customer message",
            extra={"channel": msg.channel, "conversation": conversation.id, "chars": len(msg.text)},
        )
        # The room always shows what the customer wrote, before anything a plugin answers.
        if workspace:
            await self.outbox.enqueue_room(
                conversation,
                workspace,
                "customer_message",
                key=keys.next("mirror"),
                message=message,
                text=message.text,
                details={
                    **self._mirror_details(opened.identity, attachments),
                    "reply_to": msg.reply_to,
                    "channel_message_id": msg.external_message_id,
                },
            )
        # replies held until the customer wrote again (WhatsApp's 24-hour window) go out now
        await self.outbox.release_held(msg.channel, msg.external_user_id)
        if not opened.identity.reachable:
            await self._reachable_again(conversation, opened.identity, workspace, keys.event_key)
        if consent.is_stop(msg.text):
            await self._opted_out(conversation, workspace, msg, keys.event_key)
        ctx = Context(
            self.conversations,
            "core",
            keys,
            conversation=conversation,
            customer=opened.customer,
            identity=opened.identity,
        )
        if opened.new_conversation or (
            not receipt.fresh and not await ConversationLog.exists(conversation_id=conversation.id)
        ):  # (or a crash came between creating the conversation and logging it)
            await self.conversations.opened(ctx, by=by, logged=opened.opened_log)
        elif opened.customer_changed and workspace:
            # e.g. a returning customer followed a new deep link (another order): the card shows it
            await self.outbox.enqueue_room(conversation, workspace, "card", key=keys.next("card"))
        await pipeline.customer_message(ctx, msg)
        await self._done(receipt, keys)

    async def _reachable_again(
        self, conversation: Conversation, identity: Identity, workspace: str | None, source: str
    ) -> None:
        """A customer marked unreachable (they had blocked the bot, say) wrote: replies are sent again.

        The room is told and the card refreshed before the identity is updated, under keys of their own
        (not numbered like the plugins' actions), so a replay after a crash neither loses nor doubles them.
        """
        reason = identity.unreachable_reason or "unreachable"
        if workspace:
            await self.outbox.enqueue_room(
                conversation,
                workspace,
                "notice",
                key=f"{source}:reachable",
                text=(
                    f"✓ The customer wrote again on {identity.channel}: they can be reached again, "
                    f"replies are sent from now on (they were unreachable: {reason})."
                ),
            )
            await self.outbox.enqueue_room(conversation, workspace, "card", key=f"{source}:reachable-card")
        await Identity.filter(id=identity.id).update(reachable=True, unreachable_reason=None)
        identity.reachable, identity.unreachable_reason = True, None
        log.info(
            "customer reachable again", extra={"channel": identity.channel, "conversation": conversation.id}
        )

    async def _opted_out(
        self, conversation: Conversation, workspace: str | None, msg: CustomerMessage, source: str
    ) -> None:
        """The customer wrote STOP: no more marketing to them (service replies to what they write go on).

        Keyed by the event like :meth:`_reachable_again`, so a replay neither loses nor doubles the notice.
        """
        word = msg.text.strip()
        if await consent.record(conversation.customer_id, consent.MARKETING, False, f"customer wrote {word}"):
            log.info("customer opted out of marketing", extra={"conversation": conversation.id})
        if workspace:
            await self.outbox.enqueue_room(
                conversation,
                workspace,
                "notice",
                key=f"{source}:opt-out",
                text=f"✓ The customer wrote {word}: no more marketing messages are sent to them.",
            )

    @staticmethod
    def _mirror_details(
        identity: Identity, attachments: list[dict[str, object]], *, edit: bool = False
    ) -> dict[str, object]:
        return {
            "sender": identity.display_name or identity.external_id,
            "channel": identity.channel,
            "user": identity.external_id,
            "attachments": attachments,
            "edit": edit,
        }

    # -- agent side ----------------------------------------------------------------------------

    async def _room_context(
        self, workspace: str, room_id: str, agent_id: str, agent_name: str | None, keys: ActionKeys
    ) -> Context | None:
        conversation = await conversation_for_room(workspace, room_id)
        if conversation is None:
            log.info(
                "event in a room relaydesk does not know", extra={"workspace": workspace, "room": room_id}
            )
            return None
        agent = await get_or_create_agent(workspace, agent_id, agent_name)
        return await self._context_of(conversation, "core", keys, agent)

    async def _ops_context(self, cmd: AgentCommand, keys: ActionKeys) -> Context:
        """The context of a command typed in an ops room: no conversation; notices answer in that room."""
        assert cmd.ops_channel
        agent = await get_or_create_agent(cmd.workspace, cmd.agent_id, cmd.agent_name)
        return Context(
            self.conversations, "core", keys, agent=agent, ops_room=(cmd.workspace, cmd.ops_channel)
        )

    async def _context_of(
        self, conversation: Conversation, plugin: str, keys: ActionKeys, agent: Agent | None = None
    ) -> Context:
        """A context on a stored conversation, with its customer and the identity replies go to loaded."""
        customer = await Customer.get(id=conversation.customer_id)
        identity = await Identity.get(id=reply_identity_id(conversation))
        return Context(
            self.conversations,
            plugin,
            keys,
            conversation=conversation,
            customer=customer,
            identity=identity,
            agent=agent,
        )

    async def _agent_message(self, pipeline: Pipeline, msg: AgentMessage) -> None:
        parsed = parse_command(msg.text)
        if parsed is not None and not msg.edit_of:
            name, args, raw = parsed
            command = AgentCommand(
                workspace=msg.workspace,
                room_id=msg.room_id,
                external_message_id=msg.external_message_id,
                agent_id=msg.agent_id,
                agent_name=msg.agent_name,
                command=name,
                args=args,
                raw=raw,
                timestamp=msg.timestamp,
                ops_channel=msg.ops_channel,
            )
            await self._agent_command(pipeline, command)
            return
        receipt = await self._receipt(msg.workspace, msg.external_message_id)
        if receipt is None:
            return
        keys = ActionKeys(f"{msg.workspace}:{msg.external_message_id}")
        ctx = await self._room_context(msg.workspace, msg.room_id, msg.agent_id, msg.agent_name, keys)
        if ctx is None or ctx.raw_conversation is None or ctx.agent is None:
            await self._done(receipt)
            return
        conversation = ctx.raw_conversation
        identity = await Identity.get(id=reply_identity_id(conversation))
        agent_name = ctx.agent.display_name or ctx.agent.external_id
        self._metrics.messages_in.labels(msg.workspace).inc()
        if msg.edit_of or msg.redacts:
            await self._agent_correction(conversation, identity, msg, keys)
            await self._done(receipt)
            return
        message = await Message.filter(
            conversation_id=conversation.id, workspace_message_id=msg.external_message_id
        ).first()
        if message is None:
            message = await Message.create(
                conversation_id=conversation.id,
                direction=Direction.OUTBOUND,
                author=agent_name,
                text=msg.text,
                attachments=[a.model_dump(mode="json") for a in msg.attachments],
                channel=identity.channel,
                workspace_message_id=msg.external_message_id,
            )
        if not await pipeline.agent_message(ctx, msg):
            if identity.reachable:
                await self.outbox.enqueue_customer(
                    conversation,
                    identity,
                    msg.text,
                    key=keys.next("reply"),
                    attachments=msg.attachments,
                    message=message,
                    agent_name=agent_name,
                )
            else:
                await ctx.notice(
                    f"⚠ The customer cannot be reached on {identity.channel} "
                    f"({identity.unreachable_reason or 'unreachable'}): this reply was not sent."
                )
            if conversation.state in (ConversationState.BOT, ConversationState.QUEUED):
                # the first agent to answer takes the conversation (unless someone took it meanwhile)
                await self.conversations.change(
                    ctx,
                    LifecycleKind.ASSIGNED,
                    agent_id=msg.agent_id,
                    only_from=(ConversationState.BOT, ConversationState.QUEUED),
                )
        await self._done(receipt, keys)

    async def _agent_correction(
        self, conversation: Conversation, identity: Identity, msg: AgentMessage, keys: ActionKeys
    ) -> None:
        """An agent edited or deleted a message they sent: store it and let the customer's copy follow."""
        target = msg.edit_of or msg.redacts
        original = await Message.filter(
            conversation_id=conversation.id, workspace_message_id=target, direction=Direction.OUTBOUND
        ).first()
        if original is None:
            return
        body = msg.text if msg.edit_of else original.text  # a deletion names what it deletes
        if msg.redacts:
            original.edits = [
                *original.edits,
                {"text": original.text, "at": utcnow().isoformat(), "deleted": True},
            ]
            original.text = ""
            kind = "delete"
        elif original.text != msg.text:
            original.edits = [*original.edits, {"text": original.text, "at": utcnow().isoformat()}]
            original.text = msg.text
            kind = "edit"
        else:
            return
        original.edited_at = msg.timestamp
        await original.save(update_fields=["edits", "text", "edited_at"])
        if original.channel != identity.channel:  # the original went out on another of their channels
            identity = (
                await Identity.filter(customer_id=conversation.customer_id, channel=original.channel)
                .order_by("-id")
                .first()
            ) or identity
        if identity.reachable:
            await self.outbox.enqueue_customer(
                conversation, identity, body, key=keys.next(kind), message=original, correction=kind
            )

    async def _agent_command(self, pipeline: Pipeline, cmd: AgentCommand) -> None:
        receipt = await self._receipt(cmd.workspace, cmd.external_message_id)
        if receipt is None:
            return
        keys = ActionKeys(f"{cmd.workspace}:{cmd.external_message_id}")
        ctx = (
            await self._ops_context(cmd, keys)
            if cmd.ops_channel
            else await self._room_context(cmd.workspace, cmd.room_id, cmd.agent_id, cmd.agent_name, keys)
        )
        if ctx is not None:
            if not await pipeline.command(ctx, cmd):
                await ctx.notice(f"Unknown command !{cmd.command}. Type !help for the list.")
        await self._done(receipt, keys)

    # -- scheduled jobs ------------------------------------------------------------------------

    async def _scheduled(self, pipeline: Pipeline, fire: ScheduledFire) -> None:
        source_id = fire_receipt_id(fire)
        receipt = await self._receipt("schedule", source_id)
        if receipt is None:
            return
        if not await claim_fire(fire):
            log.info("cancelled or moved task not fired", extra={"plugin": fire.plugin, "job": fire.job})
            await self._done(receipt)
            return
        keys = ActionKeys(f"schedule:{source_id}")
        conversation = (
            await Conversation.get_or_none(id=fire.conversation_id) if fire.conversation_id else None
        )
        ctx = (
            await self._context_of(conversation, fire.plugin, keys)
            if conversation is not None
            else Context(self.conversations, fire.plugin, keys)
        )
        if not await pipeline.scheduled(ctx, fire):
            log.warning(
                "scheduled job has no handler (plugin disabled?)",
                extra={"plugin": fire.plugin, "job": fire.job},
            )
        await self._done(receipt, keys)

    # -- conversation events -------------------------------------------------------------------

    async def _conversation_event(self, pipeline: Pipeline, event: ConversationEvent) -> None:
        """A logged change of a conversation: its handlers run once (the receipt is the log row's id)."""
        receipt = await self._receipt("conversation", str(event.log_id))
        if receipt is None:
            return
        keys = ActionKeys(f"conversation:{event.log_id}")
        conversation = await Conversation.get_or_none(id=event.conversation_id)
        if conversation is not None:
            await pipeline.lifecycle(await self._context_of(conversation, "core", keys), event)
        await self._done(receipt, keys)
