"""What customers send on Telegram, as the room shows it: media, captions, edits, /start links, replies."""

from __future__ import annotations

import time

import aiohttp
from aiogram.utils.payload import encode_payload

from bridge.workspaces.matrix.devserver import free_port
from storage.models import Customer, Direction, Message
from tests.bridge.channels.telegram.conftest import ENV, TOKEN, doubles_yaml, parts
from tests.conftest import DeskFactory
from tests.emulators.telegram import TelegramEmulator

JPEG = b"\xff\xd8\xff\xe0" + b"fake jpeg body" * 40
PDF = b"%PDF-1.4 invoice"
OGG = b"OggS voice"
WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 "


async def _fetch(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.read()


async def test_photos_documents_voice_and_stickers_reach_the_room_with_their_bytes(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    port = free_port()
    desk = await make_desk(
        sqlite_url, doubles_yaml(telegram, port=port), serve_http=True, http_port=port, environ=ENV
    )
    _channel, workspace = parts(desk)
    lena = telegram.user(2001, "Lena")
    await telegram.customer_sends(lena, photo=JPEG, caption="the box arrived like this")
    await telegram.customer_sends(lena, document=("invoice-1042.pdf", PDF, "application/pdf"))
    await telegram.customer_sends(lena, voice=OGG)
    await telegram.customer_sends(lena, sticker=WEBP)
    await workspace.posts.wait_for(lambda posts: sum(p.kind == "customer_message" for _, p in posts) == 4)
    posts = [p for p in workspace.room_of("2001").posts if p.kind == "customer_message"]
    assert [p.text for p in posts] == ["the box arrived like this", "", "", "👍"]
    kinds = [(a.kind, a.mime_type) for p in posts for a in p.attachments]
    assert kinds == [
        ("image", "image/jpeg"),
        ("file", "application/pdf"),
        ("audio", "audio/ogg"),
        ("sticker", "image/webp"),
    ]
    assert posts[1].attachments[0].name == "invoice-1042.pdf"
    for post, expected in zip(posts, (JPEG, PDF, OGG, WEBP), strict=True):
        url = post.attachments[0].url
        assert url is not None and url.startswith(f"http://127.0.0.1:{port}/telegram/files/")
        assert TOKEN.split(":")[1] not in url  # links never carry the bot token
        assert await _fetch(url) == (200, expected)
    forged = posts[0].attachments[0].url.split("?")[0] + "?sig=" + "0" * 32  # type: ignore[union-attr]
    assert (await _fetch(forged))[0] == 403


async def test_files_are_served_as_safe_downloads_and_their_links_expire(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    port = free_port()
    desk = await make_desk(
        sqlite_url, doubles_yaml(telegram, port=port), serve_http=True, http_port=port, environ=ENV
    )
    _channel, workspace = parts(desk)
    ines = telegram.user(2011, "Ines")
    await telegram.customer_sends(ines, document=("page.html", b"<script>alert(1)</script>", "text/html"))
    await telegram.customer_sends(ines, photo=JPEG)
    await workspace.posts.wait_for(lambda posts: sum(p.kind == "customer_message" for _, p in posts) == 2)
    html, photo = [p.attachments[0] for p in workspace.room_of("2011").posts if p.kind == "customer_message"]
    assert html.url is not None and photo.url is not None
    async with aiohttp.ClientSession() as http:
        async with http.get(html.url) as resp:
            assert resp.status == 200 and await resp.read() == b"<script>alert(1)</script>"
            assert resp.headers["Content-Disposition"].startswith("attachment")
            assert "sandbox" in resp.headers["Content-Security-Policy"]
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
        async with http.get(photo.url) as resp:
            assert resp.status == 200 and resp.headers["Content-Disposition"].startswith("inline")
        links = desk.plugins["telegram"]._links  # type: ignore[attr-defined]
        file_id = html.platform_file_id
        expired = links.signer.query(file_id, "2011", expires_at=time.time() - 5)
        async with http.get(f"{html.url.split('?')[0]}?{expired}") as resp:
            assert resp.status == 410


async def test_an_edited_message_updates_the_mirrored_one(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, doubles_yaml(telegram), environ=ENV)
    _channel, workspace = parts(desk)
    max_ = telegram.user(2002, "Max")
    sent = await telegram.customer_sends(max_, "my order is 1024")
    await workspace.posts.wait_for(lambda posts: any(p.kind == "customer_message" for _, p in posts))
    await telegram.customer_edits(max_, sent["message_id"], "my order is 1042")
    await workspace.posts.wait_for(lambda posts: sum(p.kind == "customer_message" for _, p in posts) == 2)
    original, edit = [p for p in workspace.room_of("2002").posts if p.kind == "customer_message"]
    assert (edit.text, edit.edit_of) == ("my order is 1042", original.ref)
    assert await desk.wait_settled(10)
    [stored] = await Message.filter(direction=Direction.INBOUND)
    assert stored.text == "my order is 1042" and stored.edits[0]["text"] == "my order is 1024"


async def test_a_start_deep_link_puts_the_order_on_the_customer_card(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, doubles_yaml(telegram), environ=ENV)
    _channel, workspace = parts(desk)
    # the shop's "Chat with us on Telegram" link: t.me/<bot>?start=<payload>
    await telegram.customer_sends(
        telegram.user(2003, "Nora"), "/start " + encode_payload("order_id=A-1042&src=checkout")
    )
    await telegram.customer_sends(telegram.user(2004, "Omar"), "/start summer_sale")
    await workspace.posts.wait_for(lambda posts: sum(p.kind == "customer_message" for _, p in posts) == 2)
    assert await desk.wait_settled(10)
    nora = workspace.room_of("2003").card
    omar = workspace.room_of("2004").card
    # (and the locale: their app's language)
    assert nora is not None and nora.attributes == {"order_id": "A-1042", "src": "checkout", "locale": "en"}
    assert omar is not None and omar.attributes == {"start": "summer_sale", "locale": "en"}
    assert (await Customer.get(display_name="Nora")).attributes["order_id"] == "A-1042"


async def test_group_chats_and_service_messages_are_ignored(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, doubles_yaml(telegram), environ=ENV)
    user = telegram.user(2005, "Pia")
    group = {"id": -100123, "type": "supergroup", "title": "Fans"}
    await telegram.add_update(
        {"message": {"message_id": 1, "from": user, "chat": group, "date": 1_700_000_000, "text": "hi all"}}
    )
    await telegram.add_update(
        {
            "message": {
                "message_id": 2,
                "from": user,
                "chat": {"id": 2005, "type": "private", "first_name": "Pia"},
                "date": 1_700_000_000,
                "location": {"latitude": 1.0, "longitude": 2.0},
            }
        }
    )
    await telegram.customer_sends(user, "a real question")
    await telegram.wait_for(lambda: not telegram.updates)
    assert await desk.wait_settled(10)
    assert [m.text for m in await Message.all()] == ["a real question"]


async def test_a_returning_customer_with_a_new_deep_link_gets_the_card_updated(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, doubles_yaml(telegram), environ=ENV)
    _channel, workspace = parts(desk)
    quinn = telegram.user(2006, "Quinn")
    await telegram.customer_sends(quinn, "/start " + encode_payload("order_id=A-1"))
    await workspace.posts.wait_for(lambda posts: any(p.kind == "customer_message" for _, p in posts))
    assert await desk.wait_settled(10)
    await telegram.customer_sends(quinn, "/start " + encode_payload("order_id=B-2"))
    await workspace.posts.wait_for(lambda posts: sum(p.kind == "customer_message" for _, p in posts) == 2)
    assert await desk.wait_settled(10)
    card = workspace.room_of("2006").card
    assert card is not None and card.attributes == {"order_id": "B-2", "locale": "en"}


async def test_a_reply_points_at_the_message_it_answers_in_the_room(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, doubles_yaml(telegram), environ=ENV)
    _channel, workspace = parts(desk)
    rita = telegram.user(2007, "Rita")
    await telegram.customer_sends(rita, "I ordered the blue one")
    await workspace.posts.wait_for(lambda posts: any(p.kind == "customer_message" for _, p in posts))
    room = workspace.room_of("2007")
    await workspace.agent_writes(room.room_id, "Blue or navy?")
    await telegram.wait_for(lambda: bool(telegram.bot_messages(2007)))
    assert await desk.wait_settled(10)
    [question] = telegram.bot_messages(2007)
    await telegram.customer_sends(rita, "Navy, sorry", reply_to=question["message_id"])
    await telegram.customer_sends(rita, "and the blue one was a mistake", reply_to=1)
    await workspace.posts.wait_for(lambda posts: sum(p.kind == "customer_message" for _, p in posts) == 3)
    first, navy, mistake = [p for p in room.posts if p.kind == "customer_message"]
    agents_copy = await Message.get(direction=Direction.OUTBOUND, text="Blue or navy?")
    assert navy.reply_to == agents_copy.workspace_message_id and navy.reply_to is not None
    assert mistake.reply_to == first.ref


async def test_the_users_app_language_reaches_the_card_as_their_locale(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, doubles_yaml(telegram), environ=ENV)
    _channel, workspace = parts(desk)
    joao = telegram.user(2031, "João", language_code="pt-br")
    await telegram.customer_sends(joao, text="olá")
    await workspace.posts.wait_for(lambda posts: any(p.kind == "card" for _, p in posts))
    card = workspace.room_of("2031").card
    assert card is not None and card.attributes.get("locale") == "pt-BR"
    customer = await Customer.get(display_name="João")
    assert customer.locale == "pt-BR" and "locale" not in customer.attributes
