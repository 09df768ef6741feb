"""What the shop learns about an event that was not (or not yet) sent: in the POST's answer when it is known
at once, and at ``GET /outreach/events/{id}`` later (deferred by quiet hours, skipped at send time, sent,
delivered, failed); and the same outcomes counted on ``/metrics``. All through the real HTTP routes."""

from __future__ import annotations

from datetime import UTC, datetime

from bot_core.api import Undeliverable
from tests.bot_core.test_relay_loop import doubles
from tests.conftest import DeskFactory
from tests.plugins.outreach.helpers import (
    ENV,
    Clock,
    customer,
    get_event,
    outreach_yaml,
    post_event,
    sample,
    scrape,
    settle,
    started,
    tick,
)

SHIPPED = {"type": "order_shipped", "variables": {"order_id": "A-1001"}}


def _event(event_id: str, email: str) -> dict[str, object]:
    return {**SHIPPED, "id": event_id, "customer": {"email": email}}


async def _opt_out_of_service(desk: object, user: str) -> None:
    from bot_core.desk import Desk

    assert isinstance(desk, Desk)
    _, workspace = doubles(desk)
    await workspace.agent_writes(workspace.room_of(user).room_id, "!consent service off")
    await settle(desk)


async def test_skips_failures_and_deliveries_are_answered_and_counted(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(
        sqlite_url, outreach_yaml(quiet=False, metrics_refresh=0), serve_http=True, environ=ENV
    )
    channel, _ = doubles(desk)
    await customer(desk, "alice", "Alice", email="alice@example.com")
    await customer(desk, "bob", "Bob", email="bob@example.com")
    await _opt_out_of_service(desk, "bob")

    # opted out: known at once, so said at once (200, not 202: nothing will be sent), and kept
    status, body = await post_event(desk, _event("e-bob", "bob@example.com"))
    assert status == 200
    assert body["status"] == "skipped" and body["event"] == "e-bob" and body["customer"] == 2
    assert body["reason"].startswith("opted out of service messages")
    status, again = await post_event(desk, _event("e-bob", "bob@example.com"))
    assert (status, again["status"], again["outcome"], again["reason"]) == (
        200,
        "duplicate",
        "skipped",
        body["reason"],
    )
    status, later = await get_event(desk, "e-bob")
    assert (status, later["status"], later["reason"], later["type"]) == (
        200,
        "skipped",
        body["reason"],
        "order_shipped",
    )
    # refusals say why in a field a program can read, and record nothing
    status, body = await post_event(desk, _event("e-nobody", "nobody@example.com"))
    assert (status, body["reason"]) == (404, "unknown_customer")
    assert (await get_event(desk, "e-nobody"))[0] == 404
    status, body = await post_event(desk, {**_event("e-gap", "alice@example.com"), "variables": {}})
    assert (status, body["reason"], body["missing"]) == (422, "missing_variable", ["order_id"])
    assert (await get_event(desk, "e-gap", token="wrong"))[0] == 401

    # a delivery the channel refuses: the event's outcome is "failed", with the channel's word
    channel.failures.append(Undeliverable("Forbidden: bot was blocked by the user"))
    assert (await post_event(desk, _event("e-fail", "alice@example.com")))[0] == 202
    await channel.sending.wait_for(lambda items: any("A-1001" in d.text for d in items))
    await settle(desk)
    status, failed = await get_event(desk, "e-fail")
    assert (status, failed["status"], failed["channel"]) == (200, "failed", "customers")
    assert "blocked by the user" in failed["error"]

    # one that went out and that the platform then reported delivered
    event = {**_event("e-ok", "alice@example.com"), "variables": {"order_id": "B-2"}}
    assert (await post_event(desk, event))[0] == 202
    items = await channel.sent.wait_for(lambda items: any("B-2" in d.text for d in items))
    [sent] = [d for d in items if "B-2" in d.text]
    await settle(desk)
    assert (await get_event(desk, "e-ok"))[1]["status"] == "sent"
    await channel.reports_status("alice", f"out{sent.outbox_id}", "delivered")
    await settle(desk)
    shown = (await get_event(desk, "e-ok"))[1]
    assert (shown["status"], shown["template"], shown["customer"]) == ("delivered", "order_shipped", 1)
    assert "sent_at" in shown and "delivery" not in shown

    got = await scrape(desk)
    events = "relaydesk_outreach_events"
    assert sample(got, events, type="order_shipped", status="skipped", window="24h") == 1
    assert sample(got, events, type="order_shipped", status="failed", window="24h") == 1
    assert sample(got, events, type="order_shipped", status="delivered", window="24h") == 1
    assert sample(got, events, type="order_shipped", status="sent", window="24h") == 0
    skipped = "relaydesk_outreach_events_skipped"
    assert sample(got, skipped, type="order_shipped", reason="opted_out", window="24h") == 1


# Saturday 28 March 2026, 21:30 UTC: 22:30 in Berlin (the night summer time begins), 05:30 in Shanghai
EVENING = datetime(2026, 3, 28, 21, 30, tzinfo=UTC)


async def test_a_deferred_event_can_be_followed_until_it_is_sent_or_skipped(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    clock = Clock(EVENING)
    desk = await started(
        await make_desk(
            sqlite_url,
            outreach_yaml(metrics_refresh=0),
            serve_http=True,
            environ=ENV,
            scheduler_clock=clock,
            scheduler_poll=3600,
        )
    )
    channel, _ = doubles(desk)
    await customer(desk, "berlin", "Bertha", email="b@example.com", timezone="Europe/Berlin")
    await customer(desk, "shanghai", "Shu", email="s@example.com", timezone="Asia/Shanghai")

    status, body = await post_event(desk, _event("e-b", "b@example.com"))
    assert status == 202
    assert body == {
        "status": "accepted",
        "event": "e-b",
        "customer": 1,
        "template": "order_shipped",
        "channel": "customers",
        "deferred_until": "2026-03-29T06:00:00+00:00",  # 08:00 in Berlin, summer time
        "reason": "quiet hours in Europe/Berlin",
    }
    status, body = await post_event(desk, _event("e-s", "s@example.com"))
    assert (status, body["deferred_until"]) == (202, "2026-03-29T00:00:00+00:00")
    await tick(desk, clock, EVENING)
    assert (await get_event(desk, "e-b"))[1]["status"] == "deferred"
    got = await scrape(desk)
    assert (
        sample(got, "relaydesk_outreach_events", type="order_shipped", status="deferred", window="24h") == 2
    )

    # Shu opts out during the night: at her morning the send is skipped, and the shop can read why
    await _opt_out_of_service(desk, "shanghai")
    await tick(desk, clock, datetime(2026, 3, 29, 0, 0, tzinfo=UTC))
    status, body = await get_event(desk, "e-s")
    assert (status, body["status"]) == (200, "skipped")
    assert body["reason"].startswith("opted out of service messages") and "deferred_until" not in body
    assert not any("on its way" in t for t in channel.texts_to("shanghai"))

    await tick(desk, clock, datetime(2026, 3, 29, 6, 0, tzinfo=UTC))
    await channel.sent.wait_for(lambda _: any("on its way" in t for t in channel.texts_to("berlin")))
    await settle(desk)
    status, body = await get_event(desk, "e-b")
    assert (status, body["status"], body["sent_at"]) == (200, "sent", "2026-03-29T06:00:00+00:00")
    assert "deferred_until" not in body and "reason" not in body
    got = await scrape(desk)
    assert sample(got, "relaydesk_outreach_events", type="order_shipped", status="sent", window="24h") == 1
    assert (
        sample(
            got, "relaydesk_outreach_events_skipped", type="order_shipped", reason="opted_out", window="24h"
        )
        == 1
    )
