"""The bot mode's sync loop survives a homeserver that fails, and ``/healthz`` shows it while it lasts.

A small reverse proxy sits between relaydesk and the session's Synapse; the test makes it answer
``/sync`` with a gateway's HTML 502 page, then lets it through again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from bot_core.config import parse_config
from bot_core.desk import Desk
from bot_core.receiving import ReceiveSettings
from bot_core.testing import MemoryChannel
from tests.bridge.workspaces.matrix_agent import Agent, room_of
from tests.conftest import FAST_OUTBOX
from tests.matrix_server import SynapseInfo

GATEWAY_PAGE = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
HOP_BY_HOP = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "content-encoding",
    "accept-encoding",
}


class SyncFaultProxy:
    """An HTTP reverse proxy to the homeserver whose ``/sync`` the test can make fail (HTML 502)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.failing = False
        self.refused = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._changed = asyncio.Condition()

    @property
    def url(self) -> str:
        """Where relaydesk connects instead of the homeserver."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._http = aiohttp.ClientSession(auto_decompress=False)

    async def stop(self) -> None:
        """Stop listening."""
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_refused(self, count: int, timeout: float = 20.0) -> None:
        """Wait until ``count`` syncs were answered with the 502 page."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.refused >= count), timeout)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if self.failing and request.path.endswith("/sync"):
            self.refused += 1
            async with self._changed:
                self._changed.notify_all()
            return web.Response(status=502, text=GATEWAY_PAGE, content_type="text/html")
        assert self._http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._http.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=await request.read()
        ) as upstream:
            body = await upstream.read()
            answer = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=upstream.status, body=body, headers=answer)


@pytest.fixture
async def sync_proxy(synapse: SynapseInfo) -> AsyncIterator[SyncFaultProxy]:
    """The fault proxy in front of the session's Synapse."""
    proxy = SyncFaultProxy(synapse.base_url)
    await proxy.start()
    yield proxy
    await proxy.stop()


async def _health_until(desk: Desk, status: str, timeout: float = 20.0) -> dict[str, Any]:
    """Ask the desk's health report until its status is ``status`` (the condition the test waits on)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (health := await desk.health())["status"] != status:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"health never said {status}: {health}")
        await asyncio.sleep(0.05)
    return health


async def test_the_bot_sync_loop_survives_a_failing_homeserver_and_health_shows_it(
    synapse: SynapseInfo,
    sqlite_url: str,
    sync_proxy: SyncFaultProxy,
    agent: Agent,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    password = secrets.token_urlsafe(12)
    bot_user = await synapse.server.create_user(f"relaybot-{uuid.uuid4().hex[:8]}", password)
    yaml_text = f"""
plugins:
  - customers: {{use: "bot_core.testing:MemoryChannel"}}
  - matrix:
      use: "bridge.workspaces.matrix.bot:MatrixBotWorkspace"
      config:
        homeserver: "{sync_proxy.url}"
        user_id: "{bot_user}"
        password: "${{BOT_SECRET}}"
        agents: ["{synapse.agent_user_id}"]
        sync_timeout_ms: 1000
"""
    config = parse_config(yaml_text, "plugins.yaml", environ={"BOT_SECRET": password})
    config = config.model_copy(update={"storage": config.storage.model_copy(update={"database": sqlite_url})})
    settings = ReceiveSettings(degraded_after=0.3, down_after=60, backoff_first=0.02, backoff_max=0.1)
    desk = Desk(
        config, serve_http=False, outbox_settings=FAST_OUTBOX, scheduler_poll=0.1, receive_settings=settings
    )
    await desk.start()
    try:
        channel = cast(MemoryChannel, desk.plugins["customers"])
        user = f"erin-{uuid.uuid4().hex[:6]}"
        await channel.customer_writes(user, "hello", name="Erin")
        assert await desk.wait_settled(30)
        room_id = await room_of(user)
        await agent.sync_until(
            lambda: any(c.get("body") == "Erin (Customers): hello" for c in agent.messages(room_id))
        )

        sync_proxy.failing = True
        await sync_proxy.wait_refused(3)
        await agent.say(room_id, "written while the homeserver failed")
        health = await _health_until(desk, "degraded")
        sync = health["receiving"]["matrix"]["loops"]["sync"]
        assert sync["state"] == "degraded" and sync["failures"] >= 3

        sync_proxy.failing = False
        await channel.sent.wait_for(lambda items: len(items) >= 1, 20)
        await _health_until(desk, "ok")
        await agent.say(room_id, "written after the recovery")
        await channel.sent.wait_for(lambda items: len(items) >= 2, 20)
        assert await desk.wait_settled(30)
        assert channel.texts_to(user) == ["written while the homeserver failed", "written after the recovery"]
    finally:
        await desk.stop(timeout=10)
    warnings = [r for r in caplog.records if r.getMessage() == "matrix bot sync failed, retrying"]
    assert len(warnings) == 1 < sync_proxy.refused  # one warning for the streak, not one per failed sync
