"""The daily digest in a Slack workspace: the text and the PNG chart arrive as one message in the team's ops
channel through Slack's external upload flow (the Slack emulator, real HTTP), once, even when the row is
sent again."""

from __future__ import annotations

import asyncio
import struct
from datetime import UTC, datetime
from typing import cast

from bridge.workspaces.matrix.devserver import free_port
from bridge.workspaces.slack import SlackWorkspace
from plugins.supervisor.digest import CHART_SIZE
from tests.bot_core.test_scheduler import Clock
from tests.bridge.workspaces.slack.conftest import ANN, BOB, GROUP, slack_yaml
from tests.conftest import DeskFactory
from tests.emulators.slack import SlackEmulator

SUPERVISOR = """  - supervisor:
      use: "plugins.supervisor:SupervisorPlugin"
      config:
        teams: {billing: {timezone: Europe/Berlin}}
        alerts: {queue_length: null, oldest_wait: null, first_response_breaches: null, delivery_failures: null, adapter_down: false}
        digest: {at: "08:00"}
"""


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_the_digest_and_its_chart_reach_the_slack_ops_channel_once(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    slack = SlackEmulator()
    slack.add_user(ANN, "ann", real_name="Ann Agent")
    slack.add_user(BOB, "bob", real_name="Bob Agent")
    slack.add_usergroup(GROUP, [BOB])
    await slack.start()
    try:
        clock = Clock(datetime(2026, 3, 28, 5, 0, tzinfo=UTC))  # Saturday 06:00 in Berlin
        desk = await make_desk(
            sqlite_url,
            slack_yaml(slack).rstrip() + "\n" + SUPERVISOR,
            serve_http=True,
            http_port=free_port(),
            environ={"SLACK_BOT_TOKEN": slack.token, "SLACK_SIGNING_SECRET": slack.signing_secret},
            scheduler_clock=clock,
            scheduler_poll=3600,
        )
        await asyncio.wait_for(desk.scheduler.first_scan_done.wait(), 10)
        clock.at = datetime(2026, 3, 28, 7, 0, tzinfo=UTC)  # 08:00 in Berlin
        await desk.scheduler.tick()
        assert await desk.wait_settled(20)

        [ops] = [c for c in slack.channels.values() if c.name.endswith("ops-billing")]
        assert ops.is_private and ANN in ops.members  # the agents are invited
        [(message, file)] = slack.shared_files(ops.id)
        first = "Daily digest, billing: Friday 27 March 2026 (Europe/Berlin), against Friday 20 March"
        assert message["text"].splitlines()[0] == first  # the digest's text is the file's comment
        assert message["subtype"] == "file_share" and message["bot_id"] == slack.bot_id
        assert (file["name"], file["mimetype"], file["filetype"]) == (
            "digest-2026-03-27.png",
            "image/png",
            "png",
        )
        assert _png_size(file["data"]) == CHART_SIZE
        assert file["alt_txt"] == first
        assert [m for m, _ in slack.calls if m.startswith("files.")] == [
            "files.getUploadURLExternal",
            "files.completeUploadExternal",
        ]

        # the row sent again (a retry after a crash before its sent mark): Slack shows it once
        workspace = cast(SlackWorkspace, desk.plugins["slack"])
        key = "ops:supervisor:digest:billing:2026-03-27"  # the outbox row's key
        await workspace.post_image_to_channel("ops-billing", "again", file["data"], "x.png", key=key)
        await workspace.post_to_channel("ops-billing", "an alert", key="alert:billing:x:1:on")
        await workspace.post_to_channel("ops-billing", "an alert", key="alert:billing:x:1:on")
        assert len(slack.shared_files(ops.id)) == 1
        assert [m["text"] for m in ops.messages if not m.get("files")][-1:] == ["an alert"]
        assert sum(m["text"] == "an alert" for m in ops.messages) == 1
    finally:
        await slack.idle()
        await slack.stop()
