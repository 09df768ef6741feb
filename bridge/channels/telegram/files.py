"""Customers' Telegram files, served to the workspace through signed relaydesk links.

A Telegram file URL contains the bot token, so it never leaves this adapter: an attachment carries
``<relaydesk>/telegram/files/<file_id>?sig=<hmac>`` instead, and :meth:`FileLinks.serve` resolves the
file (``getFile``) and streams it from the Bot API. The signing key is kept in the plugin's state, so
links waiting in the outbox stay valid across restarts.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramNetworkError
from aiohttp import web

from bridge.channels.telegram.errors import Scrubber, describe

FILES_PREFIX = "/telegram/files"
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # the Bot API serves files up to 20 MB


class FileLinks:
    """Makes and checks signed links to Telegram files (``base_url``: relaydesk's own HTTP address)."""

    def __init__(self, base_url: str, key: bytes) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = key

    def signature(self, file_id: str) -> str:
        """The signature of one file's link."""
        return hmac.new(self._key, file_id.encode(), hashlib.sha256).hexdigest()[:32]

    def link(self, file_id: str) -> str:
        """The URL from which the workspace fetches ``file_id``."""
        return f"{self.base_url}{FILES_PREFIX}/{quote(file_id, safe='')}?sig={self.signature(file_id)}"

    def valid(self, file_id: str, sig: str) -> bool:
        """Whether ``sig`` is this file's signature."""
        return hmac.compare_digest(sig.encode(), self.signature(file_id).encode())


async def serve_file(bot: Bot, file_id: str, scrub: Scrubber) -> web.Response:
    """The bytes of a Telegram file: 404 when Telegram does not know it, 502 when it cannot be reached."""
    try:
        info = await bot.get_file(file_id)
        if not info.file_path:
            raise web.HTTPNotFound(text="the file is not available")
        if info.file_size and info.file_size > MAX_DOWNLOAD_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_DOWNLOAD_BYTES, actual_size=info.file_size)
        buffer = await bot.download_file(info.file_path, timeout=60)
    except web.HTTPException:
        raise
    except TelegramBadRequest as exc:
        raise web.HTTPNotFound(text=describe(exc, scrub)) from None
    except (TelegramAPIError, TelegramNetworkError) as exc:
        raise web.HTTPBadGateway(text=describe(exc, scrub)) from None
    except Exception as exc:  # aiohttp errors of the download quote its URL, with the token
        raise web.HTTPBadGateway(text=describe(exc, scrub)) from None
    assert buffer is not None
    return web.Response(body=buffer.read(), content_type="application/octet-stream")
