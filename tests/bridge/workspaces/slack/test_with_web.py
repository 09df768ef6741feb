"""A web widget visitor and Slack agents end to end: the web channel's HTTP API and the Slack emulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.workspaces.matrix.devserver import free_port
from tests.bridge.workspaces.slack.conftest import ANN, GROUP, until
from tests.conftest import DeskFactory
from tests.emulators.slack import SlackEmulator


@pytest.mark.parametrize("rooms", ["channel", "thread"])
async def test_a_web_visitor_is_answered_from_slack_and_internal_talk_stays_internal(
    rooms: str, slack: SlackEmulator, sqlite_url: str, make_desk: DeskFactory, tmp_path: Path
) -> None:
    port = free_port()
    team = slack.add_channel("support-team", [ANN]) if rooms == "thread" else ""
    room_lines = f'rooms: thread\n        team_channel: "{team}"' if team else "rooms: channel"
    yaml_text = f"""
plugins:
  - web:
      dev_secret_file: "{tmp_path / "web-secret"}"
      upload_dir: "{tmp_path / "uploads"}"
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
    env = {"SLACK_BOT_TOKEN": slack.token, "SLACK_SIGNING_SECRET": slack.signing_secret}
    await make_desk(sqlite_url, yaml_text, serve_http=True, http_port=port, environ=env)
    slack.request_url = f"http://127.0.0.1:{port}/slack/events"
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/web/api/session", json={}) as resp:
            assert resp.status == 200
            auth = {"Authorization": f"Bearer {(await resp.json())['token']}"}
        text = "Hi @here, where is my order? <https://evil.example|click>"
        async with http.post(
            f"{base}/web/api/messages", json={"client_id": "client-0001", "text": text}, headers=auth
        ) as resp:
            assert resp.status == 200, await resp.text()

        def customer_posts() -> list[tuple[str, dict[str, Any]]]:
            places = [team] if team else [c.id for c in slack.channels.values()]
            return [(where, m) for where in places for m in slack.messages(where) if m.get("username")]

        where, post = (await until(customer_posts, timeout=20))[0]
        assert post["seen"] == text and post["mentions"] == []  # shown as written, pings nobody

        if team:
            thread = str(post["thread_ts"])
            await slack.user_posts(ANN, team, "It ships today.", thread_ts=thread)
            await slack.user_posts(ANN, team, "(internal) who packs today?")
            await slack.user_posts(ANN, team, "Anything else?", thread_ts=thread)
        else:
            await slack.user_posts(ANN, where, "It ships today.")
            await slack.user_posts(ANN, where, "(internal) refund approved", thread_ts=str(post["ts"]))
            await slack.user_posts(ANN, where, "Anything else?")

        async def answers() -> list[str]:
            async with http.get(f"{base}/web/api/messages", headers=auth) as resp:
                assert resp.status == 200
                return [m["text"] for m in (await resp.json())["messages"] if m["side"] == "agent"]

        seen: list[str] = []

        async def two_answers() -> bool:
            seen[:] = await answers()
            return len(seen) >= 2

        await until(two_answers, timeout=20, what="the visitor's two answers")
        assert seen == ["It ships today.", "Anything else?"]
