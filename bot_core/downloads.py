"""Files relaydesk serves from its own origin: signed expiring links, safe headers, streaming, a rate limit.

Adapters hand files around as relaydesk URLs (a customer's Telegram file to the agents' workspace, an
agent's Matrix file to the customer's channel, a widget upload to the agents). Every such download:

* is reached through a link signed with HMAC over the file, an expiry time and the conversation (or
  room) it was issued for (:class:`LinkSigner`): a changed expiry or scope breaks the signature, an
  expired link answers 410;
* carries :func:`download_headers`: ``X-Content-Type-Options: nosniff``, ``Content-Security-Policy:
  sandbox`` and ``Content-Disposition: attachment`` unless the type is a plain raster image (PNG, JPEG,
  GIF, WebP; never SVG), so an HTML or SVG file can never run script on relaydesk's origin;
* is streamed in chunks (:func:`stream`), never read whole into memory;
* takes a token from the bucket of the client's address and the link's conversation in the desk's
  shared rate limits (:meth:`DownloadPolicy.admit`), 429 with ``Retry-After`` when it is empty. Per
  conversation too, because relaydesk's own adapters fetch these links (a customer's file copied into
  the agents' workspace) from one address, as does every client behind a reverse proxy.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from collections.abc import AsyncIterable, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from aiohttp import web

from storage.ratelimit import MemoryRateLimits, RateLimits

__all__ = [
    "CHUNK_BYTES",
    "SAFE_INLINE_TYPES",
    "DownloadPolicy",
    "LinkSigner",
    "download_headers",
    "stream",
]

log = logging.getLogger("relaydesk.downloads")

SAFE_INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
CHUNK_BYTES = 64 * 1024
DEFAULT_LINK_TTL = 30 * 24 * 3600.0


def download_headers(mime_type: str | None, name: str | None) -> dict[str, str]:
    """The headers of a served file: its type, never sniffed, sandboxed, an attachment unless a safe image."""
    mime = (mime_type or "").split(";", 1)[0].strip().lower() or "application/octet-stream"
    disposition = "inline" if mime in SAFE_INLINE_TYPES else "attachment"
    if name:
        ascii_name = name.encode("ascii", "replace").decode().replace('"', "'").replace("\\", "_")
        disposition += f"; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
    return {
        "Content-Type": mime,
        "Content-Disposition": disposition,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "Cache-Control": "private, max-age=3600",
    }


class LinkSigner:
    """HMAC-signed download links that expire and name the conversation they were issued for.

    A link's query is ``exp=<unix time, 0: never>&c=<scope>&sig=<hmac>``; the signature covers the
    resource (the path's file part), ``exp`` and ``c``. ``ttl`` of 0 makes links that never expire.
    """

    def __init__(self, key: bytes, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._ttl = ttl
        self._clock = clock

    def _signature(self, resource: str, expires: int, scope: str) -> str:
        message = f"{resource}\n{expires}\n{scope}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]

    def query(self, resource: str, scope: str = "", *, expires_at: float | None = None) -> str:
        """The query string (without ``?``) of a new link to ``resource`` for ``scope``."""
        if expires_at is None:
            expires_at = self._clock() + self._ttl if self._ttl > 0 else 0
        expires = math.ceil(expires_at)
        fields = {"exp": str(expires), "c": scope, "sig": self._signature(resource, expires, scope)}
        return urlencode(fields)

    def check(self, resource: str, query: Mapping[str, str]) -> str:
        """The link's scope if ``query`` is a valid, unexpired signature of ``resource``.

        Raises ``HTTPForbidden`` (403) for a missing or wrong signature, ``HTTPGone`` (410) once expired.
        """
        scope = query.get("c", "")
        try:
            expires = int(query.get("exp", ""))
        except ValueError:
            raise web.HTTPForbidden(text="bad or missing signature") from None
        expected = self._signature(resource, expires, scope)
        if not hmac.compare_digest(query.get("sig", "").encode(), expected.encode()):
            raise web.HTTPForbidden(text="bad or missing signature")
        if expires and expires < self._clock():
            raise web.HTTPGone(text="this link has expired")
        log.info("file download", extra={"file": resource[-80:], "scope": scope})
        return scope


@dataclass(frozen=True)
class DownloadPolicy:
    """The desk's download settings (``server.download_link_ttl``, ``server.downloads_per_minute``)."""

    link_ttl: float = DEFAULT_LINK_TTL
    per_minute: int = 60
    rate_limits: RateLimits = field(default_factory=MemoryRateLimits)

    def signer(self, key: bytes) -> LinkSigner:
        """A :class:`LinkSigner` with ``key`` and this policy's link lifetime."""
        return LinkSigner(key, self.link_ttl)

    async def admit(self, request: web.Request, bucket: str, scope: str = "") -> None:
        """Take a download token for the client's address and ``scope`` (the link's conversation, as
        :meth:`LinkSigner.check` returned it), or raise 429 with ``Retry-After``."""
        key = f"{request.remote or '?'}|{scope}"
        wait = await self.rate_limits.take(f"downloads:{bucket}", key, self.per_minute)
        if wait > 0:
            retry = str(max(1, math.ceil(wait)))
            raise web.HTTPTooManyRequests(
                text=f"too many downloads: retry in {retry} s", headers={"Retry-After": retry}
            )


async def stream(
    request: web.Request,
    chunks: AsyncIterable[bytes],
    headers: Mapping[str, str],
    size: int | None = None,
) -> web.StreamResponse:
    """Send ``chunks`` as the response body as they come (chunked encoding when ``size`` is unknown)."""
    response = web.StreamResponse(headers=dict(headers))
    if size is not None:
        response.content_length = size
    await response.prepare(request)
    async for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response
