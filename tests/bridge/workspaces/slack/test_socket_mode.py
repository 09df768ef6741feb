"""Socket Mode: the same desk without a public URL, over the emulator's WebSocket."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from bridge.workspaces.slack import SlackWorkspace
from tests.bridge.workspaces.slack.conftest import ANN, EVE, SlackDeskFactory, until
from tests.bridge.workspaces.slack.test_channel_rooms import first_contact
from tests.emulators.slack import SlackEmulator

SOCKET = 'mode: socket\n        app_token: "${SLACK_APP_TOKEN}"\n        undo_seconds: 0'


def test_socket_mode_needs_an_app_token() -> None:
    with pytest.raises(ValidationError, match="app_token"):
        SlackWorkspace.Config.model_validate(
            {"bot_token": "x", "signing_secret": "y", "agents": ["U1"], "mode": "socket"}
        )


async def test_socket_mode_end_to_end(slack_desk: SlackDeskFactory, slack: SlackEmulator) -> None:
    slack.socket_mode = True
    s = await slack_desk(SOCKET)
    assert slack.socket_connections == 1
    channel = await first_contact(s)
    await slack.user_posts(ANN, channel.id, "Hello from Slack")
    await slack.user_posts(ANN, channel.id, "internal", thread_ts=slack.messages(channel.id)[-1]["ts"])
    await s.customers.sent.wait_for(lambda sent: len(sent) == 1)
    refused = await slack.slash_command(EVE, channel.id, "/relay", "close")
    assert "Only the desk's agents" in json.loads(refused[0].body)["text"]
    done = await slack.slash_command(ANN, channel.id, "/relay", "close")
    assert done[0].status == 200
    await until(lambda: slack.channels[channel.id].is_archived)
    await slack.idle()
    assert s.customers.texts_to("anna") == ["Hello from Slack"]
    # the HTTP route is not an open door in socket mode
    slack.socket_mode = False
    attempts = await slack.deliver_event(
        {"type": "message", "channel": channel.id, "user": ANN, "text": "x", "ts": "1.1"}
    )
    assert attempts[0].status == 404
