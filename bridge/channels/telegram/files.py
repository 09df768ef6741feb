"""Customers' Telegram files, served to the workspace through signed relaydesk links.

A Telegram file URL contains the bot token, so it never leaves this adapter: an attachment carries
``<relaydesk>/telegram/files/<file_id>?exp=..&c=<chat>&sig=<hmac>`` instead (an expiring link naming
the chat it came from, :class:`bot_core.downloads.LinkSigner`), and :func:`serve_file` resolves the
file (``getFile``) and streams it from the Bot API with the safe download headers. The signing key is
kept in the plugin's state, so links waiting in the outbox stay valid across restarts.
"""

from __future__ import annotations

import mimetypes
from urllib.parse import quote

import aiohttp
from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramNetworkError
from aiohttp import web

from bot_core.api import CHUNK_BYTES, DownloadPolicy, clean_file_name, download_headers, stream
from bridge.channels.telegram.errors import Scrubber, describe

FILES_PREFIX = "/telegram/files"
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # the Bot API serves files up to 20 MB
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)


class FileLinks:
    """Makes and checks signed links to Telegram files (``base_url``: relaydesk's own HTTP address)."""

    def __init__(self, base_url: str, key: bytes, policy: DownloadPolicy) -> None:
        self.base_url = base_url.rstrip("/")
        self.signer = policy.signer(key)
        self.policy = policy

    def link(self, file_id: str, scope: str = "") -> str:
        """The URL from which the workspace fetches ``file_id`` (sent in chat ``scope``)."""
        return f"{self.base_url}{FILES_PREFIX}/{quote(file_id, safe='')}?{self.signer.query(file_id, scope)}"


async def serve_file(
    request: web.Request, bot: Bot, http: aiohttp.ClientSession, file_id: str, scrub: Scrubber
) -> web.StreamResponse:
    """Stream a Telegram file: 404 when Telegram does not know it, 502 when it cannot be reached."""
    try:
        info = await bot.get_file(file_id)
        if not info.file_path:
            raise web.HTTPNotFound(text="the file is not available")
        if info.file_size and info.file_size > MAX_DOWNLOAD_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_DOWNLOAD_BYTES, actual_size=info.file_size)
        url = bot.session.api.file_url(bot.token, info.file_path)
        name = clean_file_name(info.file_path)
        headers = download_headers(mimetypes.guess_type(name)[0], name)
        async with http.get(url, timeout=DOWNLOAD_TIMEOUT) as resp:
            if resp.status != 200:
                raise web.HTTPBadGateway(text=f"the Bot API answered HTTP {resp.status} for the file")
            size = None if "Content-Encoding" in resp.headers else resp.content_length
            return await stream(request, resp.content.iter_chunked(CHUNK_BYTES), headers, size)
    except web.HTTPException:
        raise
    except TelegramBadRequest as exc:
        raise web.HTTPNotFound(text=describe(exc, scrub)) from None
    except (TelegramAPIError, TelegramNetworkError) as exc:
        raise web.HTTPBadGateway(text=describe(exc, scrub)) from None
    except (aiohttp.ClientError, TimeoutError) as exc:  # aiohttp errors quote the file URL, with the token
        raise web.HTTPBadGateway(text=describe(exc, scrub)) from None
