"""Uploaded files served to the agents: safe headers, expiring links, a download rate per address."""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

import aiohttp

from bot_core.desk import Desk
from bot_core.events import Attachment
from bot_core.testing import MemoryWorkspace
from bridge.channels.web import WebChannel
from bridge.workspaces.matrix.devserver import free_port
from tests.conftest import DeskFactory

SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>'
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


def web_yaml(tmp_path: Path, server: str = "") -> str:
    return f"""{server}
plugins:
  - desk: {{use: "bot_core.testing:MemoryWorkspace"}}
  - web:
      dev_secret_file: "{tmp_path / "web-secret"}"
      upload_dir: "{tmp_path / "uploads"}"
      upload_types: ["image/png", "image/svg+xml"]
"""


async def upload_two(desk: Desk, port: int) -> list[Attachment]:
    """A visitor uploads an SVG with a script and a PNG; the attachments the agents' room got."""
    workspace = cast(MemoryWorkspace, desk.plugins["desk"])
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/web/api/session", json={}) as resp:
            auth = {"Authorization": f"Bearer {(await resp.json())['token']}"}
        for n, (name, data, mime) in enumerate(
            (("logo.svg", SVG, "image/svg+xml"), ("a.png", PNG, "image/png"))
        ):
            form = aiohttp.FormData()
            form.add_field("client_id", f"upload-file-{n}")
            form.add_field("file", data, filename=name, content_type=mime)
            async with http.post(f"{base}/web/api/upload", data=form, headers=auth) as resp:
                assert resp.status == 200, await resp.text()
        await workspace.posts.wait_for(
            lambda posts: sum(len(p.attachments) for _, p in posts if p.kind == "customer_message") == 2
        )
    return [a for _, p in workspace.posts.items if p.kind == "customer_message" for a in p.attachments]


async def test_uploads_are_served_as_safe_downloads_with_expiring_links(
    sqlite_url: str, make_desk: DeskFactory, tmp_path: Path
) -> None:
    port = free_port()
    desk = await make_desk(sqlite_url, web_yaml(tmp_path), serve_http=True, http_port=port)
    svg, png = await upload_two(desk, port)
    assert svg.url is not None and png.url is not None
    web_channel = cast(WebChannel, desk.plugins["web"])
    async with aiohttp.ClientSession() as http:
        # the agents open an SVG with a script: it is an attachment in a sandbox, never a page
        async with http.get(svg.url) as resp:
            assert resp.status == 200 and await resp.read() == SVG
            assert resp.headers["Content-Disposition"].startswith("attachment;")
            assert "sandbox" in resp.headers["Content-Security-Policy"]
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
        async with http.get(png.url) as resp:
            assert resp.status == 200 and resp.headers["Content-Disposition"].startswith("inline;")
            assert "sandbox" in resp.headers["Content-Security-Policy"]

        # a link past its expiry answers 410; one whose expiry was edited no longer matches its signature
        file_id = svg.url.split("/web/files/")[1].split("/")[0]
        path = svg.url.split("?")[0]
        expired = web_channel._file_signer.query(file_id, "visitor", expires_at=time.time() - 5)
        async with http.get(f"{path}?{expired}") as resp:
            assert resp.status == 410
        edited = expired.replace("exp=", "exp=9")
        async with http.get(f"{path}?{edited}") as resp:
            assert resp.status == 403


async def test_downloads_are_rate_limited_per_address(
    sqlite_url: str, make_desk: DeskFactory, tmp_path: Path
) -> None:
    port = free_port()
    yaml_text = web_yaml(tmp_path, "server: {downloads_per_minute: 2}")
    desk = await make_desk(sqlite_url, yaml_text, serve_http=True, http_port=port)
    _svg, png = await upload_two(desk, port)
    assert png.url is not None
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.get(png.url) as resp:
                assert resp.status == 200
        async with http.get(png.url) as resp:
            assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
