"""Tracked links: a relaydesk URL that records a click for a campaign's arm, then redirects.

The token carries what was clicked (campaign or source, variant, customer, link name, target URL) and
an HMAC-SHA256 over it with ``link_secret``: nobody can make relaydesk redirect elsewhere or count a
click that was not handed out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

ROUTE_PREFIX = "/outreach/l/"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, body: str) -> str:
    return _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()[:18])


def sign(secret: str, payload: dict[str, Any]) -> str:
    """A token for ``payload`` (JSON-serialisable), signed with ``secret``."""
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_mac(secret, body)}"


def verify(secret: str, token: str) -> dict[str, Any] | None:
    """The payload of a token signed with ``secret``; None when it is malformed or the signature fails."""
    body, _, mac = token.partition(".")
    if not body or not mac or len(token) > 4096 or not hmac.compare_digest(mac, _mac(secret, body)):
        return None
    try:
        payload = json.loads(_unb64(body))
    except (ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def tracked_url(public_url: str, secret: str, payload: dict[str, Any]) -> str:
    """The relaydesk URL a customer gets instead of ``payload['url']``."""
    return f"{public_url.rstrip('/')}{ROUTE_PREFIX}{sign(secret, payload)}"
