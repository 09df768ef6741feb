"""Webhook mode: registered with a secret token, every request checked, each update handled once."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from bridge.channels.telegram.channel import WEBHOOK_PATH
from bridge.workspaces.matrix.devserver import free_port
from storage.models import Direction, InboundReceipt, Message
from tests.bridge.channels.telegram.conftest import (
    ENV,
    FAST_RECEIVING,
    WEBHOOK_SECRET,
    doubles_yaml,
    health_until,
    parts,
)
from tests.conftest import DeskFactory
from tests.emulators.telegram import TelegramEmulator


def _update(update_id: int, chat_id: int, text: str, message_id: int = 1) -> dict[str, Any]:
    user = {"id": chat_id, "is_bot": False, "first_name": "Mallory"}
    return {
        "update_id": update_id,
        "message": {
            "message_id": message_id,
            "from": user,
            "chat": {"id": chat_id, "type": "private", "first_name": "Mallory"},
            "date": 1_700_000_000,
            "text": text,
        },
    }


async def _post(url: str, body: bytes | str, secret: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_webhook_mode_registers_the_secret_and_relays_both_ways(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    port = free_port()
    yaml_text = doubles_yaml(telegram, port=port, mode="webhook", webhook_url=f"http://127.0.0.1:{port}")
    desk = await make_desk(sqlite_url, yaml_text, serve_http=True, http_port=port, environ=ENV)
    _channel, workspace = parts(desk)
    [set_webhook] = telegram.calls_of("setWebhook")
    assert set_webhook.params["url"] == f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    assert set_webhook.params["secret_token"] == WEBHOOK_SECRET

    dora = telegram.user(9001, "Dora")
    await telegram.customer_sends(dora, "Is the shop open on Sunday?")
    await workspace.posts.wait_for(lambda posts: any(p.kind == "customer_message" for _, p in posts))
    room = workspace.room_of("9001")
    assert workspace.texts(room.room_id, "customer_message") == ["Is the shop open on Sunday?"]
    assert [(d.status, d.secret_header) for d in telegram.webhook_deliveries] == [(200, WEBHOOK_SECRET)]
    assert not telegram.calls_of("getUpdates")  # no polling in webhook mode

    await workspace.agent_writes(room.room_id, "Yes, 10:00 to 16:00.")
    await telegram.wait_for(lambda: bool(telegram.bot_messages(9001)))
    assert telegram.texts_to(9001) == ["Yes, 10:00 to 16:00."]


async def test_without_webhook_url_the_webhook_is_registered_at_the_public_url(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    # relaydesk listens on 127.0.0.1:port and is reached by the world (here: the emulator) at localhost
    port = free_port()
    public = f"http://localhost:{port}/"
    yaml_text = doubles_yaml(telegram, port=port, mode="webhook", public_url=public)
    desk = await make_desk(sqlite_url, yaml_text, serve_http=True, http_port=port, environ=ENV)
    _channel, workspace = parts(desk)
    [set_webhook] = telegram.calls_of("setWebhook")
    assert set_webhook.params["url"] == f"http://localhost:{port}{WEBHOOK_PATH}"
    await telegram.customer_sends(telegram.user(9002, "Eve"), "Hello through the public URL")
    await workspace.posts.wait_for(lambda posts: any(p.kind == "customer_message" for _, p in posts))
    assert [(d.status, d.secret_header) for d in telegram.webhook_deliveries] == [(200, WEBHOOK_SECRET)]


async def test_a_webhook_call_without_the_right_secret_is_refused_and_stores_nothing(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    port = free_port()
    yaml_text = doubles_yaml(telegram, port=port, mode="webhook", webhook_url=f"http://127.0.0.1:{port}")
    desk = await make_desk(sqlite_url, yaml_text, serve_http=True, http_port=port, environ=ENV)
    url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    body = json.dumps(_update(555001, 6666, "forged: refund me"))

    for secret in (None, "", "wrong-secret", WEBHOOK_SECRET + "x", WEBHOOK_SECRET.upper()):
        status, answer = await _post(url, body, secret)
        assert (status, answer["ok"]) == (401, False), secret
    status, answer = await _post(url, "{not json", WEBHOOK_SECRET)
    assert (status, answer["description"]) == (400, "the body is not JSON")
    status, answer = await _post(url, json.dumps({"message": {}}), WEBHOOK_SECRET)
    assert status == 400 and "update_id" in answer["description"]
    assert await desk.wait_settled(5)
    assert await Message.all().count() == 0
    assert await InboundReceipt.all().count() == 0
    assert await desk.bus.pending() == 0

    # the same update with the secret is taken: the refusals above were the check, not a broken route
    status, answer = await _post(url, body, WEBHOOK_SECRET)
    assert (status, answer) == (200, {"ok": True})
    assert await desk.wait_settled(5)
    assert [m.text for m in await Message.all()] == ["forged: refund me"]


async def test_a_repeated_update_is_handled_once(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    port = free_port()
    yaml_text = doubles_yaml(telegram, port=port, mode="webhook", webhook_url=f"http://127.0.0.1:{port}")
    desk = await make_desk(sqlite_url, yaml_text, serve_http=True, http_port=port, environ=ENV)
    _channel, workspace = parts(desk)
    telegram.duplicate_webhook_deliveries = True  # Telegram did not see the first acknowledgement
    erin = telegram.user(31337, "Erin")
    first = await telegram.customer_sends(erin, "my order is late")
    await telegram.customer_sends(erin, "order 1042")
    await telegram.wait_for(lambda: len(telegram.webhook_deliveries) == 4)
    assert [d.status for d in telegram.webhook_deliveries] == [200, 200, 200, 200]
    assert [d.update_id for d in telegram.webhook_deliveries][::2] == [
        u["update_id"] for u in telegram.all_updates
    ]
    assert await desk.wait_settled(10)
    room = workspace.room_of("31337")
    assert workspace.texts(room.room_id, "customer_message") == ["my order is late", "order 1042"]
    # and once more after a restart (nothing in memory any more): the stored receipt drops it
    await desk.stop(timeout=5)
    desk = await make_desk(sqlite_url, yaml_text, serve_http=True, http_port=port, environ=ENV)
    replay = json.dumps(telegram.all_updates[0])
    status, _ = await _post(f"http://127.0.0.1:{port}{WEBHOOK_PATH}", replay, WEBHOOK_SECRET)
    assert status == 200
    assert await desk.wait_settled(10)
    inbound = await Message.filter(direction=Direction.INBOUND).order_by("id")
    assert [(m.text, m.channel_message_id) for m in inbound] == [
        ("my order is late", f"31337:{first['message_id']}"),
        ("order 1042", f"31337:{first['message_id'] + 1}"),
    ]


async def test_the_webhook_route_is_closed_in_polling_mode(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    port = free_port()
    desk = await make_desk(
        sqlite_url, doubles_yaml(telegram, port=port), serve_http=True, http_port=port, environ=ENV
    )
    status, _ = await _post(
        f"http://127.0.0.1:{port}{WEBHOOK_PATH}", json.dumps(_update(1, 2, "x")), WEBHOOK_SECRET
    )
    assert status == 404
    assert await desk.wait_settled(5)
    assert await Message.all().count() == 0


async def test_a_failed_setwebhook_is_retried_and_shown_on_healthz_until_telegram_takes_it(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    port = free_port()
    yaml_text = doubles_yaml(telegram, port=port, mode="webhook", webhook_url=f"http://127.0.0.1:{port}")
    telegram.gateway_down("setWebhook")
    desk = await make_desk(
        sqlite_url, yaml_text, serve_http=True, http_port=port, environ=ENV, receive_settings=FAST_RECEIVING
    )
    _channel, workspace = parts(desk)
    await telegram.wait_for(lambda: sum(c.status == 502 for c in telegram.calls_of("setWebhook")) >= 3)
    health = await health_until(desk, "degraded")
    assert health["receiving"]["telegram"]["loops"]["webhook"]["state"] == "degraded"

    telegram.gateway_up("setWebhook")
    await telegram.wait_for(lambda: telegram.webhook is not None)
    await health_until(desk, "ok")
    await telegram.customer_sends(telegram.user(9002, "Eve"), "finally through")
    await workspace.posts.wait_for(lambda posts: any(p.kind == "customer_message" for _, p in posts))
    assert workspace.texts(workspace.room_of("9002").room_id, "customer_message") == ["finally through"]
