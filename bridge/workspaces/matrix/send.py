"""Posting one room message under a transaction id of relaydesk's choosing, through the client's session.

nio's ``room_send`` makes up a random transaction id, so a post the outbox retries (after a crash
between the homeserver's answer and the row being marked sent) would show twice in the room; with the
outbox row's idempotency key as the transaction id the homeserver recognises the retry and answers with
the first event's id. It also checks every answer against a JSON schema and rebuilds the request's URL,
which on the relay's hot path cost more CPU than the request itself; here the answer is read directly.
"""

from __future__ import annotations

import html
import json
import uuid
from typing import Any
from urllib.parse import quote

import aiohttp
from nio import AsyncClient

from bot_core.api import RetryAfter
from bridge.workspaces.matrix.errors import MatrixError


async def send_message(
    client: AsyncClient,
    room_id: str,
    content: dict[str, Any],
    txn_id: str,
    what: str,
    device_id: str = "",
    event_type: str = "m.room.message",
) -> str:
    """PUT one ``m.room.message`` (or another ``event_type``) into ``room_id`` as ``client``; the event's id.

    ``txn_id`` makes the post idempotent (a new random one when empty). ``device_id`` is for the
    appservice's own user, whose as_token has no device: the homeserver then keeps the transaction
    id in its database, scoped to that device, instead of only in memory. Errors come as the outbox's:
    :class:`RetryAfter` when rate limited, :class:`MatrixError` otherwise.
    """
    txn = quote(txn_id or uuid.uuid4().hex, safe="")
    path = f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/send/{quote(event_type, safe='')}/{txn}"
    if device_id:  # user_id too: Synapse fails on a device without it (it looks the device up by an object)
        path += f"?user_id={quote(client.user_id, safe='')}&device_id={quote(device_id, safe='')}"
    headers = {"Authorization": f"Bearer {client.access_token}", "Content-Type": "application/json"}
    response = await client.send("PUT", path, json.dumps(content), headers)
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ClientPayloadError):
        body = None  # not JSON (a proxy's error page, say): the status tells
    finally:
        response.release()
    return event_id_of(response.status, body, what)


def mention_content(user_ids: tuple[str, ...], text: str) -> dict[str, Any]:
    """An ``m.text`` (notices never notify) that mentions ``user_ids``: ``m.mentions`` and a pill for each."""
    rich = html.escape(text)
    for user_id in user_ids:
        pill = f'<a href="https://matrix.to/#/{quote(user_id, safe="@:")}">{html.escape(user_id)}</a>'
        rich = rich.replace(html.escape(user_id), pill)
    return {
        "msgtype": "m.text",
        "body": text,
        "format": "org.matrix.custom.html",
        "formatted_body": rich,
        "m.mentions": {"user_ids": list(user_ids)},
    }


def event_id_of(status: int, body: Any, what: str) -> str:
    """The event id in a homeserver's answer to a send, or the outbox's error for a failed one."""
    if status == 200 and isinstance(body, dict) and isinstance(body.get("event_id"), str):
        return str(body["event_id"])
    fields = body if isinstance(body, dict) else {}
    errcode = fields.get("errcode")
    if status == 429 or errcode == "M_LIMIT_EXCEEDED":
        retry_ms = fields.get("retry_after_ms")
        seconds = retry_ms / 1000 if isinstance(retry_ms, int | float) and retry_ms > 0 else 1.0
        raise RetryAfter(seconds, f"{what}: rate limited")
    detail = f"{errcode} {fields.get('error', '')}".strip() if errcode else f"HTTP {status}"
    raise MatrixError(f"{what}: {detail}")


STATUS_REACTIONS = {"delivered": "✓ delivered", "read": "✓✓ read"}
"""How an agent's message shows what the customer's channel reported: a reaction by relaydesk's bot."""


def status_reaction(event_id: str, status: str) -> dict[str, Any] | None:
    """The ``m.reaction`` content marking ``event_id`` with ``status``; None for a status not shown."""
    key = STATUS_REACTIONS.get(status)
    if key is None:
        return None
    return {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
