"""A Telegram customer and Slack agents end to end: the Bot API emulator and the Slack emulator."""

from __future__ import annotations

import secrets

import pytest

from bridge.workspaces.matrix.devserver import free_port
from tests.bridge.channels.telegram.conftest import ENV, telegram, telegram_entry
from tests.bridge.workspaces.slack.conftest import ANN, GROUP, until
from tests.conftest import DeskFactory
from tests.emulators.slack import SlackEmulator
from tests.emulators.telegram import TelegramEmulator

__all__ = ["telegram"]  # the Bot API emulator fixture of the Telegram tests


@pytest.mark.parametrize("rooms", ["channel", "thread"])
async def test_a_telegram_customer_is_answered_from_slack(
    rooms: str, slack: SlackEmulator, telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    port = free_port()
    team = slack.add_channel("support-team", [ANN]) if rooms == "thread" else ""
    room_lines = f'rooms: thread\n        team_channel: "{team}"' if team else "rooms: channel"
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
        {room_lines}
"""
    env = {**ENV, "SLACK_BOT_TOKEN": slack.token, "SLACK_SIGNING_SECRET": slack.signing_secret}
    await make_desk(sqlite_url, yaml_text, serve_http=True, http_port=port, environ=env)
    slack.request_url = f"http://127.0.0.1:{port}/slack/events"
    chat_id = 10_000_000 + secrets.randbelow(10_000_000)
    rosa = telegram.user(chat_id, "Rosa", "Diaz")
    await telegram.customer_sends(rosa, "Hello <!channel>, my parcel never arrived")
    where = (
        team
        or (
            await until(
                lambda: next(
                    (c for c in slack.channels.values() if c.name.startswith("support-rosa-diaz-")), None
                ),
                timeout=20,
            )
        ).id
    )
    post = await until(lambda: [m for m in slack.messages(where) if m.get("username")], timeout=20)
    assert post[0]["username"] == "Rosa Diaz (Telegram)"
    assert post[0]["seen"] == "Hello <!channel>, my parcel never arrived" and post[0]["mentions"] == []

    if team:  # thread rooms: replies in the thread reach the customer, the team channel's talk does not
        thread = str(post[0]["thread_ts"])
        await slack.user_posts(ANN, team, "So sorry! A new parcel ships today.", thread_ts=thread)
        await slack.user_posts(ANN, team, "(internal) who handles parcels?")
        await slack.user_posts(ANN, team, "Anything else?", thread_ts=thread)
    else:  # channel rooms: top-level messages reach the customer, thread replies do not
        await slack.user_posts(ANN, where, "So sorry! A new parcel ships today.")
        await slack.user_posts(ANN, where, "(internal) refund approved", thread_ts=post[0]["ts"])
        await slack.user_posts(ANN, where, "Anything else?")
    # the last answer came after the internal one: had that been relayed, it would have come before
    await telegram.wait_for(lambda: len(telegram.bot_messages(chat_id)) >= 2, 20)
    texts = [m["text"] for m in telegram.bot_messages(chat_id)]
    assert texts == ["So sorry! A new parcel ships today.", "Anything else?"]
