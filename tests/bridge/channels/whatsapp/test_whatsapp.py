"""The WhatsApp channel end to end against the Cloud API emulator: verification, signatures, every inbound
type, statuses, media both ways, duplicates, and outbound within the platform's rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import aiohttp

from bot_core.api import AgentMessage, Attachment
from storage.models import Customer, InboundReceipt, Message
from tests.bridge.channels.stored import status_of, verified_phones
from tests.bridge.channels.whatsapp.conftest import TOKEN, VERIFY_TOKEN, WaDesk
from tests.emulators.whatsapp import WhatsAppEmulator

ANA = "4915112345678"


async def _room(whatsapp: WhatsAppEmulator, workspace: object, wa_id: str = ANA, text: str = "Hallo!") -> str:
    await whatsapp.customer_sends(wa_id, "Ana Díaz", text=text)
    await workspace.posts.wait_for(  # type: ignore[attr-defined]
        lambda posts: any(p.kind == "customer_message" for _, p in posts)
    )
    return str(workspace.room_of(wa_id).room_id)  # type: ignore[attr-defined]


async def test_the_webhook_verification_echoes_the_challenge_only_for_the_verify_token(
    whatsapp: WhatsAppEmulator, wa_desk: WaDesk
) -> None:
    await wa_desk()
    assert await whatsapp.verify(VERIFY_TOKEN, "1158201444") == (200, "1158201444")
    assert (await whatsapp.verify("guess", "1158201444"))[0] == 403


async def test_a_customer_and_an_agent_talk_both_ways_and_statuses_arrive(
    whatsapp: WhatsAppEmulator, wa_desk: WaDesk
) -> None:
    desk, _channel, workspace = await wa_desk()
    room = await _room(whatsapp, workspace, text="Is my order 1042 shipped?")
    assert workspace.texts(room, "customer_message") == ["Is my order 1042 shipped?"]
    assert workspace.rooms[room].posts[0].sender == "Ana Díaz"
    customer = await Customer.get()
    assert await verified_phones() == {f"+{ANA}"}  # contract 2: the verified phone
    until = datetime.fromtimestamp(whatsapp.last_inbound[ANA], UTC) + timedelta(hours=24)
    assert customer.attributes.get("whatsapp_window_until") == f"{until:%Y-%m-%d %H:%M} UTC"
    await workspace.posts.wait_for(
        lambda _: (
            (card := workspace.rooms[room].card) is not None
            and card.identities[0].window_until == f"{until:%Y-%m-%d %H:%M} UTC"
            and card.identities[0].window_open
        )
    )  # the card says until when free-form replies are possible, on the WhatsApp identity
    await whatsapp.wait_for(lambda: len(whatsapp.read_marks) == 1)  # blue ticks once stored

    await workspace.agent_writes(room, "Yes, it left today.")
    await whatsapp.wait_for(lambda: whatsapp.texts_to(ANA) == ["Yes, it left today."])
    sent_id = whatsapp.sent[0]["id"]
    await whatsapp.wait_for(lambda: sum(d.kind == "status" for d in whatsapp.webhook_deliveries) == 2)
    assert [d.status for d in whatsapp.webhook_deliveries if d.kind == "status"] == [200, 200]
    assert await desk.wait_settled(5)
    message = await Message.get(text="Yes, it left today.")
    assert message.channel_message_id == sent_id
    assert await status_of("whatsapp", sent_id, "delivered") == "delivered"  # kept on the message
    whatsapp.read_statuses = True
    await workspace.agent_writes(room, "Tracking: RD-1.")
    await whatsapp.wait_for(lambda: len(whatsapp.sent) == 2)
    assert await status_of("whatsapp", whatsapp.sent[1]["id"], "read") == "read"
    whatsapp.undeliverable_async.add(ANA)  # accepted, then a failed status with 131026
    await workspace.agent_writes(room, "Did it arrive?")
    await whatsapp.wait_for(lambda: len(whatsapp.sent) == 3)
    assert await status_of("whatsapp", whatsapp.sent[2]["id"], "failed") == "failed"


async def test_forged_or_missing_signatures_are_refused_and_nothing_is_stored(
    whatsapp: WhatsAppEmulator, wa_desk: WaDesk
) -> None:
    desk, _channel, _workspace = await wa_desk()
    assert whatsapp.webhook_url
    body = json.dumps(
        whatsapp._envelope(
            {
                "contacts": [{"profile": {"name": "Mallory"}, "wa_id": "15550001111"}],
                "messages": [
                    {
                        "from": "15550001111",
                        "id": "wamid.FORGED1",
                        "timestamp": "1700000000",
                        "type": "text",
                        "text": {"body": "refund me"},
                    }
                ],
            }
        )
    ).encode()
    headers_tried = [
        {},
        {"X-Hub-Signature-256": ""},
        {"X-Hub-Signature-256": whatsapp.sign(body, "another-secret")},
        {"X-Hub-Signature-256": whatsapp.sign(body + b" ")},
        {"X-Hub-Signature-256": whatsapp.sign(body).upper()},
        {"X-Hub-Signature-256": whatsapp.sign(body).replace("sha256=", "sha1=")},
    ]
    async with aiohttp.ClientSession() as http:
        for headers in headers_tried:
            async with http.post(whatsapp.webhook_url, data=body, headers=headers) as resp:
                assert resp.status == 401, headers
        assert await desk.wait_settled(5)
        assert await Message.all().count() == 0 and await InboundReceipt.all().count() == 0
        async with http.post(
            whatsapp.webhook_url, data=body, headers={"X-Hub-Signature-256": whatsapp.sign(body)}
        ) as resp:
            assert resp.status == 200  # the same body signed right is taken: the refusals were the check
    assert await desk.wait_settled(5)
    assert [m.text for m in await Message.all()] == ["refund me"]


async def test_a_notification_delivered_twice_is_handled_once(
    whatsapp: WhatsAppEmulator, wa_desk: WaDesk
) -> None:
    desk, _channel, workspace = await wa_desk()
    whatsapp.duplicate_webhooks = True
    await whatsapp.customer_sends(ANA, "Ana", text="first")
    await whatsapp.customer_sends(ANA, "Ana", text="second")
    assert [d.status for d in whatsapp.webhook_deliveries] == [200] * 4
    assert await desk.wait_settled(5)
    room = workspace.room_of(ANA).room_id
    assert workspace.texts(room, "customer_message") == ["first", "second"]
    assert await Message.all().count() == 2
    # a restart forgets what is in memory: the stored receipt drops it
    await desk.stop(timeout=5)
    desk, _channel, workspace = await wa_desk()
    raw = whatsapp.webhook_deliveries[0].body
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            str(whatsapp.webhook_url), data=raw, headers={"X-Hub-Signature-256": whatsapp.sign(raw)}
        ) as resp,
    ):
        assert resp.status == 200
    assert await desk.wait_settled(5)
    assert await Message.all().count() == 2


async def test_every_inbound_type_reaches_the_room_readably(
    whatsapp: WhatsAppEmulator, wa_desk: WaDesk
) -> None:
    desk, _channel, workspace = await wa_desk()
    first = await whatsapp.customer_sends(ANA, "Ana", text="hi")
    await whatsapp.customer_sends_media(
        ANA, "Ana", "image", b"\x89PNG\r\n\x1a\nimage-bytes", "image/png", caption="the damage"
    )
    await whatsapp.customer_sends_media(
        ANA, "Ana", "document", b"%PDF-1.4 invoice", "application/pdf", filename="invoice.pdf"
    )
    await whatsapp.customer_sends_media(ANA, "Ana", "audio", b"OggS voice", "audio/ogg")
    await whatsapp.customer_sends_media(ANA, "Ana", "video", b"\x00\x00\x00 ftypmp4", "video/mp4")
    await whatsapp.customer_sends(
        ANA, "Ana", "location", {"latitude": 52.52, "longitude": 13.405, "name": "Shop", "address": "Berlin"}
    )
    await whatsapp.customer_sends(
        ANA,
        "Ana",
        "contacts",
        [{"name": {"formatted_name": "Bo Lind"}, "phones": [{"phone": "+46 70 123 45 67", "type": "CELL"}]}],
    )
    await whatsapp.customer_sends(
        ANA,
        "Ana",
        "interactive",
        {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes, please"}},
    )
    await whatsapp.customer_sends(
        ANA,
        "Ana",
        "interactive",
        {"type": "list_reply", "list_reply": {"id": "s", "title": "Size M", "description": "in stock"}},
    )
    await whatsapp.customer_sends(ANA, "Ana", "button", {"text": "Talk to a person", "payload": "human"})
    await whatsapp.customer_sends(ANA, "Ana", "reaction", {"message_id": first["id"], "emoji": "👍"})
    assert await desk.wait_settled(10)
    room = workspace.room_of(ANA)
    texts = workspace.texts(room.room_id, "customer_message")
    assert texts[0] == "hi" and texts[1] == "the damage" and texts[2] == ""
    assert texts[5].startswith("📍 Shop, Berlin (52.52, 13.405) https://maps.google.com/?q=52.52,13.405")
    assert texts[6] == "👤 Bo Lind: +46 70 123 45 67"
    assert texts[7:] == ["Yes, please", "Size M (in stock)", "Talk to a person", "reacted 👍"]
    kinds = [p.attachments[0].kind for p in room.posts if p.kind == "customer_message" and p.attachments]
    assert kinds == ["image", "file", "audio", "video"]
    image = next(p.attachments[0] for p in room.posts if p.attachments)
    document = [p.attachments[0] for p in room.posts if p.attachments][1]
    assert document.name == "invoice.pdf" and document.mime_type == "application/pdf"
    async with aiohttp.ClientSession() as http:
        async with http.get(str(image.url)) as resp:  # the workspace fetches it through relaydesk
            assert resp.status == 200 and await resp.read() == b"\x89PNG\r\n\x1a\nimage-bytes"
        async with http.get(str(image.url).replace("sig=", "sig=0")) as resp:
            assert resp.status in (403, 404)
        assert TOKEN not in str(image.url)  # the access token never leaves the adapter
    reaction = room.posts[-1]
    assert reaction.reply_to == room.posts[0].ref  # shown as an answer to the message it reacts to


async def test_an_agents_file_is_uploaded_and_sent_as_media(
    whatsapp: WhatsAppEmulator, wa_desk: WaDesk
) -> None:
    desk, channel, workspace = await wa_desk()
    await whatsapp.customer_sends_media(ANA, "Ana", "image", b"\x89PNG photo", "image/png")
    assert await desk.wait_settled(5)
    room = workspace.room_of(ANA)
    photo = room.posts[0].attachments[0]

    await workspace.services.inbound(
        AgentMessage(
            workspace="desk",
            room_id=room.room_id,
            external_message_id="$files1",
            agent_id="@alice",
            agent_name="Alice",
            text="Here is the label:",
            attachments=(
                Attachment(kind="image", url=photo.url, mime_type="image/png", name="label.png"),
                Attachment(kind="file", url=photo.url, mime_type="application/pdf", name="label.pdf"),
            ),
        )
    )
    await whatsapp.wait_for(lambda: len(whatsapp.messages_to(ANA)) == 3)
    assert whatsapp.texts_to(ANA) == ["Here is the label:", "image:", "document:"]
    uploads = [c for c in whatsapp.calls if c.path.endswith("/media")]
    assert len(uploads) == 2 and all(c.status == 200 for c in uploads)
    image_id = whatsapp.messages_to(ANA)[1]["image"]["id"]
    assert whatsapp.media[image_id].data == b"\x89PNG photo"
    assert whatsapp.messages_to(ANA)[2]["document"]["filename"] == "label.pdf"
    assert channel.capabilities.waits_for_customer
