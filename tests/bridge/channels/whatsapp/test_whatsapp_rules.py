"""WhatsApp's rules applied so agents need not think about them: the 24-hour window (template, held reply,
released when the customer answers), throughput and pair-rate limits, undeliverable numbers, and outages."""

from __future__ import annotations

import itertools

import aiohttp

from bot_core.api import AgentMessage, Attachment
from bot_core.outbox import OutboxSettings
from storage.models import Message, OutboxItem, OutboxStatus
from tests.bridge.channels.whatsapp.conftest import WaDesk
from tests.emulators.whatsapp import WINDOW_SECONDS, WhatsAppEmulator

ANA = "4915112345678"  # German number: the template goes out in German
BEN = "14155550123"


async def _room(whatsapp: WhatsAppEmulator, workspace: object, wa_id: str, name: str = "Ana") -> str:
    await whatsapp.customer_sends(wa_id, name, text="Hello")
    await workspace.posts.wait_for(  # type: ignore[attr-defined]
        lambda posts: any(p.kind == "customer_message" for _, p in posts)
    )
    return str(workspace.room_of(wa_id).room_id)  # type: ignore[attr-defined]


def _notices(workspace: object, room: str) -> list[str]:
    return workspace.texts(room, "notice")  # type: ignore[attr-defined,no-any-return]


async def test_a_reply_outside_the_window_sends_the_template_and_goes_out_when_the_customer_answers(
    whatsapp: WhatsAppEmulator, wa_desk: WaDesk
) -> None:
    desk, _channel, workspace = await wa_desk()
    room = await _room(whatsapp, workspace, ANA, "Ana")
    whatsapp.advance(WINDOW_SECONDS + 3600)  # a day and an hour of silence
    await workspace.agent_writes(room, "Your replacement is ready.", agent="@bea")
    await workspace.agent_writes(room, "You can pick it up tomorrow.", agent="@bea")

    await workspace.posts.wait_for(lambda _: any("Not sent yet" in t for t in _notices(workspace, room)))
    [held] = [t for t in _notices(workspace, room) if "Not sent yet" in t]
    assert (
        "24-hour window" in held and "'reopen_chat' (de)" in held and "as soon as the customer writes" in held
    )
    assert whatsapp.texts_to(ANA) == ["template:reopen_chat:de:Ana|Bea"]  # nothing free-form refused or lost
    assert not [c for c in whatsapp.calls if c.response.get("error", {}).get("code") == 131047]
    assert await desk.outbox.wait_settled(0.5) is False  # held, not given up

    await whatsapp.customer_sends(ANA, "Ana", text="Hi, what's up?")
    await whatsapp.wait_for(lambda: len(whatsapp.texts_to(ANA)) == 3)
    assert whatsapp.texts_to(ANA)[1:] == ["Your replacement is ready.", "You can pick it up tomorrow."]
    await workspace.posts.wait_for(
        lambda _: any("held reply went out" in t for t in _notices(workspace, room))
    )
    assert await desk.wait_settled(5)
    assert sum(t.startswith("template:") for t in whatsapp.texts_to(ANA)) == 1  # one template per silence


async def test_the_platforms_own_window_error_is_handled_the_same_way(
    whatsapp: WhatsAppEmulator, wa_desk: WaDesk
) -> None:
    desk, channel, workspace = await wa_desk()
    room = await _room(whatsapp, workspace, BEN, "Ben")
    whatsapp.advance(WINDOW_SECONDS + 60)
    channel.clock = lambda: whatsapp.now() - 120  # relaydesk's view lags: it thinks the window is open
    await workspace.agent_writes(room, "Still need help?")
    await workspace.posts.wait_for(lambda _: any("Not sent yet" in t for t in _notices(workspace, room)))
    refused = [c for c in whatsapp.calls if c.response.get("error", {}).get("code") == 131047]
    assert len(refused) == 1
    [held] = [t for t in _notices(workspace, room) if "Not sent yet" in t]
    assert "131047" in held and "'reopen_chat' (en_US)" in held
    await whatsapp.customer_sends(BEN, "Ben", text="yes")
    await whatsapp.wait_for(lambda: whatsapp.texts_to(BEN)[-1:] == ["Still need help?"])
    assert await desk.wait_settled(5)


async def test_the_window_error_reported_later_in_a_status_is_handled_the_same_way_once(
    whatsapp: WhatsAppEmulator, wa_desk: WaDesk
) -> None:
    desk, _channel, workspace = await wa_desk()
    room = await _room(whatsapp, workspace, BEN, "Ben")
    whatsapp.duplicate_webhooks = True  # every status arrives twice: nothing may double
    whatsapp.window_closes_async.add(BEN)  # accepted now, "failed" with 131047 a moment later
    await workspace.agent_writes(room, "Your refund is on its way.", agent="@bea")

    await workspace.posts.wait_for(lambda _: any("Not sent yet" in t for t in _notices(workspace, room)))
    [held] = [t for t in _notices(workspace, room) if "Not sent yet" in t]
    assert "'reopen_chat' (en_US)" in held and "Your refund is on its way." in held
    # the reply the platform took and then refused, and the template to reopen the conversation
    assert whatsapp.texts_to(BEN) == ["Your refund is on its way.", "template:reopen_chat:en_US:Ben|Bea"]
    assert not any("did not get" in t for t in _notices(workspace, room))  # not a failure
    [message] = await Message.filter(text="Your refund is on its way.")
    assert message.delivery_status != "failed"

    await whatsapp.customer_sends(BEN, "Ben", text="ok?")
    await whatsapp.wait_for(lambda: whatsapp.texts_to(BEN)[2:] == ["Your refund is on its way."])
    await workspace.posts.wait_for(
        lambda _: any("held reply went out" in t for t in _notices(workspace, room))
    )
    assert await desk.wait_settled(5)
    await whatsapp.wait_for(lambda: (message_status(whatsapp) or "") == "delivered")
    assert whatsapp.texts_to(BEN) == [
        "Your refund is on its way.",
        "template:reopen_chat:en_US:Ben|Bea",
        "Your refund is on its way.",
    ]
    await message.refresh_from_db()
    assert message.channel_message_id == whatsapp.messages_to(BEN)[-1]["id"]  # the copy that arrived
    assert sum("Not sent yet" in t for t in _notices(workspace, room)) == 1


def message_status(whatsapp: WhatsAppEmulator) -> str | None:
    """The last status the emulator reported for its last accepted message."""
    last = whatsapp.sent[-1]["id"]
    bodies = [d.body for d in whatsapp.webhook_deliveries if d.kind == "status" and last.encode() in d.body]
    return "delivered" if any(b"delivered" in b for b in bodies) else None


async def test_throughput_and_pair_rate_limits_wait_and_pace_and_lose_nothing(
    whatsapp: WhatsAppEmulator, wa_desk: WaDesk
) -> None:
    desk, _channel, workspace = await wa_desk(pair_interval=0.4)
    room = await _room(whatsapp, workspace, BEN, "Ben")
    whatsapp.pair_interval = 0.3  # Meta's pair rate, scaled down: relaydesk paces at 0.4 s
    whatsapp.fail(130429)  # and the number's throughput is hit once
    lines = ["one", "two", "three", "four"]
    for line in lines:
        await workspace.agent_writes(room, line)
    await whatsapp.wait_for(lambda: whatsapp.texts_to(BEN) == lines, 20)
    codes = [
        c.response.get("error", {}).get("code")
        for c in whatsapp.calls
        if c.path.endswith("/messages") and c.status != 200
    ]
    assert codes == [130429]  # the pacing kept every message within the pair rate
    sent_at = [
        c.at
        for c in whatsapp.calls
        if c.path.endswith("/messages") and c.status == 200 and "status" not in c.body
    ]
    assert all(b - a >= 0.35 for a, b in itertools.pairwise(sent_at))
    assert await desk.wait_settled(5)


async def test_an_undeliverable_number_is_told_to_the_room(
    whatsapp: WhatsAppEmulator, wa_desk: WaDesk
) -> None:
    desk, _channel, workspace = await wa_desk()
    room = await _room(whatsapp, workspace, BEN, "Ben")
    whatsapp.fail(131026)
    await workspace.agent_writes(room, "Can you hear me?")
    await workspace.posts.wait_for(lambda _: any("did not get" in t for t in _notices(workspace, room)))
    [told] = [t for t in _notices(workspace, room) if "did not get" in t]
    assert "131026" in told and '"Can you hear me?"' in told
    [row] = await OutboxItem.filter(target="customer")
    assert row.status is OutboxStatus.FAILED
    assert await desk.wait_settled(5)


async def test_a_5xx_storm_delivers_every_reply_once_and_in_order(
    whatsapp: WhatsAppEmulator, wa_desk: WaDesk
) -> None:
    outbox = OutboxSettings(
        base_backoff=0.02, max_backoff=0.1, poll_interval=0.1, retry_window=600, notice_after=0.5
    )
    desk, _channel, workspace = await wa_desk(outbox=outbox)
    room = await _room(whatsapp, workspace, BEN, "Ben")
    whatsapp.outage(503)
    replies = [f"reply {i}" for i in range(6)]
    for text in replies:
        await workspace.agent_writes(room, text)
    await workspace.posts.wait_for(
        lambda _: any("Not delivered to the customer yet" in t for t in _notices(workspace, room)), 20
    )
    await whatsapp.wait_for(lambda: sum(c.status == 503 for c in whatsapp.calls) >= 8, 20)
    whatsapp.restore()
    await whatsapp.wait_for(lambda: len(whatsapp.texts_to(BEN)) == 6, 20)
    assert whatsapp.texts_to(BEN) == replies
    assert await desk.wait_settled(10)
    rows = await OutboxItem.filter(target="customer").order_by("id")
    assert [r.status for r in rows] == [OutboxStatus.SENT] * 6


async def test_a_request_that_times_out_is_tried_again_and_delivered_once(
    whatsapp: WhatsAppEmulator, wa_desk: WaDesk
) -> None:
    desk, _channel, workspace = await wa_desk(extra="\n        request_timeout: 0.5")
    room = await _room(whatsapp, workspace, BEN, "Ben")
    whatsapp.hang()  # the next send is never answered
    await workspace.agent_writes(room, "Are you still there?")
    await workspace.agent_writes(room, "We can call you.")
    await whatsapp.wait_for(
        lambda: whatsapp.texts_to(BEN) == ["Are you still there?", "We can call you."], 20
    )
    assert await desk.wait_settled(5)
    [row, _] = await OutboxItem.filter(target="customer").order_by("id")
    assert "TimeoutError" in (row.last_error or "")  # tried again after the timeout


async def test_files_can_go_by_public_link_instead_of_an_upload(
    whatsapp: WhatsAppEmulator, wa_desk: WaDesk
) -> None:
    desk, _channel, workspace = await wa_desk(extra="\n        upload_media: false")
    await whatsapp.customer_sends_media(BEN, "Ben", "document", b"%PDF", "application/pdf", filename="a.pdf")
    assert await desk.wait_settled(5)
    room = workspace.room_of(BEN)
    url = str(room.posts[0].attachments[0].url)
    await workspace.services.inbound(
        AgentMessage(
            workspace="desk",
            room_id=room.room_id,
            external_message_id="$link1",
            agent_id="@alice",
            attachments=(Attachment(kind="file", url=url, mime_type="application/pdf", name="a.pdf"),),
        )
    )
    await whatsapp.wait_for(lambda: len(whatsapp.messages_to(BEN)) == 1)
    [sent] = whatsapp.messages_to(BEN)
    assert sent["document"] == {"link": url, "filename": "a.pdf"}  # public URL = bind address in this test
    assert not [c for c in whatsapp.calls if c.path.endswith("/media")]


async def test_without_a_template_the_reply_waits_and_the_room_is_told_to_reach_them_elsewhere(
    whatsapp: WhatsAppEmulator, wa_desk: WaDesk
) -> None:
    desk, _channel, workspace = await wa_desk(template=False)
    room = await _room(whatsapp, workspace, BEN, "Ben")
    whatsapp.advance(WINDOW_SECONDS + 60)
    await workspace.agent_writes(room, "Your refund went out.")
    await workspace.posts.wait_for(lambda _: any("Not sent yet" in t for t in _notices(workspace, room)))
    [held] = [t for t in _notices(workspace, room) if "Not sent yet" in t]
    assert "No re-engagement template is configured" in held
    assert whatsapp.texts_to(BEN) == []
    await whatsapp.customer_sends(BEN, "Ben", text="Any news?")
    await whatsapp.wait_for(lambda: whatsapp.texts_to(BEN) == ["Your refund went out."])
    assert await desk.wait_settled(5)


async def test_a_template_meta_refuses_gives_the_reply_up_and_says_why(
    whatsapp: WhatsAppEmulator, wa_desk: WaDesk
) -> None:
    whatsapp.templates.clear()  # the template was never approved
    desk, _channel, workspace = await wa_desk()
    room = await _room(whatsapp, workspace, BEN, "Ben")
    whatsapp.advance(WINDOW_SECONDS + 60)
    await workspace.agent_writes(room, "Hello again")
    await workspace.posts.wait_for(lambda _: any("did not get" in t for t in _notices(workspace, room)))
    [told] = [t for t in _notices(workspace, room) if "did not get" in t]
    assert "132001" in told
    assert await desk.wait_settled(5)


async def test_a_notification_for_another_number_or_not_json_stores_nothing(
    whatsapp: WhatsAppEmulator, wa_desk: WaDesk
) -> None:
    desk, _channel, workspace = await wa_desk()
    other = whatsapp._envelope(
        {"messages": [{"from": BEN, "id": "wamid.X1", "type": "text", "text": {"body": "x"}}]}
    )
    other["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "999999999"
    assert await whatsapp.post_webhook("message", other) == 200  # acknowledged, not ours
    raw = b"{not json"
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            str(whatsapp.webhook_url), data=raw, headers={"X-Hub-Signature-256": whatsapp.sign(raw)}
        ) as resp,
    ):
        assert resp.status == 400
    assert await desk.wait_settled(5)
    assert await Message.all().count() == 0 and workspace.rooms == {}
