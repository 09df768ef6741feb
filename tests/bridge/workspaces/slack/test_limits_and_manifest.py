"""Rate limits (the pacing, 429s end to end) and the app manifest's scopes, against the emulator."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import yaml

from bench.slack_burst import run_burst
from bot_core.api import Attachment, RetryAfter
from bridge.workspaces.slack.limits import MethodLimits
from tests.bridge.workspaces.slack.conftest import ANN, SlackDeskFactory, until
from tests.bridge.workspaces.slack.test_channel_rooms import first_contact
from tests.bridge.workspaces.slack.test_thread_rooms import thread_config
from tests.emulators.slack import Limit, SlackEmulator

MANIFEST = Path(__file__).parents[4] / "docs" / "slack-manifest.yaml"
EVENT_SCOPES = {"message.channels": "channels:history", "message.groups": "groups:history"}


async def test_calls_are_paced_per_method_and_far_slots_go_back_to_the_outbox() -> None:
    limits = MethodLimits({"conversations.create": 600}, max_wait=0.25, max_waiters=0)  # 10/s, burst 3

    async def create() -> str:
        return "ok"

    started = time.monotonic()
    for _ in range(4):  # two of the burst (one is kept in hand), then one every 0.1 s
        await limits.call("conversations.create", create)
    assert 0.15 <= time.monotonic() - started < 0.5
    results = await asyncio.gather(
        *(limits.call("conversations.create", create) for _ in range(10)), return_exceptions=True
    )
    sent = [r for r in results if r == "ok"]
    far = [r for r in results if isinstance(r, RetryAfter)]
    assert sent and far and len(sent) + len(far) == 10  # the queue is capped at 0.25 s of waiting
    assert all(r.seconds > 0.25 for r in far)
    await limits.call("users.info", create)  # other methods have their own pace


async def test_a_429_waits_as_slack_asked_and_nothing_is_lost(
    slack_desk: SlackDeskFactory, slack: SlackEmulator
) -> None:
    # Slack is stricter than relaydesk was told: 429s with Retry-After, and every message still arrives in order
    slack.fractional_retry_after = True
    slack.post_per_channel = Limit(per_minute=120, burst=1)
    s = await slack_desk(
        'undo_seconds: 0\n        post_per_channel_per_minute: 6000\n        rate_limits: {"chat.postMessage": 6000}'
    )
    channel = await first_contact(s, "first")
    for n in range(5):
        await s.customers.customer_writes("anna", f"more {n}", name="Anna Müller")
    wanted = ["first"] + [f"more {n}" for n in range(5)]
    await until(
        lambda: [m["text"] for m in slack.messages(channel.id) if m.get("username")] == wanted, timeout=20
    )
    assert slack.rate_limited.get("chat.postMessage", 0) > 0
    assert s.workspace.limits.retry_afters.get("chat.postMessage", 0) > 0


async def test_the_manifest_asks_exactly_the_scopes_used(
    slack_desk: SlackDeskFactory, slack: SlackEmulator
) -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    slack.scopes = frozenset(scopes)  # the emulator refuses anything else (missing_scope)
    # both room models, commands, buttons, files, statuses: everything the workspace does
    s = await slack_desk()
    channel = await first_contact(s)
    await slack.slash_command(ANN, channel.id, "/relay", "claim")
    await slack.user_uploads(ANN, channel.id, "a.txt", b"abc", "text/plain", text="file")
    await s.customers.sent.wait_for(lambda sent: len(sent) == 1)
    async with __import__("aiohttp").ClientSession() as http:
        async with http.get(str(s.customers.sent.items[0].attachments[0].url)) as response:
            assert response.status == 200
    await s.customers.reports_status("anna", f"out{s.customers.sent.items[0].outbox_id}", "delivered")
    await until(lambda: "reactions:write" in slack.scopes_needed)  # the status's reaction
    await s.desk.stop(timeout=5)
    slack.public_files["x.txt"] = b"x"
    t = await slack_desk(thread_config(slack))
    attachment = Attachment(kind="file", url=f"{slack.base_url}/public/x.txt", name="x.txt")
    await t.customers.customer_writes("kim", "hi", name="Kim", attachments=(attachment,))
    team = slack.channel_named("support-team").id
    await until(lambda: any(m.get("username") for m in slack.messages(team)))
    assert slack.files and all(f["data"] for f in slack.files.values())
    used = set(slack.scopes_needed) | {"commands", "files:read"} | set(EVENT_SCOPES.values())
    assert used == scopes
    assert set(manifest["settings"]["event_subscriptions"]["bot_events"]) == set(EVENT_SCOPES)
    assert not any(
        "missing_scope" in str(call) for call in slack.calls
    )  # (an error answer would have failed the flows above)


async def test_the_burst_bench_delivers_everything_in_order() -> None:
    result = await run_burst(customers=12, messages=2, speedup=120)
    assert result.problems == []
    assert result.minimum > 0 and result.drain > 0
    assert result.line().endswith("x")
    await asyncio.sleep(0)
