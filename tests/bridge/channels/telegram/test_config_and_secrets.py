"""The bot token and the webhook secret: only from the environment, checked, and never shown."""

from __future__ import annotations

import logging
from dataclasses import replace

import aiohttp
import pytest

from bot_core.config import ConfigError, parse_config
from bridge.workspaces.matrix.devserver import free_port
from storage.models import OutboxItem
from tests.bridge.channels.telegram.conftest import ENV, TOKEN, doubles_yaml, parts
from tests.conftest import FAST_OUTBOX, DeskFactory
from tests.emulators.telegram import TelegramEmulator

SECRET_PART = TOKEN.split(":", 1)[1]


def test_a_literal_token_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f'plugins:\n  - telegram: {{token: "{TOKEN}"}}\n', "plugins.yaml", environ={})
    assert "secret written literally" in str(caught.value) and SECRET_PART not in str(caught.value)


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (
            'token: "${TELEGRAM_BOT_TOKEN}", mode: webhook, webhook_url: "https://desk.example"',
            "webhook_secret",
        ),
        ('token: "${BAD_TOKEN}"', "not a Telegram bot token"),
        ('token: "${TELEGRAM_BOT_TOKEN}", mode: push', "mode"),
    ],
)
def test_bad_settings_get_a_clear_error(settings: str, problem: str) -> None:
    environ = {**ENV, "BAD_TOKEN": "not-a-token"}
    with pytest.raises(ConfigError) as caught:
        parse_config(f"plugins:\n  - telegram: {{{settings}}}\n", "plugins.yaml", environ=environ)
    assert problem in str(caught.value) and "plugins.yaml:2" in str(caught.value)


def test_webhook_mode_without_webhook_url_is_accepted_it_uses_the_public_url() -> None:
    text = (
        'server: {public_url: "https://desk.example"}\nplugins:\n  - telegram: {token: "${TELEGRAM_BOT_TOKEN}", '
        'mode: webhook, webhook_secret: "${TELEGRAM_WEBHOOK_SECRET}"}\n'
    )
    config = parse_config(text, "plugins.yaml", environ=ENV)
    assert config.server.public_url == "https://desk.example"


def test_a_webhook_secret_with_characters_telegram_refuses_is_reported() -> None:
    environ = {**ENV, "TELEGRAM_WEBHOOK_SECRET": "has spaces!"}
    text = (
        'plugins:\n  - telegram: {token: "${TELEGRAM_BOT_TOKEN}", mode: webhook, '
        'webhook_url: "https://desk.example", webhook_secret: "${TELEGRAM_WEBHOOK_SECRET}"}\n'
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "plugins.yaml", environ=environ)
    assert "A-Z, a-z, 0-9, _ and -" in str(caught.value) and "has spaces" not in str(caught.value)


async def test_a_refused_token_stops_the_start_with_a_clear_message(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    wrong = {**ENV, "TELEGRAM_BOT_TOKEN": "999999:AAHwrongTokenNotKnownToTelegram123"}
    with pytest.raises(RuntimeError, match="Telegram refused the bot token") as caught:
        await make_desk(sqlite_url, doubles_yaml(telegram), environ=wrong)
    assert "AAHwrongToken" not in str(caught.value)


async def test_the_token_never_reaches_logs_rooms_or_stored_errors(
    telegram: TelegramEmulator,
    sqlite_url: str,
    make_desk: DeskFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    desk = await make_desk(
        sqlite_url,
        doubles_yaml(telegram, port=port),
        serve_http=True,
        http_port=port,
        environ=ENV,
        outbox=replace(FAST_OUTBOX, retry_window=0.5),  # the failing send below is given up quickly
    )
    _channel, workspace = parts(desk)
    uma = telegram.user(3001, "Uma")
    await telegram.customer_sends(uma, photo=b"\xff\xd8 jpeg")
    await workspace.posts.wait_for(lambda posts: any(p.kind == "customer_message" for _, p in posts))
    post = next(p for p in workspace.room_of("3001").posts if p.kind == "customer_message")
    url = post.attachments[0].url
    assert url is not None

    telegram.failing_downloads = True  # the Bot API's file server fails: aiohttp's error quotes the URL
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        answer = await resp.text()
    assert resp.status == 502 and "500" in answer and SECRET_PART not in answer

    telegram.fail("sendMessage", 500, "Internal Server Error: bot" + TOKEN + " failed", times=1000)
    await workspace.agent_writes(workspace.room_of("3001").room_id, "we are on it")
    await workspace.posts.wait_for(
        lambda posts: any(p.kind == "notice" and "did not get" in p.text for _, p in posts), 20
    )
    assert await desk.wait_settled(10)
    notices = workspace.texts(workspace.room_of("3001").room_id, "notice")
    errors = [row.last_error or "" for row in await OutboxItem.all()]
    assert any("***" in e for e in errors)  # the description quoting the token was scrubbed
    for text in [caplog.text, *notices, *errors]:
        assert SECRET_PART not in text
