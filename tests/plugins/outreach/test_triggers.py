"""The shop's events on ``POST /outreach/events``: the right template to the right customer, once per event
id; clear 4xx answers that change nothing; signatures; quiet hours in the customer's zone across a
daylight-saving change (on a clock the test moves)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta

from bot_core.api import StateStore, TemplateRef
from bot_core.testing import MemoryChannel, MemoryWorkspace
from storage.models import ScheduledTask
from storage.ratelimit import MemoryRateLimits
from tests.bot_core.test_relay_loop import doubles
from tests.conftest import DeskFactory
from tests.plugins.outreach.helpers import (
    ENV,
    SIGNING,
    Clock,
    customer,
    outreach_yaml,
    post_event,
    settle,
    started,
    tick,
)

SHIPPED = {
    "id": "evt-1001",
    "type": "order_shipped",
    "customer": {"email": "Alice@Example.com"},
    "variables": {"order_id": "A-1001"},
}


async def _tasks() -> int:
    return await ScheduledTask.filter(plugin="outreach").count()


async def test_an_event_sends_its_template_once_even_when_posted_twice(
    database_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(database_url, outreach_yaml(quiet=False), serve_http=True, environ=ENV)
    channel, workspace = doubles(desk)
    await customer(desk, "u1", "Alice Liddell", email="alice@example.com", external_id="shop-42")

    assert await post_event(desk, SHIPPED) == (
        202,
        {
            "status": "accepted",
            "event": "evt-1001",
            "customer": 1,
            "template": "order_shipped",
            "channel": "customers",
        },
    )
    status, again = await post_event(desk, SHIPPED)
    assert (status, again["status"], again["event"]) == (200, "duplicate", "evt-1001")
    assert again["outcome"] in ("scheduled", "sent")  # the send may have run already
    expected = "Hi Alice, your order A-1001 is on its way."
    await channel.sent.wait_for(lambda _: expected in channel.texts_to("u1"))
    await desk.scheduler.tick()  # any second task would fire now
    await settle(desk)
    assert channel.texts_to("u1").count(expected) == 1
    assert await post_event(desk, SHIPPED) == (
        200,
        {"status": "duplicate", "event": "evt-1001", "outcome": "sent"},
    )
    by_shop_id = {
        **SHIPPED,
        "id": "evt-1002",
        "customer": {"external_id": "shop-42"},
        "variables": {"order_id": "B-2"},
    }
    assert (await post_event(desk, by_shop_id))[0] == 202
    await channel.sent.wait_for(lambda _: "Hi Alice, your order B-2 is on its way." in channel.texts_to("u1"))
    # the room shows the outreach as context, then the message, in the customer's room
    notices = workspace.texts(workspace.room_of("u1").room_id, "notice")
    assert "📣 Outreach: template 'order_shipped' (event:order_shipped)" in notices
    assert any(expected in n for n in notices)

    # the customer's answer lands in the same room and continues the outreach's conversation
    await channel.customer_writes("u1", "Great, thanks!")
    await settle(desk)
    room = workspace.room_of("u1")
    assert workspace.texts(room.room_id, "customer_message")[-1] == "Great, thanks!"


async def test_bad_requests_get_a_clear_4xx_and_change_nothing(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, outreach_yaml(quiet=False), serve_http=True, environ=ENV)
    channel, _ = doubles(desk)
    await customer(desk, "u1", "", email="alice@example.com")  # no name: no first_name
    before = (await _tasks(), len(channel.sent.items))

    status, body = await post_event(desk, SHIPPED, token="wrong")
    assert (status, body["error"]) == (401, "missing or wrong bearer token")
    status, body = await post_event(desk, b"{not json")
    assert (status, body["error"]) == (400, "the body is not JSON (UTF-8)")
    status, body = await post_event(desk, {**SHIPPED, "type": "order_lost"})
    assert status == 422 and body["error"] == "unknown event type 'order_lost' (known: order_shipped)"
    status, body = await post_event(desk, {**SHIPPED, "customer": {"email": "bob@example.com"}})
    assert (status, body["error"]) == (404, "no customer with email 'bob@example.com'")
    status, body = await post_event(desk, {**SHIPPED, "customer": {"phone": "0151 123"}})
    assert (status, body["error"]) == (400, "customer.phone must be in E.164 form (+4915112345678)")
    status, body = await post_event(desk, {**SHIPPED, "customer": {"email": "a@b.c", "phone": "+49151"}})
    assert status == 400 and "exactly one of" in body["error"]
    status, body = await post_event(desk, {**SHIPPED, "extra": 1})
    assert (status, body["error"]) == (400, "unknown fields: extra")

    # a missing variable: never "Hi ," - refused with the names, nothing stored
    status, body = await post_event(desk, {**SHIPPED, "variables": {}})
    assert status == 422
    assert body == {
        "error": "template 'order_shipped': no value for first_name, order_id",
        "reason": "missing_variable",
        "missing": ["first_name", "order_id"],
    }
    assert (await _tasks(), len(channel.sent.items)) == before
    # the same event id with the values is then accepted: the refusal recorded nothing
    fixed = {**SHIPPED, "variables": {"order_id": "A-1001", "first_name": "Alice"}}
    assert (await post_event(desk, fixed))[0] == 202


async def test_a_signed_route_refuses_unsigned_and_tampered_events(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, outreach_yaml(signing=True, quiet=False), serve_http=True, environ=ENV)
    channel, _ = doubles(desk)
    await customer(desk, "u1", "Alice", email="alice@example.com")
    raw = json.dumps(SHIPPED).encode()
    stamp = str(int(time.time()))
    signature = (
        "sha256=" + hmac.new(SIGNING.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    )

    status, body = await post_event(desk, raw)
    assert status == 401 and "X-Relaydesk-Signature" in body["error"]
    tampered = raw.replace(b"A-1001", b"A-9999")
    headers = {"X-Relaydesk-Timestamp": stamp, "X-Relaydesk-Signature": signature}
    assert (await post_event(desk, tampered, headers=headers))[1] == {
        "error": "the signature does not match the body"
    }
    old = {"X-Relaydesk-Timestamp": str(int(time.time()) - 3600), "X-Relaydesk-Signature": signature}
    assert (await post_event(desk, raw, headers=old))[0] == 401
    assert await _tasks() == 0
    assert (await post_event(desk, raw, headers=headers))[0] == 202
    await channel.sent.wait_for(
        lambda _: "Hi Alice, your order A-1001 is on its way." in channel.texts_to("u1")
    )


# Saturday 28 March 2026, 21:30 UTC: 22:30 in Berlin (the night summer time begins), 05:30 in Shanghai
EVENING = datetime(2026, 3, 28, 21, 30, tzinfo=UTC)


async def test_quiet_hours_hold_each_send_until_the_customers_own_morning(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    clock = Clock(EVENING)
    desk = await started(
        await make_desk(
            sqlite_url,
            outreach_yaml(),
            serve_http=True,
            environ=ENV,
            scheduler_clock=clock,
            scheduler_poll=3600,
        )
    )
    channel, _ = doubles(desk)
    await customer(desk, "berlin", "Bertha", email="b@example.com", timezone="Europe/Berlin")
    await customer(desk, "shanghai", "Shu", email="s@example.com", timezone="Asia/Shanghai")
    await customer(desk, "ny", "Nora", email="n@example.com", timezone="America/New_York")
    for n, email in enumerate(("b@example.com", "s@example.com", "n@example.com")):
        event = {**SHIPPED, "id": f"evt-{n}", "customer": {"email": email}}
        assert (await post_event(desk, event))[0] == 202
    await tick(desk, clock, EVENING)

    def got(user: str) -> bool:
        return any("is on its way" in t for t in channel.texts_to(user))

    await channel.sent.wait_for(lambda _: got("ny"))  # 17:30 in New York: sent at once
    assert not got("berlin") and not got("shanghai")  # their night: both wait, neither blocks New York
    # 08:00 in Shanghai (00:00 UTC): Shu's morning
    await tick(desk, clock, datetime(2026, 3, 28, 23, 59, tzinfo=UTC))
    assert not got("shanghai")
    await tick(desk, clock, datetime(2026, 3, 29, 0, 0, tzinfo=UTC))
    await channel.sent.wait_for(lambda _: got("shanghai"))
    # 08:00 in Berlin is 06:00 UTC that Sunday: the clocks went forward at 02:00 (it was 07:00 UTC the day before)
    await tick(desk, clock, datetime(2026, 3, 29, 5, 59, tzinfo=UTC))
    assert not got("berlin")
    await tick(desk, clock, datetime(2026, 3, 29, 6, 0, tzinfo=UTC))
    await channel.sent.wait_for(lambda _: got("berlin"))
    await tick(desk, clock, datetime(2026, 3, 29, 12, 0, tzinfo=UTC))
    assert [sum("is on its way" in t for t in channel.texts_to(u)) for u in ("berlin", "shanghai", "ny")] == [
        1,
        1,
        1,
    ]


async def test_a_telegram_customer_gets_the_template_in_their_language(
    telegram: object, sqlite_url: str, make_desk: DeskFactory
) -> None:
    from tests.bridge.channels.telegram.conftest import ENV as TELEGRAM_ENV
    from tests.bridge.channels.telegram.conftest import telegram_entry
    from tests.emulators.telegram import TelegramEmulator

    assert isinstance(telegram, TelegramEmulator)
    yaml_text = outreach_yaml(quiet=False, channels=telegram_entry(telegram).lstrip("\n") + "\n")
    desk = await make_desk(sqlite_url, yaml_text, serve_http=True, environ={**ENV, **TELEGRAM_ENV})
    await telegram.customer_sends(telegram.user(1001, "小明", language_code="zh-hans"), "你好")
    workspace = desk.plugins["desk"]
    assert isinstance(workspace, MemoryWorkspace)
    await workspace.posts.wait_for(lambda items: any(p.text == "你好" for _, p in items))
    await settle(desk)
    event = {**SHIPPED, "customer": {"channel": "telegram", "user": "1001"}}
    status, body = await post_event(desk, event)
    assert (status, body["channel"]) == (202, "telegram")
    await telegram.wait_for(lambda: "小明，您好！您的订单 A-1001 已发货。" in telegram.texts_to(1001))  # noqa: RUF001


async def test_a_whatsapp_customer_gets_the_approved_template_chosen(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    # the channel double named like the WhatsApp channel instance: the variant is chosen by that name
    channels = '  - whatsapp: {use: "bot_core.testing:MemoryChannel"}\n'
    desk = await make_desk(
        sqlite_url, outreach_yaml(quiet=False, channels=channels), serve_http=True, environ=ENV
    )
    whatsapp = desk.plugins["whatsapp"]
    assert isinstance(whatsapp, MemoryChannel)
    await whatsapp.customer_writes(
        "+4915112345678", "hallo", name="Wanda Maximoff", attributes={"phone": "+4915112345678"}
    )
    await settle(desk)
    status, body = await post_event(desk, {**SHIPPED, "customer": {"phone": "+4915112345678"}})
    assert (status, body["channel"]) == (202, "whatsapp")
    expected = "Hi Wanda, your order A-1001 is on its way."
    await whatsapp.sent.wait_for(lambda _: expected in whatsapp.texts_to("+4915112345678"))
    [delivery] = [d for d in whatsapp.sent.items if d.text == expected]
    assert (
        (delivery.kind, delivery.template)
        == (
            "template",
            TemplateRef("order_shipped_v2", "en", ("Wanda", "A-1001")),
        )
    )  # the channel gets the approved template with its rendering (test_whatsapp_templates.py: the Graph side)
    sent = await StateStore("outreach", "customer:1").get("sent:event:evt-1001")
    assert sent["approved_template"] == {
        "name": "order_shipped_v2",
        "language": "en",
        "variables": ["Wanda", "A-1001"],
    }


async def test_rate_limits_hold_sends_back_without_losing_them(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    clock = Clock(datetime(2026, 6, 1, 10, 0, tzinfo=UTC))  # noon in Berlin: no quiet hours
    limits = MemoryRateLimits(clock=lambda: clock.at.timestamp())  # the buckets refill on the test's clock
    yaml_text = outreach_yaml(rate="{per_minute: 2, per_channel: {customers: 1}}")
    desk = await started(
        await make_desk(
            sqlite_url,
            yaml_text,
            serve_http=True,
            environ=ENV,
            scheduler_clock=clock,
            scheduler_poll=3600,
            rate_limits=limits,
        )
    )
    channel, _ = doubles(desk)
    for n in range(3):
        await customer(desk, f"u{n}", f"Cust{n}", email=f"c{n}@example.com")
        assert (
            await post_event(desk, {**SHIPPED, "id": f"e{n}", "customer": {"email": f"c{n}@example.com"}})
        )[0] == 202

    def reached() -> int:
        return sum(any("is on its way" in t for t in channel.texts_to(f"u{n}")) for n in range(3))

    await tick(desk, clock, clock.at)
    await channel.sent.wait_for(lambda _: reached() == 1)  # one a minute on this channel
    await tick(desk, clock, clock.at + timedelta(seconds=30))
    assert reached() == 1
    await tick(desk, clock, clock.at + timedelta(seconds=31))  # a minute after the first
    await channel.sent.wait_for(lambda _: reached() == 2)
    await tick(desk, clock, clock.at + timedelta(seconds=61))
    await channel.sent.wait_for(lambda _: reached() == 3)
    await tick(desk, clock, clock.at + timedelta(minutes=5))
    assert [sum("is on its way" in t for t in channel.texts_to(f"u{n}")) for n in range(3)] == [1, 1, 1]
