"""The widget's transports in a real headless Chromium: back on the WebSocket once it works again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from playwright.async_api import BrowserContext, Request, expect

from bridge.workspaces.matrix.devserver import free_port
from tests.bridge.channels.test_web import WebDeskFactory, Widget, eventually, web_desk  # noqa: F401

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


class WebSocketBlockingProxy:
    """A reverse proxy in front of relaydesk, like a network whose proxy may refuse WebSocket upgrades.

    While ``block_websockets`` is set, ``/web/ws`` is answered 403 before the upgrade (the browser sees
    the WebSocket fail to open); otherwise it is piped to relaydesk. Every other request is forwarded.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.block_websockets = True
        self.websockets_piped = 0
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        self._client: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._client = aiohttp.ClientSession()
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()  # ends the piped WebSocket and a forwarded long poll at once
        await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._client is not None
        if request.path == "/web/ws":
            if self.block_websockets:
                return web.Response(status=403, text="WebSockets are not allowed on this network")
            return await self._pipe_websocket(request)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._client.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=await request.read()
        ) as upstream:
            body = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=upstream.status, body=body, headers=out)

    async def _pipe_websocket(self, request: web.Request) -> web.StreamResponse:
        assert self._client is not None
        down = web.WebSocketResponse()
        await down.prepare(request)
        url = self.upstream.replace("http", "ws", 1) + request.path_qs
        async with self._client.ws_connect(url) as up:
            self.websockets_piped += 1

            async def relay_to_browser() -> None:
                async for msg in up:
                    if msg.type is WSMsgType.TEXT:
                        await down.send_str(msg.data)
                await down.close(code=up.close_code or 1000)

            task = asyncio.create_task(relay_to_browser())
            try:
                async for msg in down:
                    if msg.type is WSMsgType.TEXT:
                        await up.send_str(msg.data)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return down


@pytest.fixture
async def proxy_for() -> AsyncIterator[list[WebSocketBlockingProxy]]:
    started: list[WebSocketBlockingProxy] = []
    yield started
    for proxy in started:
        await proxy.stop()


async def test_after_falling_back_to_http_the_widget_returns_to_the_websocket_when_it_works_again(
    browser_context: BrowserContext,
    web_desk: WebDeskFactory,  # noqa: F811
    proxy_for: list[WebSocketBlockingProxy],
) -> None:
    site = await web_desk(web_extra="      websocket_retry_seconds: 1\n")
    proxy = WebSocketBlockingProxy(site.base)
    await proxy.start()
    proxy_for.append(proxy)
    page = await browser_context.new_page()
    polls: list[str] = []

    def on_request(request: Request) -> None:
        if "/web/api/messages?" in request.url and "wait=" in request.url:
            polls.append(request.url)

    page.on("request", on_request)
    await page.goto(f"{proxy.base}/web/demo")
    widget = Widget(page)
    await widget.open()
    # the WebSocket is refused twice: the widget falls back to long polling and works
    await widget.write("written while WebSockets are blocked")
    await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")
    await eventually(lambda: asyncio.sleep(0, polls))
    subject = await site.subject()
    assert proxy.websockets_piped == 0

    # WebSockets work again: the widget goes back to one (a try, then its connection) and stops polling
    proxy.block_websockets = False
    await eventually(lambda: asyncio.sleep(0, proxy.websockets_piped >= 2), 15)
    polls_before = len(polls)
    room = site.workspace.room_of(subject)
    await site.workspace.agent_writes(room.room_id, "answered over the WebSocket")
    await expect(widget.texts("agent")).to_have_text(["answered over the WebSocket"])
    # the long poll that was waiting returned with the answer; no new one was started
    await eventually(lambda: asyncio.sleep(0, site.web.connected(subject) == 1))
    await widget.write("and written over the WebSocket")
    await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")
    assert len(polls) == polls_before
