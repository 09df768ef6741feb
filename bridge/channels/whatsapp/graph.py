"""The Graph API calls the channel makes, and its errors as the outbox's.

Every call carries the access token as a bearer header (never in a URL); errors come back in Graph's
shape ``{"error": {"message", "type", "code", "error_data", "fbtrace_id"}}`` and are mapped by what they
mean: throughput (130429) waits, the pair rate (131056) waits the pair interval, the 24-hour window
(131047) is :class:`WindowClosed` (the channel reopens the conversation), undeliverable (131026) and
other refusals give up, 5xx, timeouts and connection failures are retried.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from bot_core.api import DeliveryError, RetryAfter, TemporaryFailure, Undeliverable

THROUGHPUT = 130429
PAIR_RATE = 131056
WINDOW = 131047
UNDELIVERABLE = 131026
THROUGHPUT_WAIT = 2.0  # seconds; Meta gives no Retry-After for 130429


class WindowClosed(Exception):
    """The platform refused a free-form message outside the customer's 24-hour window (131047)."""


class GraphFailure(Exception):
    """A Graph error answer: its HTTP status, code and message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.status, self.code, self.message = status, code, message


def delivery_error(exc: Exception, pair_interval: float) -> DeliveryError | WindowClosed:
    """What the outbox (or the window logic) makes of a failed Graph call."""
    if isinstance(exc, DeliveryError):
        return exc
    if not isinstance(exc, GraphFailure):
        return TemporaryFailure(f"WhatsApp unreachable: {type(exc).__name__}: {exc}"[:300])
    reason = f"WhatsApp {exc.code}: {exc.message}"[:300]
    if exc.code == WINDOW:
        return WindowClosed(reason)
    if exc.code == THROUGHPUT:
        return RetryAfter(THROUGHPUT_WAIT, reason)
    if exc.code == PAIR_RATE:
        return RetryAfter(max(pair_interval, 1.0), reason)
    if exc.code == UNDELIVERABLE:
        return Undeliverable(f"{reason} (the number may not use WhatsApp or cannot receive messages)")
    if exc.status == 429:
        return RetryAfter(THROUGHPUT_WAIT, reason)
    if exc.status >= 500 or exc.status in (401, 403) or exc.code in (1, 2, 190):
        return TemporaryFailure(reason)  # a platform failure, or a token to fix: worth retrying
    return Undeliverable(reason)


class Graph:
    """Graph API client of one business phone number."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base: str,
        version: str,
        phone_number_id: str,
        token: str,
        timeout: float,
    ) -> None:
        self._http = http
        self._root = f"{base.rstrip('/')}/{version}"
        self._phone = phone_number_id
        self._auth = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def _answer(self, resp: aiohttp.ClientResponse) -> dict[str, Any]:
        try:
            data = await resp.json(content_type=None)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise GraphFailure(resp.status, 0 if resp.status < 500 else 2, f"HTTP {resp.status}, not JSON")
        error = data.get("error")
        if resp.status >= 400 or isinstance(error, dict):
            error = error if isinstance(error, dict) else {}
            code = error.get("code")
            details = (
                error.get("error_data", {}).get("details", "")
                if isinstance(error.get("error_data"), dict)
                else ""
            )
            message = str(error.get("message") or f"HTTP {resp.status}")
            if details and details not in message:
                message = f"{message}: {details}"
            raise GraphFailure(resp.status, code if isinstance(code, int) else 0, message)
        return data

    async def send(self, payload: dict[str, Any]) -> str:
        """POST one message; its ``wamid``."""
        body = {"messaging_product": "whatsapp", "recipient_type": "individual", **payload}
        async with self._http.post(
            f"{self._root}/{self._phone}/messages", json=body, headers=self._auth, timeout=self._timeout
        ) as resp:
            data = await self._answer(resp)
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages or not isinstance(messages[0], dict):
            raise GraphFailure(resp.status, 0, "the answer names no message id")
        return str(messages[0].get("id", ""))

    async def mark_read(self, message_id: str) -> None:
        """Show the customer's message as read (blue ticks)."""
        body = {"messaging_product": "whatsapp", "status": "read", "message_id": message_id}
        async with self._http.post(
            f"{self._root}/{self._phone}/messages", json=body, headers=self._auth, timeout=self._timeout
        ) as resp:
            await self._answer(resp)

    async def upload(self, data: bytes, mime_type: str, filename: str) -> str:
        """Upload a file to the media endpoint; its media id."""
        form = aiohttp.FormData()
        form.add_field("messaging_product", "whatsapp")
        form.add_field("type", mime_type)
        form.add_field("file", data, filename=filename, content_type=mime_type)
        async with self._http.post(
            f"{self._root}/{self._phone}/media", data=form, headers=self._auth, timeout=self._timeout
        ) as resp:
            answer = await self._answer(resp)
        return str(answer.get("id", ""))

    async def media_url(self, media_id: str) -> tuple[str, str]:
        """The short-lived download URL of a media id, and its MIME type."""
        async with self._http.get(
            f"{self._root}/{media_id}", headers=self._auth, timeout=self._timeout
        ) as resp:
            data = await self._answer(resp)
        return str(data.get("url", "")), str(data.get("mime_type", "application/octet-stream"))

    def download(self, url: str) -> Any:
        """The download of a media URL (with the token), as an ``async with`` response."""
        return self._http.get(
            url, headers=self._auth, timeout=aiohttp.ClientTimeout(total=None, sock_read=60)
        )


async def call(coro: Any, pair_interval: float) -> Any:
    """Await a Graph call, turning any failure into the outbox's error (or :class:`WindowClosed`)."""
    try:
        return await coro
    except (GraphFailure, aiohttp.ClientError, TimeoutError) as exc:
        raise delivery_error(exc, pair_interval) from None
