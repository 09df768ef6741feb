"""The outbox: every outbound delivery is a stored row, sent by its adapter with retries and backoff.

Rows are delivered in id order per lane, a lane being (conversation, target): a customer's messages
arrive in the order they were written, while a slow workspace never holds up customer deliveries.
Different lanes are sent concurrently. With several workers, a row is claimed (status ``sending`` with a
claim deadline) before its adapter is called, so two workers never send the same row; a claim left by a
dead worker expires and the row is sent again. A single worker knows its lanes in flight in memory and
does not claim (one statement less per delivery); at start it releases any claim an earlier
multi-worker run left. Marking a row sent, noting the platform's id on its message and reading the
lane's next row are one transaction. On SQLite a row is sent only once its insert is committed (writes
are committed once per turn of the event loop: :func:`storage.hot.durable`).

A row's payload is one of the models of :mod:`bot_core.payloads`, parsed when the row is sent; a row
that does not parse is given up at once (logged, never retried) and its lane goes on. A delivery the
channel took marks its message ``sent`` (:mod:`bot_core.delivery_status` keeps what channels report
later); a customer's message the room took is shown *delivered* on channels that show delivery states.

Failures: :class:`RetryAfter` waits as long as the platform asked (it is never counted as a failure);
:class:`TemporaryFailure` and unexpected errors (5xx, timeouts, an unreachable platform) back off
exponentially (capped at ``max_backoff``) for as long as the row is younger than ``retry_window``
(24 h by default), so an outage of minutes or hours loses nothing; :class:`Undeliverable` gives up at
once. A row blocked in retries holds its lane: the rows after it wait and go out in order once it is
through. The other side is told (see :mod:`bot_core.delivery_notices`): once a row is ``notice_after``
late, when a delayed row finally goes through, and when one is given up.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from tortoise.exceptions import DoesNotExist, IntegrityError

from bot_core import consent
from bot_core.adapters import (
    AwaitingCustomer,
    Channel,
    ConversationView,
    Delivery,
    DeliveryStateChannel,
    DeliveryStatusWorkspace,
    InvitingWorkspace,
    MentioningWorkspace,
    MessageView,
    OpsImageWorkspace,
    OpsWorkspace,
    RetryAfter,
    RoomRef,
    TemplateRef,
    TemporaryFailure,
    Undeliverable,
    Workspace,
)
from bot_core.choices import Choice, numbered
from bot_core.conversations import customer_card, view_and_customer
from bot_core.delivery_notices import DELAY, HELD, DeliveryNotices, duration, give_up_time
from bot_core.events import Attachment, utcnow
from bot_core.metrics import Metrics
from bot_core.payloads import (
    CustomerReaction,
    CustomerTemplate,
    CustomerText,
    OpsImage,
    OpsPost,
    OutboxPayload,
    PayloadError,
    RoomCard,
    RoomCustomerMessage,
    RoomInvite,
    RoomMention,
    RoomStatus,
    dump_payload,
    parse_payload,
)
from bot_core.rooms import RoomDirectory
from storage import hot
from storage.db import fresh_context
from storage.models import (
    Conversation,
    Customer,
    Identity,
    Message,
    OutboxItem,
    OutboxStatus,
    OutboxTarget,
)

log = logging.getLogger("relaydesk.outbox")

AdapterLookup = Callable[[str], object | None]


@dataclass(frozen=True)
class OutboxSettings:
    """Tuning of delivery retries and concurrency."""

    retry_window: float = 86400.0
    """Temporary failures are retried until a row is this many seconds old; then it is given up."""
    notice_after: float = 180.0
    """A row still failing this many seconds after it was written is reported as delayed (once)."""
    base_backoff: float = 1.0
    max_backoff: float = 120.0
    claim_seconds: float = 60.0
    concurrency: int = 64
    poll_interval: float = 1.0
    scan_limit: int = 2000
    """At most this many lanes (conversation and target) are looked at per periodic scan, oldest first."""


@dataclass(frozen=True)
class _Sent:
    """What a delivery left on the platform: its id there and, if the row's message should remember it,
    the message column to keep it in (see :data:`storage.hot.MESSAGE_ID_COLUMNS`)."""

    external_id: str
    message_column: str | None = None
    note: str = ""  # the channel's word for the room about this delivery (SentRef.note)


def _delivery_kind(payload: CustomerText | CustomerTemplate | CustomerReaction, row: OutboxItem) -> str:
    """What a channel is told a delivery is: ``template``, ``message``, or ``notice`` (relaydesk's own word
    about a delivery: no stored message, a key :mod:`bot_core.delivery_notices` made)."""
    if isinstance(payload, CustomerTemplate):
        return "template"
    if isinstance(payload, CustomerReaction):
        return "reaction"
    return "message" if row.message_id is not None else "notice"


class Outbox:
    """Stores outbound deliveries and sends them through the adapters found by ``lookup``."""

    def __init__(
        self,
        lookup: AdapterLookup,
        metrics: Metrics,
        settings: OutboxSettings | None = None,
        *,
        rooms: RoomDirectory | None = None,
        single_worker: bool = True,
    ) -> None:
        self._lookup = lookup
        self.directory = rooms or RoomDirectory(lambda: ())
        self._metrics = metrics
        self.settings = settings or OutboxSettings()
        self._single_worker = single_worker
        self._wake = asyncio.Event()
        self._inflight: dict[tuple[int | None, str], asyncio.Task[None]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        self._room_locks: dict[int, asyncio.Lock] = {}
        # conversation id -> its bound room (rebound when the conversation moves to another workspace)
        self._rooms: dict[int, RoomRef] = {}
        # lanes waiting for a free slot, oldest first (a dict keeps insertion order: fair, unlike a set)
        self._waiting: dict[tuple[int | None, str], None] = {}
        self._settled = asyncio.Event()
        # row id -> commit point of the rows this process queued whose insert may not be committed yet
        self._uncommitted: dict[int, int] = {}
        # adapter name -> (the adapter object, is it a channel, is it a workspace)
        self._adapter_roles: dict[str, tuple[object, bool, bool]] = {}
        # channel name -> (the adapter object, does it show delivery states)
        self._state_channels: dict[str, tuple[object, bool]] = {}
        self.notices = DeliveryNotices(self, lookup, self._room_workspace)
        # adapter -> lanes of this process whose head waits out a backoff after a temporary failure: a
        # success through that adapter means the platform is back, and they are tried again at once
        self._backing_off: dict[str, set[tuple[int | None, str]]] = {}

    def adapter(self, name: str) -> object | None:
        """The enabled adapter plugin called ``name``, if any."""
        return self._lookup(name)

    # -- writing -------------------------------------------------------------------------------

    async def enqueue_customer(
        self,
        conversation: Conversation,
        identity: Identity,
        text: str,
        *,
        key: str,
        attachments: tuple[Attachment, ...] = (),
        message: Message | None = None,
        agent_name: str | None = None,
        correction: str | None = None,
        topic: str = consent.SERVICE,
        template: TemplateRef | None = None,
        choices: tuple[Choice, ...] = (),
        choices_listed: bool = False,
        menu: str = "",
    ) -> None:
        """Store a delivery to the customer's identity; idempotent on ``key``.

        With ``template`` it is a template message (``text``: its rendering, sent by channels that
        cannot send templates). ``choices`` go as buttons where the channel has them, else as a
        numbered list after ``text`` (unless ``choices_listed``: the text lists them already).

        ``correction`` ("edit" or "delete") makes it follow up ``message``, already sent: the channel
        edits or deletes its copy where it can; otherwise the customer gets a correction message.
        ``topic`` (``service`` or ``marketing``) is checked against the customer's consent when the
        row is sent (see :mod:`bot_core.consent`).
        """
        body: CustomerText | CustomerTemplate
        if template is not None and not correction:
            body = CustomerTemplate(
                template=template,
                text=text,
                agent_name=agent_name,
                topic=consent.check_topic(topic),
                choices=choices,
                choices_listed=choices_listed,
                menu=menu,
            )
        else:
            body = CustomerText(
                text=text,
                attachments=attachments,
                agent_name=agent_name,
                correction=cast(Any, correction),
                topic=consent.check_topic(topic) if topic != consent.SERVICE else topic,
                choices=() if correction else choices,
                choices_listed=choices_listed,
                menu=menu,
            )
        await self._enqueue(
            OutboxTarget.CUSTOMER,
            identity.channel,
            identity.external_id,
            conversation,
            dump_payload(body),
            key,
            message,
        )

    async def send_again(self, message: Message, channel_message_id: str) -> bool:
        """Deliver ``message`` to the customer again, as its row was (the platform took it, then reported
        it refused until the customer writes: the channel will hold the new row). Once per
        ``channel_message_id``: a status reported twice adds nothing. False if no sent row delivered it."""
        row = (
            await OutboxItem.filter(
                message_id=message.id, target=OutboxTarget.CUSTOMER, external_message_id=channel_message_id
            )
            .order_by("-id")
            .first()
        )
        if row is None:
            return False
        conversation = await Conversation.get_or_none(id=row.conversation_id) if row.conversation_id else None
        digest = hashlib.sha256(channel_message_id.encode()).hexdigest()[:16]
        await self._enqueue(
            OutboxTarget.CUSTOMER,
            row.adapter,
            row.address,
            conversation,
            {k: v for k, v in row.payload.items() if k not in (DELAY, HELD)},  # a fresh row: told afresh
            f"again:{row.id}:{digest}",
            message,
        )
        return True

    async def enqueue_reaction(
        self, conversation: Conversation, identity: Identity, emoji: str, message: str, *, key: str
    ) -> None:
        """Store an emoji reaction on the customer's message ``message`` (its id on the channel);
        idempotent on ``key``. A channel without reactions skips it (the row is done, nothing sent)."""
        await self._enqueue(
            OutboxTarget.CUSTOMER,
            identity.channel,
            identity.external_id,
            conversation,
            dump_payload(CustomerReaction(text=emoji, message=message)),
            key,
            None,
        )

    async def enqueue_room(
        self,
        conversation: Conversation,
        workspace: str,
        kind: str,
        *,
        key: str,
        text: str = "",
        message: Message | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Store a post into the conversation's room: ``customer_message``, ``notice``, ``card``, ``status``,
        ``invite`` (``details={"user": ...}``: the agent invited where the workspace needs it) or ``mention``
        (a notice addressed to ``details={"users": [...]}``, so that their clients notify them); see
        :mod:`bot_core.payloads` (a bad kind or detail raises :class:`PayloadError`).

        A ``customer_message`` row carries what the room shows in ``details`` (sender, channel, user,
        attachments, edit), so posting it needs no further lookups.
        """
        if kind == "ops":
            raise PayloadError("an ops post belongs to no conversation: use enqueue_ops")
        payload = parse_payload("room", {**(details or {}), "kind": kind, "text": text})
        await self._enqueue(
            OutboxTarget.ROOM, workspace, "", conversation, dump_payload(payload), key, message
        )

    async def enqueue_ops(self, workspace: str, channel: str, text: str, *, key: str) -> None:
        """Store a post into ``channel`` of ``workspace`` (an ops room: alerts, digests); idempotent on ``key``.

        Ops rows belong to no conversation: they share one lane (no conversation, target ``room``).
        """
        payload = dump_payload(OpsPost(text=text))
        await self._enqueue(OutboxTarget.ROOM, workspace, channel, None, payload, key, None)

    async def enqueue_ops_image(
        self, workspace: str, channel: str, caption: str, image: bytes, name: str, *, key: str
    ) -> None:
        """Store a post of ``caption`` and an image into ``channel`` (the supervisor's chart); idempotent on ``key``.

        The image travels in the row (base64), so any worker can send it after a restart.
        """
        payload = dump_payload(OpsImage(text=caption, name=name, image=base64.b64encode(image).decode()))
        await self._enqueue(OutboxTarget.ROOM, workspace, channel, None, payload, key, None)

    async def _enqueue(
        self,
        target: OutboxTarget,
        adapter: str,
        address: str,
        conversation: Conversation | None,
        payload: dict[str, Any],
        key: str,
        message: Message | None,
    ) -> None:
        conversation_id = conversation.id if conversation else None
        try:
            row_id = await hot.insert_outbox_row(
                idempotency_key=key,
                target=target,
                adapter=adapter,
                address=address,
                conversation_id=conversation_id,
                message_id=message.id if message else None,
                payload=payload,
                next_attempt_at=utcnow(),
            )
        except IntegrityError:
            return  # a replayed event: the row exists from the first run
        point = hot.commit_point()
        if point is not None:
            self._uncommitted[row_id] = point
        self._kick((conversation_id, target.value))

    # -- running -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Release stale claims and start sending (pending rows from before a restart included)."""
        stale = OutboxItem.filter(status=OutboxStatus.SENDING)
        if not self._single_worker:
            stale = stale.filter(claimed_until__lt=utcnow())
        released = await stale.update(status=OutboxStatus.PENDING, claimed_until=None)
        if released:
            log.info("outbox released claims left by a stopped worker", extra={"rows": released})
        self._stopping = False
        self._runner = asyncio.create_task(self._run(), name="outbox")

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming rows and let deliveries in flight finish (up to ``timeout`` s)."""
        self._stopping = True
        self._wake.set()
        if self._runner:
            await asyncio.wait({self._runner}, timeout=timeout)
        if self._inflight:
            _done, pending = await asyncio.wait(set(self._inflight.values()), timeout=timeout)
            for task in pending:
                task.cancel()
        self._runner = None

    async def wait_settled(self, timeout: float = 30.0) -> bool:
        """Wait until every row is sent or given up (nothing pending, nothing in flight); False on timeout."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if (
                not self._inflight
                and not await OutboxItem.filter(
                    status__in=[OutboxStatus.PENDING, OutboxStatus.SENDING]
                ).exists()
            ):
                return True
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            self._settled.clear()
            try:
                await asyncio.wait_for(self._settled.wait(), timeout=min(remaining, 0.05))
            except TimeoutError:
                pass

    def wake(self) -> None:
        """Look for due rows now (rows written by this process wake it by themselves)."""
        self._wake.set()

    async def _run(self) -> None:
        """The periodic scan: rows of other workers, retries that came due, lanes left waiting."""
        while not self._stopping:
            self._wake.clear()
            try:
                # a task of its own each time: see storage.db.fresh_context (a database restart mid-scan)
                delay = await asyncio.create_task(self._dispatch_ready(), context=fresh_context())
            except Exception:
                log.exception("outbox scan failed")
                delay = self.settings.poll_interval
            if self._stopping:
                break
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def _dispatch_ready(self) -> float:
        """Claim the head row of every ready lane; returns how long to wait before the next scan."""
        self._metrics.outbox_depth.set(await hot.outbox_depth())
        if self._waiting:
            # Every slot is busy and lanes queue here already: whatever the scan found would queue behind
            # them. Skipped, it costs nothing while a backlog drains (it reads up to scan_limit rows, and
            # a burst of new customers made it most of the cost per message); the next scan comes once
            # the queue is empty.
            return self.settings.poll_interval
        now = utcnow()
        heads = await hot.outbox_lane_heads(self.settings.scan_limit)
        delay = self.settings.poll_interval
        for row in heads:
            lane = (row.conversation_id, row.target)
            if lane in self._inflight:
                continue
            if row.status is OutboxStatus.SENDING:
                if row.claimed_until is not None and row.claimed_until >= now:
                    continue  # another worker is sending it
            elif row.next_attempt_at > now:
                delay = min(delay, (row.next_attempt_at - now).total_seconds())
                continue
            self._kick(lane)
        return max(delay, 0.0)

    def _kick(self, lane: tuple[int | None, str]) -> None:
        """Make sure a task is sending ``lane``'s rows (or will, once a slot frees up)."""
        if self._stopping or self._runner is None or lane in self._inflight:
            return
        if len(self._inflight) >= self.settings.concurrency:
            self._waiting.setdefault(lane, None)
            return
        self._waiting.pop(lane, None)
        task = asyncio.create_task(
            self._run_lane(lane), name=f"outbox-lane-{lane[0]}-{lane[1]}", context=fresh_context()
        )
        self._inflight[lane] = task
        task.add_done_callback(functools.partial(self._lane_done, lane))

    def _lane_done(self, lane: tuple[int | None, str], task: asyncio.Task[None] | None = None) -> None:
        """``lane``'s task ended: free its slot for a waiting lane.

        The task calls this itself as its last step, so that a row queued in the same turn of the loop
        starts a new task at once (a kick that still found the ended task in flight would be lost until
        the periodic scan); the done callback covers a task cancelled before it ran.
        """
        if task is not None and self._inflight.get(lane) is not task:
            return  # already done by the task itself (a newer task may hold the lane now)
        self._inflight.pop(lane, None)
        self._settled.set()
        while self._waiting and not self._stopping and len(self._inflight) < self.settings.concurrency:
            waiting = next(iter(self._waiting))
            del self._waiting[waiting]
            self._kick(waiting)

    async def _run_lane(self, lane: tuple[int | None, str]) -> None:
        """Send the lane's rows one at a time, in id order, until it is empty or its head must wait."""
        try:
            conversation_id, target = lane
            claimed = None
            if not self._single_worker:  # the common case in one statement: the head is due, claim it
                until = utcnow() + timedelta(seconds=self.settings.claim_seconds)
                claimed = await hot.claim_lane_head(conversation_id, target, until)
            if claimed is not None:
                row = await self._deliver(claimed)
            else:  # (or not due, held by another worker, empty: the loop below tells which)
                row = await hot.outbox_lane_head(conversation_id, target)
            while row is not None and not self._stopping:
                now = utcnow()
                if row.status is OutboxStatus.SENDING:
                    if row.claimed_until is not None and row.claimed_until >= now:
                        return  # another worker holds it; the periodic scan looks again later
                    # a dead (or hung) worker's claim: taken over below, if it is still expired then
                    if self._single_worker:
                        row.status = OutboxStatus.PENDING
                elif row.next_attempt_at > now:
                    delay = (row.next_attempt_at - now).total_seconds()
                    asyncio.get_running_loop().call_later(delay, self._kick, lane)
                    return
                if not self._single_worker:
                    claimed_until = now + timedelta(seconds=self.settings.claim_seconds)
                    if not await hot.claim_outbox_row(row.id, row.status, claimed_until):
                        return  # another worker was faster
                    row.status, row.claimed_until = OutboxStatus.SENDING, claimed_until
                # a single worker needs no claim: its lanes in flight are known in memory (self._inflight)
                row = await self._deliver(row)
        except Exception as exc:  # the database went away mid-lane: the periodic scan kicks it again
            log.warning("outbox lane stopped: %r", exc, extra={"conversation": lane[0], "target": lane[1]})
        finally:
            self._lane_done(lane)

    # -- delivering ----------------------------------------------------------------------------

    def _roles(self, name: str, adapter: object) -> tuple[bool, bool]:
        """Whether adapter ``name`` is a channel, a workspace: checked once per adapter object, since a
        check against a runtime protocol inspects every member (tens of microseconds, once per delivery)."""
        cached = self._adapter_roles.get(name)
        if cached is None or cached[0] is not adapter:  # new, or reloaded
            cached = (adapter, isinstance(adapter, Channel), isinstance(adapter, Workspace))
            self._adapter_roles[name] = cached
        return cached[1], cached[2]

    async def _deliver(self, row: OutboxItem) -> OutboxItem | None:
        """Send one row (or postpone or give it up); its lane's next head."""
        adapter = self._lookup(row.adapter)
        lane = (row.conversation_id, row.target.value)
        point = self._uncommitted.pop(row.id, None)
        if point is not None:  # queued in this turn of the loop: commit it before anyone sees it
            await hot.durable(point)
        try:
            payload = parse_payload(row.target.value, row.payload)
        except PayloadError as exc:
            await self._unreadable(row, str(exc))
            return await hot.outbox_lane_head(row.conversation_id, row.target.value)
        try:
            if adapter is None:
                raise TemporaryFailure(f"adapter '{row.adapter}' is not enabled")
            is_channel, is_workspace = self._roles(row.adapter, adapter)
            if row.target is OutboxTarget.CUSTOMER:
                if not is_channel:
                    raise Undeliverable(f"'{row.adapter}' is not a channel")
                sent = await self._send_to_customer(cast(Channel, adapter), row, payload)
            else:
                if not is_workspace:
                    raise Undeliverable(f"'{row.adapter}' is not a workspace")
                sent = await self._post_to_room(cast(Workspace, adapter), row, payload)
        except RetryAfter as exc:
            self._metrics.delivery_failures.labels(row.adapter, "retry_after").inc()
            self._backing_off.get(row.adapter, set()).discard(lane)  # its wait is the platform's to set
            await self._reschedule(row, max(exc.seconds, 0.0), str(exc), count_attempt=False)
        except Undeliverable as exc:
            self._metrics.delivery_failures.labels(row.adapter, "undeliverable").inc()
            if exc.opted_out and row.conversation_id is not None:
                customer_id = (await Conversation.get(id=row.conversation_id)).customer_id
                await consent.record(customer_id, consent.SERVICE, False, f"{row.adapter}: {exc.reason}")
            await self._give_up(row, exc.reason, unreachable=exc.unreachable)
        except AwaitingCustomer as exc:
            self._metrics.delivery_failures.labels(row.adapter, "held").inc()
            await self._hold(row, exc)
        except Exception as exc:
            kind = "temporary" if isinstance(exc, TemporaryFailure) else "error"
            self._metrics.delivery_failures.labels(row.adapter, kind).inc()
            self._backing_off.setdefault(row.adapter, set()).add(lane)
            await self._failed_for_now(row, str(exc) or type(exc).__name__)
            if kind == "error":
                log.warning(
                    "delivery raised", exc_info=True, extra={"outbox_id": row.id, "adapter": row.adapter}
                )
        else:
            failed_before = row.attempts > 0  # (mark_outbox_sent counts this attempt on the row)
            next_row = await hot.mark_outbox_sent(row, sent.external_id, message_column=sent.message_column)
            self._metrics.messages_out.labels(row.adapter).inc()
            if self._backing_off.get(row.adapter):
                await self._platform_back(row.adapter, lane)
            if sent.note:
                await self.notices.channel_note(row, sent.note)
            if failed_before or payload.delay or HELD in row.payload:
                try:
                    await self.notices.delivered_late(row)
                except Exception:
                    log.warning("telling a late delivery failed", exc_info=True, extra={"outbox_id": row.id})
            elif isinstance(payload, RoomCustomerMessage) and not payload.edit:
                await self._shown_in_room(row, payload)
            return next_row
        return await hot.outbox_lane_head(row.conversation_id, row.target.value)

    async def _shown_in_room(self, row: OutboxItem, payload: RoomCustomerMessage) -> None:
        """A customer's message reached the room: channels showing delivery states mark it *delivered*
        (the web widget's tick; it used to poll the database for this)."""
        channel = self._lookup(payload.channel)
        cached = self._state_channels.get(payload.channel)
        if cached is None or cached[0] is not channel:  # a runtime protocol check is slow: once per adapter
            cached = (channel, isinstance(channel, DeliveryStateChannel))
            self._state_channels[payload.channel] = cached
        if not cached[1]:
            return
        try:
            await self.notices.tell_channel(row, "delivered", payload.channel_message_id)
        except Exception:  # best effort: the state is read from storage again on reconnect
            log.warning("telling a delivery state failed", exc_info=True, extra={"outbox_id": row.id})

    async def _unreadable(self, row: OutboxItem, reason: str) -> None:
        """A row this version cannot read (a corrupt or unknown payload): given up and logged, never retried."""
        row.status = OutboxStatus.FAILED
        row.claimed_until = None
        row.last_error = f"unreadable payload: {reason}"[:2000]
        await row.save(update_fields=["status", "claimed_until", "last_error", "updated_at"])
        self._metrics.delivery_failures.labels(row.adapter, "unreadable").inc()
        log.error(
            "outbox row unreadable: given up",
            extra={"outbox_id": row.id, "adapter": row.adapter, "reason": reason},
        )

    async def _send_to_customer(self, channel: Channel, row: OutboxItem, payload: OutboxPayload) -> _Sent:
        assert isinstance(payload, CustomerText | CustomerTemplate | CustomerReaction)  # checked by target
        if isinstance(payload, CustomerText) and payload.correction:
            return _Sent(await self._send_correction(channel, row, payload.text, payload.correction))
        if row.conversation_id is not None:  # checked at each try: an opt-out meanwhile stops it
            refused = await consent.refusal(row.conversation_id, payload.topic)
            if refused:
                raise Undeliverable(refused)
        if isinstance(payload, CustomerReaction):
            return await self._send_reaction(channel, row, payload)
        template = payload.template if isinstance(payload, CustomerTemplate) else None
        text, choices = payload.text, payload.choices
        if choices and len(choices) > channel.capabilities.choices:  # no buttons (or too few): a list
            text = text if payload.choices_listed else numbered(text, choices)
            choices = ()
        delivery = Delivery(
            outbox_id=row.id,
            channel=row.adapter,
            external_user_id=row.address,
            text=text,
            attachments=payload.attachments if isinstance(payload, CustomerText) else (),
            conversation_id=row.conversation_id,
            agent_name=payload.agent_name,
            idempotency_key=row.idempotency_key,
            message_id=row.message_id,
            kind=_delivery_kind(payload, row),
            template=template,
            choices=choices,
            menu=payload.menu if choices else "",
        )
        ref = await channel.send(delivery)
        return _Sent(ref.external_message_id, "channel_message_id", ref.note)

    async def _send_reaction(self, channel: Channel, row: OutboxItem, payload: CustomerReaction) -> _Sent:
        """An emoji on the customer's message, where the channel has reactions (skipped elsewhere)."""
        if not channel.capabilities.reactions:
            log.info("reaction skipped: the channel has none", extra={"outbox_id": row.id})
            return _Sent("")
        delivery = Delivery(
            outbox_id=row.id,
            channel=row.adapter,
            external_user_id=row.address,
            text=payload.text,
            conversation_id=row.conversation_id,
            idempotency_key=row.idempotency_key,
            kind="reaction",
            react_to=payload.message,
        )
        return _Sent((await channel.send(delivery)).external_message_id)

    async def _send_correction(self, channel: Channel, row: OutboxItem, text: str, kind: str) -> str:
        """Edit or delete the customer's copy of a sent message, or tell them in a new message."""
        original = await Message.get_or_none(id=row.message_id) if row.message_id else None
        sent_id = original.channel_message_id if original else None

        def delivery(body: str, *, edit_of: str | None = None, delete_of: str | None = None) -> Delivery:
            return Delivery(
                outbox_id=row.id,
                channel=row.adapter,
                external_user_id=row.address,
                text=body,
                conversation_id=row.conversation_id,
                idempotency_key=row.idempotency_key,
                edit_of=edit_of,
                delete_of=delete_of,
                message_id=row.message_id,
            )

        caps = channel.capabilities
        if kind == "edit" and caps.edits and sent_id:
            return (await channel.send(delivery(text, edit_of=sent_id))).external_message_id
        if kind == "delete" and caps.deletes and sent_id:
            return (await channel.send(delivery("", delete_of=sent_id))).external_message_id
        if kind == "edit":
            return (await channel.send(delivery(f"Correction: {text}"))).external_message_id
        raise Undeliverable(f"{row.adapter} cannot delete a message the customer already received")

    async def _post_to_room(self, workspace: Workspace, row: OutboxItem, payload: OutboxPayload) -> _Sent:
        if isinstance(payload, OpsPost) or row.conversation_id is None:
            if not isinstance(workspace, OpsWorkspace):
                raise Undeliverable(f"'{row.adapter}' cannot post to channels (no post_to_channel)")
            if isinstance(payload, OpsImage) and isinstance(workspace, OpsImageWorkspace):
                posted = await workspace.post_image_to_channel(
                    row.address,
                    payload.text,
                    base64.b64decode(payload.image),
                    payload.name,
                    key=row.idempotency_key,
                )
                return _Sent(posted.external_message_id)
            text = payload.text if isinstance(payload, (OpsPost, OpsImage)) else ""
            posted = await workspace.post_to_channel(row.address, text, key=row.idempotency_key)
            return _Sent(posted.external_message_id)
        room = self._rooms.get(row.conversation_id)
        if room is None or room.workspace != row.adapter:
            room = await self._ensure_room(workspace, row.adapter, row.conversation_id)
        if isinstance(payload, RoomCustomerMessage):
            edit_of: str | None = None
            if payload.edit:
                original = await Message.get(id=row.message_id)
                edit_of = original.workspace_message_id
            reply_to: str | None = None
            if payload.reply_to:  # the customer replied to an earlier message: its copy in the room
                customer_id = (await Conversation.get(id=row.conversation_id)).customer_id
                quoted = await Message.filter(
                    conversation__customer_id=customer_id,  # the customer's own history only
                    channel=payload.channel,
                    channel_message_id=payload.reply_to,
                ).first()
                reply_to = quoted.workspace_message_id if quoted else None
            view = MessageView(
                message_id=row.message_id or 0,
                text=payload.text,
                sender_name=payload.sender,
                channel=payload.channel,
                external_user_id=payload.user,
                attachments=payload.attachments,
                edit_of=edit_of,
                reply_to=reply_to,
                idempotency_key=row.idempotency_key,
            )
            posted = await workspace.post_as_customer(room, view)
            # an edit keeps pointing at the original event
            return _Sent(posted.external_message_id, None if edit_of else "workspace_message_id")
        if isinstance(
            payload, RoomInvite
        ):  # ctx.invite: only workspaces whose agents see a room by being in it
            if isinstance(workspace, InvitingWorkspace):
                await workspace.invite(room, payload.user)
            return _Sent("")
        if isinstance(payload, RoomMention) and isinstance(workspace, MentioningWorkspace):  # else a notice
            posted = await workspace.mention(room, payload.users, payload.text, key=row.idempotency_key)
            return _Sent(posted.external_message_id)
        if isinstance(payload, RoomCard):
            conversation = await Conversation.get(id=row.conversation_id)
            await workspace.show_card(room, await customer_card(conversation), key=row.idempotency_key)
            return _Sent("")
        if isinstance(payload, RoomStatus):
            message = await Message.get_or_none(id=row.message_id) if row.message_id else None
            if message is None or not message.workspace_message_id:
                return _Sent("")  # nothing in the room to mark
            if not isinstance(workspace, DeliveryStatusWorkspace):
                return _Sent("")  # this workspace shows no delivery states
            await workspace.show_delivery_status(
                room, message.workspace_message_id, payload.status, key=row.idempotency_key
            )
            return _Sent("")
        posted = await workspace.notice(room, payload.text, key=row.idempotency_key)
        return _Sent(posted.external_message_id)

    async def _ensure_room(self, workspace: Workspace, name: str, conversation_id: int) -> RoomRef:
        """The conversation's room: bound already, the customer's earlier room, or a new one (with its card).

        One joined query finds the conversation and both rooms; a new room's card is built from the view
        the workspace got for it (fewer reads for every new customer).
        """
        lock = self._room_locks.setdefault(conversation_id, asyncio.Lock())
        known: tuple[ConversationView, Customer] | None = None
        async with lock:
            found = await hot.conversation_rooms_and_people(conversation_id, name)
            if found is None:
                raise DoesNotExist(f"conversation {conversation_id} does not exist")
            conversation, bound, existing, people = found
            if bound is not None and bound.workspace == name:
                ref = RoomRef(name, bound.external_id)
                self._rooms[conversation.id] = ref
                return ref
            room, bound_now = existing, False
            if room is None:
                # the view names no room of another workspace (the conversation may be bound to one)
                known = await view_and_customer(conversation, workspace=name, people=people)
                ref = await workspace.ensure_room(known[0])
                try:
                    room = await hot.insert_room(
                        workspace=name,
                        customer_id=conversation.customer_id,
                        external_id=ref.room_id,
                        bind=conversation.id,
                    )
                    bound_now = True
                except IntegrityError:  # the customer's room was made meanwhile (their other conversation)
                    again = await hot.conversation_rooms(conversation_id, name)
                    if again is None or again[2] is None:
                        raise
                    room, known = again[2], None
            if not bound_now:
                await hot.set_conversation_room(conversation.id, room.id)
            conversation.room_id = room.id
            ref = RoomRef(name, room.external_id)
        if known is not None:
            # a new room; keyed by the stored room: a card posted again after a crash shows once
            card = await customer_card(conversation, known)
            await workspace.show_card(ref, card, key=f"card:room:{room.id}")
        self._rooms[conversation.id] = ref
        return ref

    async def _platform_back(self, adapter: str, through: tuple[int | None, str]) -> None:
        """A delivery through ``adapter`` went through: the lanes backing off after its failures are due now
        (without this, each would wait out its own backoff, up to ``max_backoff``, after an outage)."""
        lanes = self._backing_off.pop(adapter, set())
        lanes.discard(through)
        now = utcnow()
        for conversation_id, target in lanes:
            await OutboxItem.filter(
                conversation_id=conversation_id,
                target=target,
                status=OutboxStatus.PENDING,
                next_attempt_at__gt=now,
            ).update(next_attempt_at=now)
        if lanes:
            log.info(
                "platform back: retrying its waiting lanes", extra={"adapter": adapter, "lanes": len(lanes)}
            )
            self._wake.set()

    async def _hold(self, row: OutboxItem, exc: AwaitingCustomer) -> None:
        """The channel takes this row only once the customer writes again: hold it (and its lane) until
        :meth:`release_held` or the end of the retry window, telling the room once."""
        window = self.settings.retry_window
        age = (utcnow() - row.created_at).total_seconds()
        if age >= window:
            await self._give_up(row, f"{exc.reason}; the customer did not write again for {duration(age)}")
            return
        if HELD not in row.payload:
            try:
                await self.notices.held(row, exc.reason, exc.notice, give_up_time(row, window))
            except Exception:
                log.warning("telling a held delivery failed", exc_info=True, extra={"outbox_id": row.id})
        await self._reschedule(row, window - age, exc.reason, count_attempt=False)

    async def release_held(self, channel: str, external_user_id: str) -> None:
        """The customer wrote on ``channel``: rows held for them (:class:`AwaitingCustomer`) are due now.

        Only for channels whose capabilities say ``waits_for_customer`` (one indexed query otherwise
        spent on every customer message). Rows of that identity waiting out a backoff are tried now too.
        """
        adapter = self._lookup(channel)
        if adapter is None or not getattr(
            getattr(adapter, "capabilities", None), "waits_for_customer", False
        ):
            return
        now = utcnow()
        waiting = await OutboxItem.filter(
            status=OutboxStatus.PENDING,
            next_attempt_at__gt=now,
            target=OutboxTarget.CUSTOMER,
            adapter=channel,
            address=external_user_id,
        ).values_list("id", "conversation_id")
        if not waiting:
            return
        await OutboxItem.filter(id__in=[row_id for row_id, _ in waiting]).update(next_attempt_at=now)
        log.info("customer wrote: held deliveries released", extra={"adapter": channel, "rows": len(waiting)})
        for _, conversation_id in waiting:
            self._kick((conversation_id, OutboxTarget.CUSTOMER.value))

    async def _failed_for_now(self, row: OutboxItem, reason: str) -> None:
        """A temporary failure: retry with backoff while the row is younger than the window, telling the
        other side once when it is ``notice_after`` late; give up when the window is over."""
        settings = self.settings
        age = (utcnow() - row.created_at).total_seconds()
        if age >= settings.retry_window:
            await self._give_up(row, f"{reason} (still failing {duration(age)} after it was written)")
            return
        notified = DELAY in row.payload
        if not notified and age >= settings.notice_after:
            try:
                await self.notices.delayed(row, reason, give_up_time(row, settings.retry_window))
            except Exception:
                log.warning("telling a late delivery failed", exc_info=True, extra={"outbox_id": row.id})
            notified = True
        backoff = min(settings.max_backoff, settings.base_backoff * 2**row.attempts) * random.uniform(
            0.8, 1.2
        )
        # the next try comes no later than the notice is due, nor than the window ends
        due = (
            settings.retry_window - age
            if notified
            else min(settings.retry_window, settings.notice_after) - age
        )
        await self._reschedule(row, max(0.0, min(backoff, due)), reason, count_attempt=True)

    async def _reschedule(self, row: OutboxItem, delay: float, reason: str, *, count_attempt: bool) -> None:
        row.status = OutboxStatus.PENDING
        row.claimed_until = None
        row.last_error = reason
        row.next_attempt_at = utcnow() + timedelta(seconds=delay)
        if count_attempt:
            row.attempts += 1
        await row.save(
            update_fields=[
                "status",
                "claimed_until",
                "last_error",
                "next_attempt_at",
                "attempts",
                "updated_at",
            ]
        )
        log.info(
            "delivery postponed",
            extra={
                "outbox_id": row.id,
                "adapter": row.adapter,
                "retry_in_s": round(delay, 3),
                "reason": reason,
            },
        )

    async def _give_up(self, row: OutboxItem, reason: str, *, unreachable: bool = False) -> None:
        row.status = OutboxStatus.FAILED
        row.claimed_until = None
        row.last_error = reason
        row.attempts += 1
        await row.save(update_fields=["status", "claimed_until", "last_error", "attempts", "updated_at"])
        self._metrics.delivery_failures.labels(row.adapter, "gave_up").inc()
        log.warning("delivery failed", extra={"outbox_id": row.id, "adapter": row.adapter, "reason": reason})
        if row.target is OutboxTarget.CUSTOMER and row.message_id and not row.payload.get("correction"):
            # the message did not reach the customer: failed, a final status (the room is told below)
            await Message.filter(id=row.message_id).update(delivery_status="failed")
        if unreachable and row.target is OutboxTarget.CUSTOMER:
            await Identity.filter(channel=row.adapter, external_id=row.address).update(
                reachable=False, unreachable_reason=reason[:255]
            )
        try:
            await self.notices.gave_up(row, reason, unreachable=unreachable)
        except Exception:
            log.warning("telling a given-up delivery failed", exc_info=True, extra={"outbox_id": row.id})

    async def _room_workspace(self, conversation: Conversation) -> str | None:
        """The workspace whose room shows the conversation now (:class:`bot_core.rooms.RoomDirectory`)."""
        return await self.directory.workspace_of(conversation)
