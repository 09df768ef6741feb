"""The body of a transaction the homeserver pushes, parsed without trusting its shape.

The hs_token proves the homeserver sent it, but a proxy in between, a homeserver bug or whoever holds
the token can send anything: a body that is not a JSON object is refused (400, ``M_NOT_JSON``) instead
of failing inside relaydesk, and entries that are not event objects are skipped.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

Event = dict[str, Any]


async def transaction_body(request: web.Request) -> tuple[list[Event], list[Event]] | None:
    """The transaction's events and ephemeral events, or None when the body is not a transaction."""
    try:
        body = json.loads((await request.read()).decode("utf-8") or "{}")
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested beyond the parser's stack
        return None
    if not isinstance(body, dict):
        return None
    events = body.get("events") or []
    ephemeral = body.get("ephemeral") or body.get("de.sorunome.msc2409.ephemeral") or []
    if not isinstance(events, list) or not isinstance(ephemeral, list):
        return None
    return _events(events), _events(ephemeral)


def _events(items: list[Any]) -> list[Event]:
    return [item for item in items if isinstance(item, dict) and isinstance(item.get("content") or {}, dict)]
