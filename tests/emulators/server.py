"""What the platform emulators share: an aiohttp app on a free loopback port, a client for the webhooks
they post, and waiting on a condition that the emulator's state changes satisfy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web


class LoopbackServer:
    """Base of an emulator: :meth:`routes` adds its endpoints; :meth:`_notify` after each change wakes
    :meth:`wait_for`; ``_hang`` is set on stop, releasing handlers told to hang."""

    max_body = 1024**2
    """The largest request body the server takes (aiohttp's default: 1 MB)."""

    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        self._hang = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: what the client's base-URL setting takes."""
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        """Add the emulated API's endpoints to ``app``."""
        raise NotImplementedError

    def calls_seen(self) -> list[Any]:
        """A short form of the calls so far, for the message of a :meth:`wait_for` that timed out."""
        return []

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application(client_max_size=self.max_body)
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._http = aiohttp.ClientSession()

    async def _close(self) -> None:
        """Close the webhook client, then the server."""
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds (checked after every change); TimeoutError with the calls otherwise."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
            except TimeoutError:
                raise TimeoutError(f"condition not met in {timeout}s; calls: {self.calls_seen()}") from None
