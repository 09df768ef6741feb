"""Agents' files served to channels by the media proxy: safe headers, streaming, rate limit, expiry.

Against the real test Synapse (appservice mode). The streaming test puts a small pass-through proxy
between relaydesk and Synapse that holds a media download after its first bytes until the test lets
it go: a proxy that buffered the file could not answer anything before the end.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import cast

import aiohttp
import pytest
from aiohttp import web
from nio import UploadResponse

from bot_core.events import Attachment
from bot_core.testing import MemoryChannel
from bridge.workspaces.matrix.appservice import MatrixWorkspace
from bridge.workspaces.matrix.devserver import free_port
from tests.bridge.workspaces.matrix_agent import PNG_BYTES, Agent, room_of
from tests.bridge.workspaces.test_matrix_appservice import matrix_yaml
from tests.conftest import DeskFactory
from tests.matrix_server import SynapseInfo

HTML = b"<html><body><script>fetch('/web/api/messages')</script></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
HOLD_AFTER = 256 * 1024
BIG = os.urandom(3 * 1024 * 1024)


class HoldingProxy:
    """Passes every request on to Synapse; a media download stops after ``HOLD_AFTER`` bytes until released."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.url = ""
        self._http: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._http.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=await request.read() or None,
        ) as resp:
            out = web.StreamResponse(status=resp.status)
            for key, value in resp.headers.items():
                if key.lower() not in (
                    "content-length",
                    "transfer-encoding",
                    "content-encoding",
                    "connection",
                ):
                    out.headers[key] = value
            await out.prepare(request)
            sent = 0
            async for chunk in resp.content.iter_chunked(64 * 1024):
                if "/media/download/" in request.path and sent >= HOLD_AFTER:
                    self.held.set()
                    await self.release.wait()
                await out.write(chunk)
                sent += len(chunk)
            await out.write_eof()
            return out


@pytest.fixture
async def holding_proxy(synapse: SynapseInfo) -> AsyncIterator[HoldingProxy]:
    proxy = HoldingProxy(synapse.base_url)
    proxy._http = aiohttp.ClientSession(auto_decompress=False)
    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    proxy.url = f"http://127.0.0.1:{port}"
    yield proxy
    proxy.release.set()
    await runner.cleanup()
    await proxy._http.close()


async def agent_posts_file(
    agent: Agent, room_id: str, data: bytes, name: str, mime: str, msgtype: str
) -> None:
    """The agent uploads ``data`` to the media repository and posts it in the room."""
    upload, _ = await agent.client.upload(
        lambda *_: data, content_type=mime, filename=name, filesize=len(data)
    )
    assert isinstance(upload, UploadResponse), upload
    content = {
        "msgtype": msgtype,
        "body": name,
        "filename": name,
        "url": upload.content_uri,
        "info": {"mimetype": mime, "size": len(data)},
    }
    await agent.client.room_send(room_id, "m.room.message", content)


async def start(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent, yaml_text: str
) -> tuple[MatrixWorkspace, MemoryChannel, str, str]:
    desk = await make_desk(sqlite_url, yaml_text, serve_http=True, http_port=synapse.appservice_port)
    channel = cast(MemoryChannel, desk.plugins["customers"])
    user = f"fay-{uuid.uuid4().hex[:6]}"
    await channel.customer_writes(user, "can you send me the form?", name="Fay")
    assert await desk.wait_settled(30)
    room_id = await room_of(user)
    await agent.sync_until(lambda: room_id in agent.timeline)
    return cast(MatrixWorkspace, desk.plugins["matrix"]), channel, user, room_id


async def files_sent(channel: MemoryChannel, user: str, count: int) -> list[Attachment]:
    await channel.sent.wait_for(
        lambda items: sum(len(d.attachments) for d in items if d.external_user_id == user) >= count, 20
    )
    return [a for d in channel.sent.items if d.external_user_id == user for a in d.attachments]


async def test_an_agents_html_or_svg_is_an_attachment_in_a_sandbox_and_links_expire(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent
) -> None:
    matrix, channel, user, room_id = await start(synapse, sqlite_url, make_desk, agent, matrix_yaml(synapse))
    await agent_posts_file(agent, room_id, HTML, "form.html", "text/html", "m.file")
    await agent_posts_file(agent, room_id, SVG, "logo.svg", "image/svg+xml", "m.image")
    await agent_posts_file(agent, room_id, PNG_BYTES, "dot.png", "image/png", "m.image")
    html, svg, png = await files_sent(channel, user, 3)
    assert html.url and svg.url and png.url

    async with aiohttp.ClientSession() as http:
        for attachment, body in ((html, HTML), (svg, SVG)):
            async with http.get(attachment.url) as resp:  # type: ignore[arg-type]
                assert resp.status == 200 and await resp.read() == body
                assert resp.headers["Content-Disposition"].startswith("attachment")
                assert "sandbox" in resp.headers["Content-Security-Policy"]
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
        async with http.get(png.url) as resp:
            assert resp.status == 200 and resp.headers["Content-Disposition"].startswith("inline")
            assert "sandbox" in resp.headers["Content-Security-Policy"]

        # links carry an expiry: one issued with an expiry already past answers 410; a forged one 403
        assert "exp=" in html.url and "sig=" in html.url
        await agent.sync_until(lambda: any(c.get("body") == "form.html" for c in agent.messages(room_id)))
        mxc = next(c["url"] for c in agent.messages(room_id) if c.get("body") == "form.html")
        expired = matrix._media.link(matrix.services.http_base_url, mxc, room_id, expires_at=time.time() - 5)
        async with http.get(expired) as resp:
            assert resp.status == 410
        forged = html.url.split("?")[0] + "?exp=0&c=&sig=forged"
        async with http.get(forged) as resp:
            assert resp.status == 403


async def test_media_downloads_are_rate_limited_per_address(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent
) -> None:
    yaml_text = matrix_yaml(synapse).replace("server: {", "server: {downloads_per_minute: 2, ", 1)
    _matrix, channel, user, room_id = await start(synapse, sqlite_url, make_desk, agent, yaml_text)
    await agent_posts_file(agent, room_id, PNG_BYTES, "dot.png", "image/png", "m.image")
    (png,) = await files_sent(channel, user, 1)
    assert png.url
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.get(png.url) as resp:
                assert resp.status == 200
        async with http.get(png.url) as resp:
            assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1


async def test_a_large_agent_file_is_streamed_not_read_whole(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent, holding_proxy: HoldingProxy
) -> None:
    yaml_text = matrix_yaml(synapse).replace(
        f'homeserver: "{synapse.base_url}"', f'homeserver: "{holding_proxy.url}"'
    )
    _matrix, channel, user, room_id = await start(synapse, sqlite_url, make_desk, agent, yaml_text)
    await agent_posts_file(agent, room_id, BIG, "manual.pdf", "application/pdf", "m.file")
    (manual,) = await files_sent(channel, user, 1)
    assert manual.url

    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(20):
            async with http.get(manual.url) as resp:
                assert resp.status == 200
                # the first bytes arrive while the homeserver's answer is still held back by the proxy
                first = await resp.content.readexactly(HOLD_AFTER)
                assert not holding_proxy.release.is_set()
                await holding_proxy.held.wait()  # the proxy holds the rest back: we did not get it all
                assert resp.content.total_bytes < len(BIG)
                holding_proxy.release.set()
                rest = await resp.read()
    assert first + rest == BIG
