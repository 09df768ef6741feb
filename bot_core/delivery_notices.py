"""Telling the other side about late and lost deliveries: what the outbox says, to whom, and when.

A delivery to the customer that is late (still failing ``notice_after`` seconds after it was written)
gets one notice in the room, naming how many replies wait behind it and until when relaydesk keeps
trying; when it finally goes through, the room is told so (an agent who read "not delivered yet" would
otherwise not know it arrived); when it is given up, the room is told what the customer did not get.

A customer's message late reaching the room is shown on the customer's side: channels that show
delivery states (:class:`DeliveryStateChannel`, the web widget) mark each such message *pending*, then
*delivered* or *undelivered*; other channels get one short message ("not reached our team yet") and,
when it gets through, one more. A customer message given up is posted in the room as a notice with its
text once the room takes posts again, and the customer is told it did not reach the team.

One notice covers a whole lane: the rows waiting behind a late row are marked (``delay`` in their
payload) when it is reported, so a lane that is down says so once, however many rows pile up in it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot_core.adapters import DeliveryStateChannel
from bot_core.events import utcnow
from storage.models import (
    Conversation,
    Identity,
    Message,
    OutboxItem,
    OutboxStatus,
    OutboxTarget,
)

if TYPE_CHECKING:
    from bot_core.outbox import Outbox

log = logging.getLogger("relaydesk.outbox")

DELAY = "delay"
"""The payload key marking a row reported as late: ``notice`` (the row the notice was about), ``told``
(the same, and the customer was sent a message about it) or ``covered`` (a row that waited behind it)."""

HELD = "held"
"""The payload key marking a row the channel holds until the customer writes again (the room was told)."""

NOTICE_PREVIEW_CHARS = 80
LOST_TEXT_CHARS = 2000

CUSTOMER_DELAYED = (
    "⏳ Your message has not reached our team yet: we keep trying and will tell you when it has."
)
CUSTOMER_RECOVERED = "✓ Your message has reached our team now."
CUSTOMER_UNDELIVERED = '⚠ Your message "{preview}" could not be passed on to our team. Please send it again.'


def preview(text: str) -> str:
    """``text`` on one line, cut to a notice's length."""
    flat = " ".join(text.split())
    return flat if len(flat) <= NOTICE_PREVIEW_CHARS else flat[: NOTICE_PREVIEW_CHARS - 1] + "…"


def duration(seconds: float) -> str:
    """A short human duration: ``45 s``, ``3 min``, ``2 h 5 min``."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def _is_customer_message(row: OutboxItem) -> bool:
    return (
        row.target is OutboxTarget.ROOM
        and row.payload.get("kind") == "customer_message"
        and not row.payload.get("edit")
    )


class DeliveryNotices:
    """What the outbox tells the room and the customer about late, recovered and given-up rows."""

    def __init__(
        self,
        outbox: Outbox,
        lookup: Callable[[str], object | None],
        room_workspace: Callable[[Conversation], Awaitable[str | None]],
    ) -> None:
        self._outbox = outbox
        self._lookup = lookup
        self._room_workspace = room_workspace

    # -- late --------------------------------------------------------------------------------------

    async def delayed(self, row: OutboxItem, reason: str, give_up_at: datetime) -> None:
        """``row`` is late and still failing: mark it and the rows waiting behind it, tell the other side."""
        if row.conversation_id is None:
            return
        lane = await OutboxItem.filter(
            conversation_id=row.conversation_id,
            target=row.target,
            status__in=[OutboxStatus.PENDING, OutboxStatus.SENDING],
            id__gt=row.id,
        ).order_by("id")
        waiting = [r for r in lane if DELAY not in r.payload]
        conversation = await Conversation.get(id=row.conversation_id)
        flag = "notice"
        if row.target is OutboxTarget.CUSTOMER:
            await self._tell_room_delayed(conversation, row, len(lane), reason, give_up_at)
        else:
            late = [r for r in (row, *waiting) if _is_customer_message(r)]
            for message_row in late:
                await self.tell_channel(message_row, "pending")
            if late and not self._shows_states(late[0]):
                if await self._tell_customer(conversation, CUSTOMER_DELAYED, f"delayed:{row.id}"):
                    flag = "told"
        row.payload = {**row.payload, DELAY: flag}
        await OutboxItem.filter(id=row.id).update(payload=row.payload)
        for behind in waiting:
            behind.payload = {**behind.payload, DELAY: "covered"}
            await OutboxItem.filter(id=behind.id).update(payload=behind.payload)
        log.info(
            "delivery late: told",
            extra={"outbox_id": row.id, "adapter": row.adapter, "rows_waiting": len(lane), "reason": reason},
        )

    async def _tell_room_delayed(
        self, conversation: Conversation, row: OutboxItem, behind: int, reason: str, give_up_at: datetime
    ) -> None:
        workspace = await self._room_workspace(conversation)
        if workspace is None:
            return
        more = f" (and {behind} more after it)" if behind else ""
        text = (
            f'⏳ Not delivered to the customer yet: "{preview(str(row.payload.get("text", "")))}"{more}. '
            f"Reason: {reason}. relaydesk keeps trying until {give_up_at:%Y-%m-%d %H:%M} UTC and will say "
            "here when it gets through."
        )
        await self._outbox.enqueue_room(conversation, workspace, "notice", key=f"delayed:{row.id}", text=text)

    # -- held until the customer writes ------------------------------------------------------------

    async def held(self, row: OutboxItem, reason: str, what_was_done: str, give_up_at: datetime) -> None:
        """``row`` waits for the customer's next message (:class:`~bot_core.adapters.AwaitingCustomer`):
        mark it and tell the room what happened and what comes next."""
        row.payload = {**row.payload, HELD: True}
        await OutboxItem.filter(id=row.id).update(payload=row.payload)
        if row.conversation_id is None:
            return
        conversation = await Conversation.get(id=row.conversation_id)
        workspace = await self._room_workspace(conversation)
        if workspace is None:
            return
        done = f" {what_was_done.rstrip('.')}." if what_was_done else ""
        text = (
            f'⏸ Not sent yet: "{preview(str(row.payload.get("text", "")))}". Reason: {reason}.{done} '
            "It goes out (with any replies written after it) as soon as the customer writes again; "
            f"relaydesk gives it up at {give_up_at:%Y-%m-%d %H:%M} UTC."
        )
        await self._outbox.enqueue_room(conversation, workspace, "notice", key=f"held:{row.id}", text=text)

    async def channel_note(self, row: OutboxItem, note: str) -> None:
        """What the channel said about a delivery that went through (:attr:`SentRef.note`), for the room."""
        if row.conversation_id is None:
            return
        conversation = await Conversation.get(id=row.conversation_id)
        workspace = await self._room_workspace(conversation)
        if workspace is not None:
            await self._outbox.enqueue_room(
                conversation, workspace, "notice", key=f"note:{row.id}", text=f"💬 {note}"
            )

    # -- through after all -------------------------------------------------------------------------

    async def delivered_late(self, row: OutboxItem) -> None:
        """``row`` went through after failing at least once: tell whoever was told it was late."""
        flag = row.payload.get(DELAY)
        if _is_customer_message(row):
            await self.tell_channel(row, "delivered")
        if row.payload.get(HELD) and row.conversation_id is not None:
            conversation = await Conversation.get(id=row.conversation_id)
            workspace = await self._room_workspace(conversation)
            if workspace is not None:
                text = f'✓ The customer wrote again: the held reply went out: "{preview(str(row.payload.get("text", "")))}".'
                await self._outbox.enqueue_room(
                    conversation, workspace, "notice", key=f"released:{row.id}", text=text
                )
        if flag not in ("notice", "told") or row.conversation_id is None:
            return
        conversation = await Conversation.get(id=row.conversation_id)
        if flag == "told":
            await self._tell_customer(conversation, CUSTOMER_RECOVERED, f"recovered:{row.id}")
        elif row.target is OutboxTarget.CUSTOMER:
            workspace = await self._room_workspace(conversation)
            if workspace is None:
                return
            late = duration((utcnow() - row.created_at).total_seconds())
            text = (
                f'✓ Delivered to the customer after all, {late} late: "{preview(str(row.payload.get("text", "")))}". '
                "Replies written after it follow in order."
            )
            await self._outbox.enqueue_room(
                conversation, workspace, "notice", key=f"recovered:{row.id}", text=text
            )

    # -- given up ----------------------------------------------------------------------------------

    async def gave_up(self, row: OutboxItem, reason: str, *, unreachable: bool) -> None:
        """``row`` was given up: tell the room what the customer did not get, or both sides what the
        room did not get."""
        if row.conversation_id is None:
            return
        conversation = await Conversation.get(id=row.conversation_id)
        if row.target is OutboxTarget.CUSTOMER:
            workspace = await self._room_workspace(conversation)
            if workspace is None:
                return
            what = "this deletion" if row.payload.get("correction") == "delete" else "this message"
            text = (
                f'⚠ The customer did not get {what}: "{preview(str(row.payload.get("text", "")))}". '
                f"Reason: {reason}"
            )
            await self._outbox.enqueue_room(
                conversation, workspace, "notice", key=f"failed:{row.id}", text=text
            )
            if unreachable:
                await self._outbox.enqueue_room(
                    conversation, workspace, "card", key=f"card:unreachable:{row.id}"
                )
            return
        if row.payload.get("kind") == "invite":  # ctx.invite: the room says who could not be brought in
            text = f"⚠ {row.payload.get('user')} could not be invited to this room: {reason}"
            await self._outbox.enqueue_room(
                conversation, row.adapter, "notice", key=f"failed:{row.id}", text=text
            )
            return
        if not _is_customer_message(row):
            return
        said = str(row.payload.get("text", ""))
        if len(said) > LOST_TEXT_CHARS:
            said = said[: LOST_TEXT_CHARS - 1] + "…"
        files = len(row.payload.get("attachments", []) or [])  # type: ignore[arg-type]
        with_files = f" (and {files} file{'s' if files > 1 else ''})" if files else ""
        text = (
            f"⚠ A message from the customer could not be shown here ({reason}); the customer was told. "
            f'It said{with_files}: "{said}"'
        )
        # the same lane: shown once the room takes posts again, in its place among the customer's messages
        await self._outbox.enqueue_room(
            conversation, row.adapter, "notice", key=f"failed:{row.id}", text=text
        )
        await self.tell_channel(row, "undelivered")
        if not self._shows_states(row):
            await self._tell_customer(
                conversation,
                CUSTOMER_UNDELIVERED.format(preview=preview(str(row.payload.get("text", "")))),
                f"undelivered:{row.id}",
            )

    # -- the customer's side -----------------------------------------------------------------------

    def _state_channel(self, row: OutboxItem) -> DeliveryStateChannel | None:
        channel = self._lookup(str(row.payload.get("channel", "")))
        return channel if isinstance(channel, DeliveryStateChannel) else None

    def _shows_states(self, row: OutboxItem) -> bool:
        return self._state_channel(row) is not None

    async def tell_channel(self, row: OutboxItem, state: str, channel_message_id: str | None = None) -> None:
        """Show ``state`` on the customer's message of room row ``row``, where the channel can
        (``channel_message_id``: the message's id on the channel, if the row carries it)."""
        channel = self._state_channel(row)
        if channel is None or row.message_id is None:
            return
        if not channel_message_id:
            message = await Message.get_or_none(id=row.message_id)
            if message is None or not message.channel_message_id:
                return
            channel_message_id = message.channel_message_id
        try:
            await channel.delivery_state(str(row.payload.get("user", "")), channel_message_id, state)
        except Exception:  # best effort: the state is read from storage again on reconnect
            log.warning("telling a delivery state failed", exc_info=True, extra={"outbox_id": row.id})

    async def _tell_customer(self, conversation: Conversation, text: str, key: str) -> bool:
        """Send the customer a short message through the outbox; False if they cannot be reached."""
        identity = await Identity.get(id=conversation.via_identity_id or conversation.identity_id)
        if not identity.reachable:
            return False
        await self._outbox.enqueue_customer(conversation, identity, text, key=key)
        return True


def give_up_time(row: OutboxItem, window: float) -> datetime:
    """When ``row`` is given up if it keeps failing."""
    return row.created_at + timedelta(seconds=window)
