"""The SMS channel end to end against the Twilio emulator: signed webhooks over the public URL, MMS both
ways, status callbacks, opt-out and help keywords, segment warnings, pacing, duplicates and outages."""

from __future__ import annotations

import itertools

import aiohttp

from bot_core.api import AgentMessage, Attachment
from storage.models import Consent, InboundReceipt, Message, OutboxItem, OutboxStatus
from tests.bridge.channels.sms.conftest import AUTH_TOKEN, SmsDesk
from tests.bridge.channels.stored import status_of, verified_phones
from tests.emulators.twilio import TwilioEmulator, signature

CARL = "+4915112345678"


async def _room(twilio: TwilioEmulator, workspace: object, number: str = CARL, text: str = "Hi there") -> str:
    await twilio.customer_sends(number, text)
    await workspace.posts.wait_for(  # type: ignore[attr-defined]
        lambda posts: any(p.kind == "customer_message" for _, p in posts)
    )
    return str(workspace.room_of(number).room_id)  # type: ignore[attr-defined]


def _notices(workspace: object, room: str) -> list[str]:
    return workspace.texts(room, "notice")  # type: ignore[attr-defined,no-any-return]


async def _stopped(twilio: TwilioEmulator, workspace: object, room: str) -> None:
    """Carl texts STOP; the room is told he opted out."""
    await twilio.customer_sends(CARL, "STOP")
    await workspace.posts.wait_for(  # type: ignore[attr-defined]
        lambda _: any("opted out of service" in t for t in _notices(workspace, room))
    )


async def test_a_customer_and_an_agent_text_both_ways_with_status_callbacks(
    twilio: TwilioEmulator, sms_desk: SmsDesk
) -> None:
    desk, _channel, workspace = await sms_desk()
    room = await _room(twilio, workspace, text="Where is my parcel?")
    assert workspace.texts(room, "customer_message") == ["Where is my parcel?"]
    assert twilio.webhook_deliveries[0].status == 200 and "<Response/>" in twilio.webhook_deliveries[0].body
    assert await verified_phones() == {CARL}  # contract 2: the verified phone

    await workspace.agent_writes(room, "It arrives tomorrow.")
    await twilio.wait_for(lambda: twilio.texts_to(CARL) == ["It arrives tomorrow."])
    [sent] = twilio.messages_to(CARL)
    assert sent["from"] == twilio.number
    await twilio.wait_for(lambda: sum(d.kind == "status" for d in twilio.webhook_deliveries) == 2)
    statuses = [d for d in twilio.webhook_deliveries if d.kind == "status"]
    assert [d.status for d in statuses] == [204, 204]  # signed callbacks to the public URL, accepted
    assert statuses[0].url.endswith("/sms/status") and statuses[0].url.startswith("http://localhost:")
    assert await desk.wait_settled(5)
    assert (await Message.get(text="It arrives tomorrow.")).channel_message_id == sent["sid"]
    assert await status_of("sms", sent["sid"], "delivered") == "delivered"  # kept on the message
    twilio.undelivered.add(CARL)  # the carrier cannot reach the handset: "undelivered", 30003
    await workspace.agent_writes(room, "Are you there?")
    await twilio.wait_for(lambda: len(twilio.messages_to(CARL)) == 2)
    assert await status_of("sms", twilio.messages_to(CARL)[1]["sid"], "failed") == "failed"


async def test_forged_missing_or_wrong_url_signatures_are_refused_and_nothing_is_stored(
    twilio: TwilioEmulator, sms_desk: SmsDesk
) -> None:
    desk, _channel, _workspace = await sms_desk()
    assert twilio.webhook_url
    params = [
        ("MessageSid", "SM" + "0" * 32),
        ("From", "+15550001111"),
        ("To", twilio.number),
        ("Body", "refund me"),
    ]
    local_url = twilio.webhook_url.replace(
        "localhost", "127.0.0.1"
    )  # what the server saw, not what was called
    tries = [
        None,
        "",
        signature("another-token", twilio.webhook_url, params),
        signature(AUTH_TOKEN, local_url, params),
        signature(AUTH_TOKEN, twilio.webhook_url, [*params[:-1], ("Body", "refund me twice")]),
    ]
    async with aiohttp.ClientSession() as http:
        for sig in tries:
            headers = {} if sig is None else {"X-Twilio-Signature": sig}
            async with http.post(twilio.webhook_url, data=params, headers=headers) as resp:
                assert resp.status == 403, sig
        status_url = twilio.webhook_url.replace("/sms/webhook", "/sms/status")
        async with http.post(status_url, data=[("MessageSid", "SMx"), ("MessageStatus", "failed")]) as resp:
            assert resp.status == 403
        assert await desk.wait_settled(5)
        assert await Message.all().count() == 0 and await InboundReceipt.all().count() == 0
        good = {"X-Twilio-Signature": signature(AUTH_TOKEN, twilio.webhook_url, params)}
        async with http.post(twilio.webhook_url, data=params, headers=good) as resp:
            assert resp.status == 200
    assert await desk.wait_settled(5)
    assert [m.text for m in await Message.all()] == ["refund me"]


async def test_stop_refuses_replies_with_a_notice_and_start_restores_them(
    twilio: TwilioEmulator, sms_desk: SmsDesk
) -> None:
    desk, _channel, workspace = await sms_desk()
    room = await _room(twilio, workspace)
    await _stopped(twilio, workspace, room)
    await workspace.agent_writes(room, "Sorry to see you go, one last thing...")
    await workspace.posts.wait_for(lambda _: any("did not get" in t for t in _notices(workspace, room)))
    [refused] = [t for t in _notices(workspace, room) if "did not get" in t]
    assert "no consent for service" in refused and "STOP" in refused
    assert twilio.texts_to(CARL) == []  # never even tried: Twilio would have refused (21610)

    await twilio.customer_sends(CARL, "START")
    await workspace.posts.wait_for(
        lambda _: any("opted in to service" in t for t in _notices(workspace, room))
    )
    await workspace.agent_writes(room, "Welcome back!")
    await twilio.wait_for(lambda: twilio.texts_to(CARL) == ["Welcome back!"])
    assert await desk.wait_settled(5)


async def test_a_customer_who_texted_stop_and_writes_again_is_shown_as_blocked_until_start(
    twilio: TwilioEmulator, sms_desk: SmsDesk
) -> None:
    desk, _channel, workspace = await sms_desk()
    room = await _room(twilio, workspace)
    await _stopped(twilio, workspace, room)
    assert not any("until they text START" in t for t in _notices(workspace, room))

    await twilio.customer_sends(CARL, "Wait, where is my parcel?")
    await twilio.customer_sends(CARL, "Hello??")
    await workspace.posts.wait_for(lambda _: workspace.texts(room, "customer_message")[-1:] == ["Hello??"])
    assert await desk.wait_settled(5)
    blocked = [t for t in _notices(workspace, room) if "until they text START" in t]
    assert len(blocked) == 1  # told once for this opt-out, before any agent typed
    assert "texted STOP" in blocked[0]

    # an agent who answers anyway: Twilio refuses (21610) and the room says why
    await workspace.agent_writes(room, "It is on its way.")
    await workspace.posts.wait_for(lambda _: any("did not get" in t for t in _notices(workspace, room)))
    assert twilio.texts_to(CARL) == []

    # START lifts it; a later STOP is told again when they write after it
    await twilio.customer_sends(CARL, "START")
    await workspace.posts.wait_for(
        lambda _: any("opted in to service" in t for t in _notices(workspace, room))
    )
    await twilio.customer_sends(CARL, "STOP")
    await twilio.customer_sends(CARL, "one more thing")
    await workspace.posts.wait_for(
        lambda _: len([t for t in _notices(workspace, room) if "until they text START" in t]) == 2
    )
    assert await desk.wait_settled(5)


async def test_twilios_21610_records_the_opt_out_and_help_gets_the_help_text(
    twilio: TwilioEmulator, sms_desk: SmsDesk
) -> None:
    desk, _channel, workspace = await sms_desk()
    room = await _room(twilio, workspace)
    await twilio.customer_sends(CARL, "HELP")
    await twilio.wait_for(
        lambda: twilio.texts_to(CARL) == ["Acme support. Reply with your question. STOP to opt out."]
    )
    twilio.opted_out.add(CARL)  # opted out at Twilio without relaydesk hearing of it
    await workspace.agent_writes(room, "Here is your code.")
    await workspace.posts.wait_for(lambda _: any("did not get" in t for t in _notices(workspace, room)))
    [told] = [t for t in _notices(workspace, room) if "did not get" in t]
    assert "21610" in told
    record = await Consent.get(topic="service")
    assert record.granted is False and "21610" in record.source
    assert await desk.wait_settled(5)


async def test_mms_media_in_and_out(twilio: TwilioEmulator, sms_desk: SmsDesk) -> None:
    desk, _channel, workspace = await sms_desk()
    await twilio.customer_sends(CARL, "the broken part", media=[(b"\xff\xd8\xff jpeg bytes", "image/jpeg")])
    assert await desk.wait_settled(5)
    room = workspace.room_of(CARL)
    [post] = [p for p in room.posts if p.kind == "customer_message"]
    assert post.text == "the broken part" and post.attachments[0].kind == "image"
    link = str(post.attachments[0].url)
    assert AUTH_TOKEN not in link and "api.twilio" not in link
    async with aiohttp.ClientSession() as http:
        async with http.get(link) as resp:
            assert resp.status == 200 and await resp.read() == b"\xff\xd8\xff jpeg bytes"
        async with http.get(link.replace("sig=", "sig=0")) as resp:
            assert resp.status in (403, 404)

    await workspace.services.inbound(
        AgentMessage(
            workspace="desk",
            room_id=room.room_id,
            external_message_id="$mms1",
            agent_id="@alice",
            agent_name="Alice",
            text="Is it this one?",
            attachments=(Attachment(kind="image", url=link, mime_type="image/jpeg", name="part.jpg"),),
        )
    )
    await twilio.wait_for(lambda: len(twilio.messages_to(CARL)) == 1 and bool(twilio.fetched_media))
    [sent] = twilio.messages_to(CARL)
    assert sent["body"] == "Is it this one?" and len(sent["media_urls"]) == 1
    assert sent["media_urls"][0].startswith("http://localhost:")  # rewritten to the public URL for Twilio
    assert list(twilio.fetched_media.values()) == [b"\xff\xd8\xff jpeg bytes"]


async def test_a_reply_costing_many_segments_warns_the_agent(
    twilio: TwilioEmulator, sms_desk: SmsDesk
) -> None:
    desk, _channel, workspace = await sms_desk()
    room = await _room(twilio, workspace)
    await workspace.agent_writes(room, "Short and plain.")
    long_emoji = "Your order is on its way 🚚 " * 6  # 162 characters, UCS-2: 3 segments
    await workspace.agent_writes(room, long_emoji)
    await workspace.posts.wait_for(lambda _: any("segments" in t for t in _notices(workspace, room)))
    [warning] = [t for t in _notices(workspace, room) if "segments" in t]
    assert "cost 3 segments (UCS-2, because of '🚚'" in warning
    assert await desk.wait_settled(5)
    assert sum("segments" in t for t in _notices(workspace, room)) == 1  # the short one said nothing


async def test_sends_are_paced_per_number_and_survive_429s_and_a_5xx_storm(
    twilio: TwilioEmulator, sms_desk: SmsDesk
) -> None:
    desk, _channel, workspace = await sms_desk(rate=5)
    room = await _room(twilio, workspace)
    twilio.fail(429)
    twilio.outage(503)
    replies = [f"update {i}" for i in range(5)]
    for text in replies:
        await workspace.agent_writes(room, text)
    await workspace.posts.wait_for(
        lambda _: any("Not delivered to the customer yet" in t for t in _notices(workspace, room)), 20
    )
    twilio.restore()
    await twilio.wait_for(lambda: len(twilio.texts_to(CARL)) == 5, 20)
    assert twilio.texts_to(CARL) == replies  # once each, in order
    assert await desk.wait_settled(10)
    assert [r.status for r in await OutboxItem.filter(target="customer").order_by("id")] == [
        OutboxStatus.SENT
    ] * 5
    created = [c.at for c in twilio.calls if c.status == 201]
    # 5 per second: 200 ms apart (without pacing the five go out within a few ms of each other)
    assert all(b - a >= 0.15 for a, b in itertools.pairwise(created))


async def test_a_webhook_delivered_twice_is_handled_once(twilio: TwilioEmulator, sms_desk: SmsDesk) -> None:
    desk, _channel, workspace = await sms_desk()
    twilio.duplicate_webhooks = True
    await twilio.customer_sends(CARL, "one")
    await twilio.customer_sends(CARL, "two")
    assert await desk.wait_settled(5)
    assert workspace.texts(workspace.room_of(CARL).room_id, "customer_message") == ["one", "two"]
    assert len([d for d in twilio.webhook_deliveries if d.kind == "message"]) == 4
