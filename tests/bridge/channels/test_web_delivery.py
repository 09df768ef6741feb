"""The widget tells the customer when their message is late reaching the agents, and when it never did.

The agents' side is the in-memory workspace, made to fail by the test (its ``failures`` hook) for as
long as the test wants; the outbox's window and notice delay are made a fraction of a second.
"""

from __future__ import annotations

from playwright.async_api import BrowserContext, expect

from bot_core.adapters import TemporaryFailure, Undeliverable
from bot_core.outbox import OutboxSettings
from storage.models import OutboxItem, OutboxStatus
from tests.bridge.channels import test_web
from tests.bridge.channels.test_web import WebDeskFactory, Widget

web_desk = test_web.web_desk  # the fixture: relaydesk with the web channel

SHORT_WINDOW = OutboxSettings(
    base_backoff=0.02, max_backoff=0.1, poll_interval=0.2, retry_window=2.0, notice_after=0.3
)


async def test_a_message_the_room_never_takes_is_pending_then_not_delivered_and_both_sides_are_told(
    browser_context: BrowserContext, web_desk: WebDeskFactory
) -> None:
    site = await web_desk(outbox=SHORT_WINDOW)
    page = await browser_context.new_page()
    await page.goto(f"{site.base}/web/demo")
    widget = Widget(page)
    await widget.open()
    await widget.write("Hello")
    await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")
    room_id = site.workspace.room_of(await site.subject()).room_id

    # the agents' workspace is down (502) for longer than the retry window
    site.workspace.failures = [TemporaryFailure("502 Bad Gateway") for _ in range(100_000)]
    await widget.write("My parcel 7 never came")
    late = widget.messages("customer").last
    await expect(late).to_have_attribute("data-state", "pending")
    await expect(late.locator(".meta")).to_contain_text("Not delivered yet, retrying")
    await expect(late).to_have_attribute("data-state", "undelivered", timeout=10_000)
    await expect(late.locator(".meta")).to_contain_text("Not delivered")
    site.workspace.failures.clear()  # the workspace is back: the agents are told what they missed
    await site.workspace.posts.wait_for(
        lambda _: any(
            "could not be shown here" in t and '"My parcel 7 never came"' in t
            for t in site.workspace.texts(room_id, "notice")
        )
    )

    # a permanent refusal gives up at once
    site.workspace.failures = [Undeliverable("M_FORBIDDEN: the bridge was kicked from the room")]
    await widget.write("Hello?")
    refused = widget.messages("customer").last
    await expect(refused).to_have_attribute("data-state", "undelivered")
    await site.workspace.posts.wait_for(
        lambda _: any("M_FORBIDDEN" in t and '"Hello?"' in t for t in site.workspace.texts(room_id, "notice"))
    )
    mirrors = [
        r
        for r in await OutboxItem.filter(target="room").order_by("id")
        if r.payload.get("kind") == "customer_message"
    ]
    assert [r.status for r in mirrors] == [OutboxStatus.SENT, OutboxStatus.FAILED, OutboxStatus.FAILED]

    # the history says so too, on a reload
    await page.reload()
    widget = Widget(page)
    await widget.open()
    await expect(widget.messages("customer")).to_have_count(3)
    states = [await m.get_attribute("data-state") for m in await widget.messages("customer").all()]
    assert states == ["delivered", "undelivered", "undelivered"]
