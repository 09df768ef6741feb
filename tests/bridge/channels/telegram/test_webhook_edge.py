"""What anyone can send to the webhook: a secret header that is not UTF-8, JSON nested very deep: 4xx, not 500."""

from __future__ import annotations

import asyncio

import aiohttp

from bridge.channels.telegram.channel import WEBHOOK_PATH
from bridge.workspaces.matrix.devserver import free_port
from storage.models import InboundReceipt
from tests.bridge.channels.telegram.conftest import ENV, WEBHOOK_SECRET, doubles_yaml
from tests.conftest import DeskFactory
from tests.emulators.telegram import TelegramEmulator


async def test_a_secret_header_of_raw_bytes_and_deep_json_are_refused_with_4xx(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    port = free_port()
    yaml_text = doubles_yaml(telegram, port=port, mode="webhook", webhook_url=f"http://127.0.0.1:{port}")
    desk = await make_desk(sqlite_url, yaml_text, serve_http=True, http_port=port, environ=ENV)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n".encode()
        + b"X-Telegram-Bot-Api-Secret-Token: \xff\xfe\r\n\r\n{}"
    )
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert status_line.split()[1] == b"401"
    deep = "[" * 30_000 + "]" * 30_000
    headers = {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{port}{WEBHOOK_PATH}", data=deep, headers=headers) as resp:
            assert resp.status == 400
    assert await desk.wait_settled(5)
    assert await InboundReceipt.all().count() == 0
