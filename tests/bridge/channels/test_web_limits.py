"""The widget's public endpoints are rate limited: a flood gets 429 with Retry-After and changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from bridge.workspaces.matrix.devserver import free_port
from storage.models import InboundReceipt
from tests.conftest import DeskFactory


async def test_a_flood_of_messages_and_sessions_is_refused_with_429(
    sqlite_url: str, make_desk: DeskFactory, tmp_path: Path
) -> None:
    port = free_port()
    yaml_text = f"""
plugins:
  - desk: {{use: "bot_core.testing:MemoryWorkspace"}}
  - web:
      dev_secret_file: "{tmp_path / "web-secret"}"
      upload_dir: "{tmp_path / "uploads"}"
      messages_per_minute: 3
      sessions_per_minute: 2
"""
    desk = await make_desk(sqlite_url, yaml_text, serve_http=True, http_port=port)
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        tokens = []
        for _ in range(2):
            async with http.post(f"{base}/web/api/session", json={}) as resp:
                assert resp.status == 200
                tokens.append((await resp.json())["token"])
        async with http.post(f"{base}/web/api/session", json={}) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "30"
            assert (await resp.json())[
                "error"
            ] == "Too many new chat sessions from your address: please wait 30 s."

        auth = {"Authorization": f"Bearer {tokens[0]}"}
        for n in range(3):
            async with http.post(
                f"{base}/web/api/messages",
                json={"client_id": f"client-{n}", "text": f"hello {n}"},
                headers=auth,
            ) as resp:
                assert resp.status == 200
        async with http.post(
            f"{base}/web/api/messages", json={"client_id": "client-3", "text": "hello 3"}, headers=auth
        ) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "20"
            assert "sending messages faster than we can read them" in (await resp.json())["error"]
        form = aiohttp.FormData()
        form.add_field("client_id", "client-4")
        form.add_field("file", b"\x89PNG\r\n\x1a\n", filename="a.png", content_type="image/png")
        async with http.post(f"{base}/web/api/upload", data=form, headers=auth) as resp:
            assert resp.status == 429  # refused before the file is read or stored
        assert not any((tmp_path / "uploads").glob("*"))

        async with http.ws_connect(f"{base}/web/ws?token={tokens[0]}") as ws:
            await ws.send_json({"type": "send", "client_id": "client-5", "text": "over the WebSocket"})
            frame = json.loads((await ws.receive(timeout=10)).data)
            assert frame["type"] == "error" and frame["client_id"] == "client-5"
            assert "please wait" in frame["message"]

        # another visitor is not held back by the first one's flood
        other = {"Authorization": f"Bearer {tokens[1]}"}
        async with http.post(
            f"{base}/web/api/messages", json={"client_id": "client-6", "text": "hi"}, headers=other
        ) as resp:
            assert resp.status == 200
    assert await desk.wait_settled(10)
    assert await InboundReceipt.filter(source="web").count() == 4  # the refused ones were never stored
