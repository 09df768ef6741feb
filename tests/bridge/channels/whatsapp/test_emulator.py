"""The WhatsApp emulator checked with requests as Meta's Cloud API documentation shows them, its error
shapes, the window and pair-rate rules, media, and webhook signatures checked independently."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.workspaces.matrix.devserver import free_port
from tests.emulators.whatsapp import WINDOW_SECONDS, WhatsAppEmulator

TOKEN = "EAAGtestaccesstoken"
SECRET = "app-secret-for-tests"

# the "send a text message" request of the Cloud API reference (curl example), as JSON
DOCS_TEXT = {
    "messaging_product": "whatsapp",
    "recipient_type": "individual",
    "to": "16505555555",
    "type": "text",
    "text": {"preview_url": False, "body": "text-message-content"},
}


@pytest.fixture
async def emulator() -> AsyncIterator[WhatsAppEmulator]:
    """A Cloud API on loopback, with a webhook receiver that records what it gets."""
    wa = WhatsAppEmulator(TOKEN, SECRET)
    await wa.start()
    yield wa
    await wa.stop()


async def _post(wa: WhatsAppEmulator, body: dict[str, Any], token: str = TOKEN) -> tuple[int, dict[str, Any]]:
    url = f"{wa.base_url}/{wa.version}/{wa.phone_number_id}/messages"
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        return resp.status, await resp.json()


async def test_docs_request_is_accepted_inside_the_window_and_refused_outside(
    emulator: WhatsAppEmulator,
) -> None:
    status, answer = await _post(emulator, DOCS_TEXT)
    assert status == 400 and answer["error"]["code"] == 131047  # never wrote: no window
    assert set(answer["error"]) == {"message", "type", "code", "error_data", "fbtrace_id"}
    emulator.last_inbound["16505555555"] = emulator.now()
    status, answer = await _post(emulator, DOCS_TEXT)
    assert status == 200 and answer["messages"][0]["id"].startswith("wamid.")
    assert answer["contacts"] == [{"input": "16505555555", "wa_id": "16505555555"}]
    emulator.advance(WINDOW_SECONDS + 1)
    assert (await _post(emulator, DOCS_TEXT))[1]["error"]["code"] == 131047
    emulator.approve_template("hello_world", "en_US", "Hello World")
    template: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "to": "16505555555",
        "type": "template",
        "template": {"name": "hello_world", "language": {"code": "en_US"}},
    }
    assert (await _post(emulator, template))[0] == 200  # templates open it again
    template["template"]["language"] = {"code": "de"}
    assert (await _post(emulator, template))[1]["error"]["code"] == 132001
    assert (await _post(emulator, DOCS_TEXT, token="wrong"))[1]["error"]["code"] == 190


async def test_injected_errors_pair_rate_and_outage(emulator: WhatsAppEmulator) -> None:
    emulator.last_inbound["16505555555"] = emulator.now()
    emulator.fail(130429)
    emulator.fail(131026)
    assert (await _post(emulator, DOCS_TEXT))[1]["error"]["code"] == 130429
    assert (await _post(emulator, DOCS_TEXT))[1]["error"]["code"] == 131026
    emulator.pair_interval = 60
    assert (await _post(emulator, DOCS_TEXT))[0] == 200
    assert (await _post(emulator, DOCS_TEXT))[1]["error"]["code"] == 131056
    emulator.outage(503)
    status, answer = await _post(emulator, DOCS_TEXT)
    assert status == 503 and answer["error"]["is_transient"] is True


async def test_webhooks_are_signed_with_the_app_secret_and_statuses_follow(
    emulator: WhatsAppEmulator,
) -> None:
    got: list[tuple[bytes, str]] = []

    async def hook(request: web.Request) -> web.Response:
        if request.method == "GET":
            return web.Response(text=request.query["hub.challenge"])
        got.append((await request.read(), request.headers["X-Hub-Signature-256"]))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/whatsapp/webhook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        emulator.webhook_url = f"http://127.0.0.1:{port}/whatsapp/webhook"
        assert await emulator.verify("anything", "42") == (200, "42")
        message = await emulator.customer_sends("16505555555", "Ana", text="hola")
        await _post(emulator, {**DOCS_TEXT, "context": {"message_id": message["id"]}})
        await emulator.wait_for(lambda: len(got) == 3)
    finally:
        await runner.cleanup()
    for raw, header in got:
        assert header == "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    bodies = [json.loads(raw)["entry"][0]["changes"][0]["value"] for raw, _ in got]
    assert bodies[0]["messages"][0]["text"] == {"body": "hola"}
    assert [b["statuses"][0]["status"] for b in bodies[1:]] == ["sent", "delivered"]


async def test_media_upload_info_and_download_need_the_token(emulator: WhatsAppEmulator) -> None:
    base = f"{emulator.base_url}/{emulator.version}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    form = aiohttp.FormData()
    form.add_field("messaging_product", "whatsapp")
    form.add_field("type", "image/png")
    form.add_field("file", b"\x89PNG-bytes", filename="a.png", content_type="image/png")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/{emulator.phone_number_id}/media", data=form, headers=auth) as resp:
            media_id = (await resp.json())["id"]
        async with http.get(f"{base}/{media_id}", headers=auth) as resp:
            info = await resp.json()
        assert info["mime_type"] == "image/png" and info["file_size"] == 10
        async with http.get(info["url"]) as resp:
            assert resp.status == 401
        async with http.get(info["url"], headers=auth) as resp:
            assert await resp.read() == b"\x89PNG-bytes"
