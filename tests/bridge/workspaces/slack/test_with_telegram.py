"""A Telegram customer and Slack agents end to end: the Bot API emulator and the Slack emulator."""

from __future__ import annotations

import secrets

from bridge.workspaces.matrix.devserver import free_port
from tests.bridge.channels.telegram.conftest import ENV, telegram, telegram_entry
from tests.bridge.workspaces.slack.conftest import ANN, GROUP, until
from tests.conftest import DeskFactory
from tests.emulators.slack import SlackEmulator
from tests.emulators.telegram import TelegramEmulator

__all__ = ["telegram"]  # the Bot API emulator fixture of the Telegram tests


async def test_a_telegram_customer_is_answered_from_slack(
    slack: SlackEmulator, telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    port = free_port()
    yaml_text = f"""
plugins:{telegram_entry(telegram)}
  - slack:
      use: "bridge.workspaces.slack:SlackWorkspace"
      config:
        bot_token: "${{SLACK_BOT_TOKEN}}"
        signing_secret: "${{SLACK_SIGNING_SECRET}}"
        api_url: "{slack.api_url}"
        agents: ["{ANN}"]
        agent_group: "{GROUP}"
        undo_seconds: 0.2
"""
    env = {**ENV, "SLACK_BOT_TOKEN": slack.token, "SLACK_SIGNING_SECRET": slack.signing_secret}
    await make_desk(sqlite_url, yaml_text, serve_http=True, http_port=port, environ=env)
    slack.request_url = f"http://127.0.0.1:{port}/slack/events"
    chat_id = 10_000_000 + secrets.randbelow(10_000_000)
    rosa = telegram.user(chat_id, "Rosa", "Diaz")
    await telegram.customer_sends(rosa, "Hello <!channel>, my parcel never arrived")
    channel = await until(
        lambda: next((c for c in slack.channels.values() if c.name.startswith("support-rosa-diaz-")), None),
        timeout=20,
    )
    post = await until(lambda: [m for m in slack.messages(channel.id) if m.get("username")], timeout=20)
    assert post[0]["username"] == "Rosa Diaz (Telegram)"
    assert post[0]["seen"] == "Hello <!channel>, my parcel never arrived" and post[0]["mentions"] == []

    await slack.user_posts(ANN, channel.id, "So sorry! A new parcel ships today.")
    await slack.user_posts(ANN, channel.id, "(internal) refund approved", thread_ts=post[0]["ts"])
    await telegram.wait_for(lambda: bool(telegram.bot_messages(chat_id)), 20)
    await slack.idle()
    assert [m["text"] for m in telegram.bot_messages(chat_id)] == ["So sorry! A new parcel ships today."]
