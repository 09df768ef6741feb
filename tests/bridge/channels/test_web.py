"""The web chat channel in a real headless Chromium: the widget, its sessions, history, uploads, safety.

The agent side is the real Matrix workspace on the session's Synapse where the test is about the two
meeting (the agent fixture answers in the portal room), and the in-memory workspace double elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, FilePayload, Locator, Page, expect

from bot_core.config import parse_config
from bot_core.context import StateStore
from bot_core.desk import Desk
from bot_core.outbox import OutboxSettings
from bot_core.testing import MemoryWorkspace
from bridge.channels.web import WebChannel
from bridge.channels.web.sessions import SessionSigner, VisitorSession, identity_hash
from bridge.workspaces.matrix.devserver import free_port
from storage.models import Direction, Identity, Message
from tests.bridge.workspaces.matrix_agent import Agent, room_of, type_until_shown
from tests.conftest import FAST_OUTBOX, MigratedDatabases
from tests.matrix_server import SynapseInfo

IDENTITY_SECRET = "shop-backend-shares-this"
UPLOAD_LIMIT = 64 * 1024
SLOW = 20_000  # ms: anything that crosses Synapse


class WebDesk:
    """A running relaydesk with the web channel, and how to reach it."""

    def __init__(self, desk: Desk, port: int, secret_file: Path) -> None:
        self.desk = desk
        self.base = f"http://127.0.0.1:{port}"
        self.secret_file = secret_file

    @property
    def web(self) -> WebChannel:
        return cast(WebChannel, self.desk.plugins["web"])

    @property
    def workspace(self) -> MemoryWorkspace:
        return cast(MemoryWorkspace, self.desk.plugins["desk"])

    def signer(self) -> SessionSigner:
        return SessionSigner(self.secret_file.read_text().strip().encode(), 3600)

    async def subject(self) -> str:
        """The external id of the (only) web visitor who wrote so far."""
        identity = await Identity.get(channel="web")
        return identity.external_id


WebDeskFactory = Callable[..., Awaitable[WebDesk]]


def identity_claim(secret: str = IDENTITY_SECRET, **fields: str) -> dict[str, str | int]:
    """What a shop's backend hands the widget for a logged-in user: the fields, issued_at and their hash."""
    claims: dict[str, str | int] = {**fields, "issued_at": int(time.time())}
    return {**claims, "user_hash": identity_hash(secret, claims)}


@pytest.fixture
async def web_desk(tmp_path: Path, migrated: MigratedDatabases) -> AsyncIterator[WebDeskFactory]:
    """Start relaydesk with the web channel and either the Matrix workspace or the in-memory double
    (started again with ``port=`` of a stopped one: the same database, secret and address, as a restart)."""
    running: list[Desk] = []

    async def start(
        synapse: SynapseInfo | None = None,
        *,
        echo: bool = False,
        web_extra: str = "",
        outbox: OutboxSettings = FAST_OUTBOX,
        port: int | None = None,
    ) -> WebDesk:
        database = tmp_path / "relaydesk.db"  # a restart finds the one the stopped desk used
        url = f"sqlite://{database}" if database.exists() else await migrated.sqlite(database)
        port = port or (synapse.appservice_port if synapse else free_port())
        if synapse:
            workspace = f"""
  - matrix:
      use: "bridge.workspaces.matrix.appservice:MatrixWorkspace"
      config:
        homeserver: "{synapse.base_url}"
        server_name: "{synapse.server_name}"
        registration: "{synapse.registration_path}"
        agents: ["{synapse.agent_user_id}"]"""
        else:
            workspace = '\n  - desk: {use: "bot_core.testing:MemoryWorkspace"}'
        text = f"""
server: {{host: 127.0.0.1, port: {port}}}
storage: {{database: "{url}"}}
plugins:{workspace}
  - web:
      identity_secret: "${{SHOP_IDENTITY_SECRET}}"
      dev_secret_file: "{tmp_path / "web-secret"}"
      upload_dir: "{tmp_path / "uploads"}"
      max_upload_bytes: {UPLOAD_LIMIT}
{web_extra}"""
        if echo:
            text += '  - echo: {greeting: "Thanks, we got your message."}\n'
        config = parse_config(text, "plugins.yaml", environ={"SHOP_IDENTITY_SECRET": IDENTITY_SECRET})
        desk = Desk(config, outbox_settings=outbox, scheduler_poll=0.1)
        await desk.start()
        running.append(desk)
        return WebDesk(desk, port, tmp_path / "web-secret")

    yield start
    for desk in running:
        if desk.plugins:
            await desk.stop(timeout=5)


class Widget:
    """The widget on a page, seen the way a person uses it (Playwright's CSS pierces its Shadow DOM)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.launcher = page.locator("[data-relaydesk-widget] .launcher")
        self.badge = page.locator("[data-relaydesk-widget] .badge")
        self.panel = page.locator("[data-relaydesk-widget] .panel")
        self.subtitle = page.locator("[data-relaydesk-widget] .subtitle")
        self.input = page.locator("[data-relaydesk-widget] textarea")
        self.error = page.locator("[data-relaydesk-widget] .error")
        self.typing = page.locator("[data-relaydesk-widget] .typing")
        self.file_input = page.locator("[data-relaydesk-widget] input[type=file]")
        self.log = page.locator("[data-relaydesk-widget] [role=log]")

    async def open(self) -> None:
        await self.launcher.click()
        await expect(self.panel).to_be_visible()

    async def write(self, text: str) -> None:
        await self.input.fill(text)
        await self.input.press("Enter")

    def messages(self, side: str | None = None) -> Locator:
        return self.page.locator(f"[data-relaydesk-widget] li.message{'.' + side if side else ''}")

    def texts(self, side: str | None = None) -> Locator:
        return self.page.locator(f"[data-relaydesk-widget] li.message{'.' + side if side else ''} .text")


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Wait until ``check()`` returns something truthy (polling), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout}s (last: {value!r})")
        await asyncio.sleep(0.05)


def png(width: int = 2, height: int = 2) -> bytes:
    """A real (tiny, grey) PNG image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


# -- the demo, end to end with Matrix ----------------------------------------------------------------


async def test_customer_writes_agent_answers_in_matrix_and_nothing_is_lost_while_away(
    synapse: SynapseInfo, agent: Agent, browser_context: BrowserContext, web_desk: WebDeskFactory
) -> None:
    site = await web_desk(synapse, echo=True)
    page = await browser_context.new_page()
    await page.goto(f"{site.base}/web/demo")
    widget = Widget(page)
    await widget.open()
    await widget.write("Hello, the pole of my Ridge 2 tent snapped")

    mine = widget.messages("customer").last
    await expect(mine.locator(".text")).to_have_text("Hello, the pole of my Ridge 2 tent snapped")
    await expect(mine).to_have_attribute("data-state", "delivered", timeout=SLOW)  # in the agents' room
    await expect(widget.texts("bot")).to_have_text(["Thanks, we got your message."])

    subject = await site.subject()
    room_id = await room_of(subject)
    await agent.sync_until(
        lambda: any(t == "Hello, the pole of my Ridge 2 tent snapped" for _, t in agent.texts(room_id))
    )
    await type_until_shown(  # the customer sees the agent typing
        agent, room_id, lambda s: expect(widget.typing).to_have_text("agent is typing…", timeout=s * 1000)
    )
    answer_event = await agent.say(room_id, "Sorry about that! A new pole ships today.")
    answer = widget.messages("agent").last
    await expect(answer.locator(".text")).to_have_text(
        "Sorry about that! A new pole ships today.", timeout=SLOW
    )
    await expect(answer.locator(".author")).to_have_text("agent")  # the agent's name
    await expect(widget.subtitle).to_have_text("You are chatting with agent")
    await expect(widget.typing).to_be_hidden()  # the answer ends the typing indicator
    await expect(widget.texts()).to_have_text(  # in the order they were written, live as on reload
        [
            "Hello, the pole of my Ridge 2 tent snapped",
            "Thanks, we got your message.",
            "Sorry about that! A new pole ships today.",
        ]
    )
    await expect(mine).to_have_attribute("data-state", "read")  # an agent answered since
    await expect(widget.badge).to_be_hidden()
    web = site.web
    answer_id = int((await answer.get_attribute("data-key") or "m:0").split(":")[1])
    read = StateStore("web", f"visitor:{subject}")
    await eventually(lambda: _at_least(read, "read_upto", answer_id))  # the widget said it was seen
    # ... and the agents see it: relaydesk's bot reacts "✓✓ read" to the answer in the room
    await agent.sync_until(lambda: "✓✓ read" in _reactions(agent, room_id, answer_event))
    assert await _status_of("Sorry about that! A new pole ships today.") == "read"

    # The visitor closes the page; the agent answers meanwhile; nothing is connected to receive it.
    await page.close()
    await eventually(lambda: _none_connected(web, subject))
    await agent.say(room_id, "Your tracking number is NW-4471.")
    await eventually(lambda: _answered(web, subject, "Your tracking number is NW-4471."), 20)
    assert await site.desk.wait_settled(20)

    # Back on the site: one unread answer on the launcher, the whole conversation in the panel.
    page = await browser_context.new_page()
    await page.goto(f"{site.base}/web/demo")
    widget = Widget(page)
    await expect(widget.badge).to_have_text("1", timeout=SLOW)
    await expect(widget.launcher).to_have_attribute("aria-label", "Open chat (1 unread)")
    await widget.open()
    await expect(widget.texts()).to_have_text(
        [
            "Hello, the pole of my Ridge 2 tent snapped",
            "Thanks, we got your message.",
            "Sorry about that! A new pole ships today.",
            "Your tracking number is NW-4471.",
        ]
    )
    await expect(widget.badge).to_be_hidden()


def _reactions(agent: Agent, room_id: str, event_id: str) -> list[str]:
    """The keys of the reactions to ``event_id`` seen in the room."""
    keys: list[str] = []
    for event in agent.events.get(room_id, []):
        relates = event.get("content", {}).get("m.relates_to", {})
        if event.get("type") == "m.reaction" and relates.get("event_id") == event_id:
            keys.append(str(relates.get("key")))
    return keys


async def _first_question(site: WebDesk, context: BrowserContext, text: str) -> tuple[Widget, str]:
    """A visitor opens the demo page's widget and writes ``text``; the widget, and the room it reached."""
    page = await context.new_page()
    await page.goto(f"{site.base}/web/demo")
    widget = Widget(page)
    await widget.open()
    await widget.write(text)
    await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")
    return widget, site.workspace.room_of(await site.subject()).room_id


async def _at_least(store: StateStore, key: str, value: int) -> bool:
    return int(await store.get(key, 0) or 0) >= value


async def _none_connected(web: WebChannel, subject: str) -> bool:
    return web.connected(subject) == 0


async def _answered(web: WebChannel, subject: str, text: str) -> bool:
    return any(m["text"] == text for m in await web.history(subject))


async def test_images_and_files_within_the_limits_reach_the_room_and_others_are_refused_clearly(
    synapse: SynapseInfo, agent: Agent, browser_context: BrowserContext, web_desk: WebDeskFactory
) -> None:
    site = await web_desk(synapse)
    page = await browser_context.new_page()
    await page.goto(f"{site.base}/web/demo")
    widget = Widget(page)
    await widget.open()

    # Over the size limit: refused before anything is sent, saying why and what the limit is.
    big: FilePayload = {"name": "holiday.png", "mimeType": "image/png", "buffer": png() + b"\0" * 100 * 1024}
    await widget.file_input.set_input_files(big)
    await expect(widget.error).to_have_text("“holiday.png” is 100 KB; files can be at most 64 KB.")
    await expect(widget.messages()).to_have_count(0)
    # A type that is not accepted.
    await widget.file_input.set_input_files(
        {"name": "setup.exe", "mimeType": "application/x-msdownload", "buffer": b"MZ\x90\x00"}
    )
    await expect(widget.error).to_contain_text("“setup.exe” is a type of file we cannot accept")
    await expect(widget.error).to_contain_text(
        "PNG image, JPEG image, GIF image, WebP image, PDF or text file"
    )
    # Claims to be a PNG but is not: relaydesk itself refuses it, and the widget shows its words.
    await widget.file_input.set_input_files(
        {"name": "fake.png", "mimeType": "image/png", "buffer": b"<html>"}
    )
    await expect(widget.error).to_have_text("“fake.png” does not look like a PNG image: it was not sent.")
    await expect(widget.messages("customer").last).to_have_attribute("data-state", "failed")

    # A real image goes through: the widget shows it, and the agents' room gets it as an image.
    await widget.file_input.set_input_files({"name": "pole.png", "mimeType": "image/png", "buffer": png()})
    await expect(widget.error).to_have_text("")
    sent = widget.messages("customer").last
    await expect(sent).to_have_attribute("data-state", "delivered", timeout=SLOW)
    await expect(sent.locator("img")).to_have_attribute("alt", "pole.png")
    assert await sent.locator("img").evaluate("img => img.complete && img.naturalWidth") == 2
    room_id = await room_of(await site.subject())
    await agent.sync_until(lambda: any(c.get("msgtype") == "m.image" for c in agent.messages(room_id)), 20)
    image = next(c for c in agent.messages(room_id) if c.get("msgtype") == "m.image")
    assert (image["body"], image["info"]["mimetype"]) == ("pole.png", "image/png")
    assert image["url"].startswith("mxc://")

    # The server enforces the limits whatever a client does.
    token = site.signer().issue(site.signer().anonymous())
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        form = aiohttp.FormData()
        form.add_field("client_id", "upload-check-1")
        form.add_field("file", png() + b"\0" * UPLOAD_LIMIT, filename="big.png", content_type="image/png")
        async with http.post(f"{site.base}/web/api/upload", data=form, headers=headers) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"] == "“big.png” is too large: files can be at most 64 KB."
        form = aiohttp.FormData()
        form.add_field("client_id", "upload-check-2")
        form.add_field("file", b"#!/bin/sh", filename="run.sh", content_type="application/x-sh")
        async with http.post(f"{site.base}/web/api/upload", data=form, headers=headers) as resp:
            assert resp.status == 415
            assert (
                "“run.sh” is a type of file we cannot accept (application/x-sh)"
                in (await resp.json())["error"]
            )


# -- safety --------------------------------------------------------------------------------------


async def test_html_and_scripts_typed_by_customer_or_agent_show_as_text(
    browser_context: BrowserContext, web_desk: WebDeskFactory
) -> None:
    site = await web_desk()
    page = await browser_context.new_page()
    await page.goto(f"{site.base}/web/demo")
    widget = Widget(page)
    await widget.open()
    attack = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold</b>'
    await widget.write(attack)
    await expect(widget.texts("customer")).to_have_text([attack])
    await expect(widget.messages("customer")).to_have_attribute("data-state", "delivered")
    room = site.workspace.room_of(await site.subject())
    assert site.workspace.texts(room.room_id, "customer_message") == [attack]  # relayed as typed

    reply = '<a href="javascript:window.__pwned=3">click</a><svg onload="window.__pwned=4"></svg>'
    await site.workspace.agent_writes(room.room_id, reply)
    await expect(widget.texts("agent")).to_have_text([reply])
    await widget.texts("agent").click()
    for markup in ("img[src=x]", "script", "b", "a[href^=javascript]", "svg"):
        assert await widget.log.locator(markup).count() == 0, markup
    assert await page.evaluate("window.__pwned") is None
    # Reloading renders the history the same way.
    await page.reload()
    await Widget(page).open()
    await expect(Widget(page).texts()).to_have_text([attack, reply])
    assert await page.evaluate("window.__pwned") is None


async def test_forged_expired_and_unverified_sessions_get_401(
    browser_context: BrowserContext, web_desk: WebDeskFactory
) -> None:
    site = await web_desk()
    signer = site.signer()
    good = signer.issue(signer.anonymous())
    expired = signer.issue(VisitorSession("v-expired-visitor", "Visitor", None, False, time.time() - 1))
    forged = SessionSigner(b"not the secret", 3600).issue(signer.anonymous())
    payload = json.dumps({"sub": "u-alice", "name": "Alice", "exp": int(time.time()) + 3600, "ver": 1})
    tampered = ".".join(
        [
            "rdw1",
            base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode(),
            good.split(".")[2],  # a real signature, of another payload
        ]
    )
    async with aiohttp.ClientSession() as http:
        for token in (forged, expired, tampered, "", "garbage"):
            async with http.get(
                f"{site.base}/web/api/messages", headers={"Authorization": f"Bearer {token}"}
            ) as resp:
                assert resp.status == 401, token
                assert (await resp.json())["error"].startswith("Session not valid")
            async with http.post(
                f"{site.base}/web/api/messages",
                json={"client_id": "abcdefgh", "text": "hi"},
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                assert resp.status == 401
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"{site.base}/web/ws?token={token}")
            assert refused.value.status == 401
        async with http.post(f"{site.base}/web/api/session", json={"token": expired}) as resp:
            assert resp.status == 401  # an expired session is not renewed
        # A claimed identity counts only with the hash the shop's backend computed.
        for claim in (
            {"user_id": "alice"},
            identity_claim("guessed", user_id="alice"),
            {**identity_claim(email="bob@example.com"), "email": "alice@example.com"},
        ):
            async with http.post(f"{site.base}/web/api/session", json=claim) as resp:
                assert resp.status == 401, claim
                assert (await resp.json())["error"].startswith("Identity not verified")
        verified = identity_claim(user_id="alice", name="Alice")
        async with http.post(f"{site.base}/web/api/session", json=verified) as resp:
            assert resp.status == 200
            assert (await resp.json())["verified"] is True
        async with http.get(
            f"{site.base}/web/api/messages", headers={"Authorization": f"Bearer {good}"}
        ) as resp:
            assert resp.status == 200
    assert await Identity.all().count() == 0  # nothing was stored for any refused request

    # A widget holding an expired token starts afresh as a new visitor instead of failing.
    page = await browser_context.new_page()
    await page.goto(f"{site.base}/web/demo")
    await page.evaluate(
        "([key, token]) => localStorage.setItem(key, token)", [f"relaydesk:token:{site.base}", expired]
    )
    await page.reload()
    widget = Widget(page)
    await widget.open()
    await widget.write("still works")
    await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")
    subject = await site.subject()
    assert subject != "v-expired-visitor" and subject.startswith("v-")


# -- identities, transports, layout ----------------------------------------------------------------


def shop_page(site: WebDesk, settings: Mapping[str, object] | None = None, **data: object) -> str:
    """A page of another site (another origin) that embeds the widget with one script tag."""
    attrs = "".join(f' data-{k.replace("_", "-")}="{v}"' for k, v in data.items())
    config = f"<script>window.relaydeskSettings = {json.dumps(settings)};</script>" if settings else ""
    return (
        "<!doctype html><html><head><title>Shop</title></head><body><h1>Shop</h1>"
        f'{config}<script src="{site.base}/web/widget.js" async{attrs}></script></body></html>'
    )


class Shop:
    """Another web site (http://localhost:<its own port>, another origin than relaydesk's) with pages."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        self.port = free_port()
        app = web.Application()
        app.router.add_get("/{name}", self._page)
        self._runner = web.AppRunner(app, access_log=None)

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(text=self.pages[request.match_info["name"]], content_type="text/html")

    async def start(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def open(self, context: BrowserContext, html: str) -> Page:
        """Open ``html`` as a page of the shop in ``context``."""
        name = f"page{len(self.pages)}"
        self.pages[name] = html
        page = await context.new_page()
        await page.goto(f"http://localhost:{self.port}/{name}")
        return page


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    """A second site on loopback that embeds the widget with one script tag."""
    site = Shop()
    await site.start()
    yield site
    await site.stop()


async def test_a_verified_customer_keeps_their_history_on_another_device_and_a_bad_claim_is_not_trusted(
    browser: Any, web_desk: WebDeskFactory, shop: Shop
) -> None:
    site = await web_desk()
    alice = identity_claim(user_id="alice-42", name="Alice")
    laptop = await browser.new_context()
    phone = await browser.new_context(viewport={"width": 390, "height": 760})
    stranger = await browser.new_context()
    try:
        page = await shop.open(laptop, shop_page(site, alice))
        widget = Widget(page)
        await widget.open()
        await widget.write("Written on my laptop")
        await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")
        identity = await Identity.get(channel="web")
        assert (identity.external_id, identity.display_name) == ("u-alice-42", "Alice")
        room = site.workspace.room_of("u-alice-42")
        await site.workspace.agent_writes(room.room_id, "Hi Alice, on it.")
        await expect(widget.texts("agent")).to_have_text(["Hi Alice, on it."])

        # Another device, the same customer (the settings as data attributes this time).
        page = await shop.open(phone, shop_page(site, None, **alice))
        widget = Widget(page)
        await widget.open()
        await expect(widget.texts()).to_have_text(["Written on my laptop", "Hi Alice, on it."])

        # Someone claiming to be Alice without the right hash chats as an anonymous visitor.
        forged = identity_claim("guess", user_id="alice-42", name="Alice")
        page = await shop.open(stranger, shop_page(site, forged))
        widget = Widget(page)
        await widget.open()
        await widget.write("let me see Alice's chat")
        await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")
        await expect(widget.texts()).to_have_text(["let me see Alice's chat"])
        assert sorted(i.external_id.split("-")[0] for i in await Identity.all()) == ["u", "v"]
    finally:
        for context in (laptop, phone, stranger):
            await context.close()


async def test_the_agents_see_the_customer_typing_until_the_message_is_sent(
    browser_context: BrowserContext, web_desk: WebDeskFactory
) -> None:
    site = await web_desk()
    widget, room_id = await _first_question(site, browser_context, "first question")
    subject = await site.subject()
    shown = site.workspace.customer_typing_shown

    await widget.input.press_sequentially("and one more thing")
    await shown.wait_for(lambda items: [i[-1] for i in items] == [True], 10)
    assert shown.items[0][:3] == (room_id, "web", subject)
    await widget.input.press("Enter")  # sending ends the typing at once
    await shown.wait_for(lambda items: [i[-1] for i in items] == [True, False], 10)
    await expect(widget.texts("customer")).to_have_text(["first question", "and one more thing"])


def _marks(site: WebDesk, room_id: str) -> list[tuple[str, str | None]]:
    """The delivery statuses the room shows on agents' messages: (status, the marked message's id)."""
    return [(p.text, p.edit_of) for p in site.workspace.rooms[room_id].posts if p.kind == "status"]


async def _status_of(text: str) -> str:
    message = await Message.get_or_none(direction=Direction.OUTBOUND, text=text)
    return message.delivery_status if message else ""


async def test_the_widget_reports_answers_delivered_then_read_and_the_room_shows_it_without_polling(
    browser_context: BrowserContext, web_desk: WebDeskFactory
) -> None:
    site = await web_desk()
    widget, room_id = await _first_question(site, browser_context, "Do you ship to Norway?")
    # the customer's message turned "delivered" as the room took it: nothing watches the database
    assert not [t for t in asyncio.all_tasks() if "room-watch" in t.get_name()]

    # the panel is closed: the widget receives the answer (delivered) but nobody has read it yet
    await widget.input.press("Escape")
    await expect(widget.panel).to_be_hidden()
    first = await site.workspace.agent_writes(room_id, "Yes, in 3 to 5 days.")
    await expect(widget.badge).to_have_text("1", timeout=SLOW)
    await eventually(lambda: _is(_status_of("Yes, in 3 to 5 days."), "delivered"))
    await site.workspace.posts.wait_for(lambda _: _marks(site, room_id) == [("delivered", first)])

    # the visitor opens the panel and sees it: read, and the room's mark follows
    await widget.open()
    await expect(widget.badge).to_be_hidden()
    await eventually(lambda: _is(_status_of("Yes, in 3 to 5 days."), "read"))
    await site.workspace.posts.wait_for(
        lambda _: _marks(site, room_id) == [("delivered", first), ("read", first)]
    )

    # with the panel open, an answer is read at once (delivered and read in one receipt: one mark)
    second = await site.workspace.agent_writes(room_id, "Customs are included.")
    await expect(widget.texts("agent")).to_have_text(["Yes, in 3 to 5 days.", "Customs are included."])
    await eventually(lambda: _is(_status_of("Customs are included."), "read"))
    await site.workspace.posts.wait_for(lambda _: ("read", second) in _marks(site, room_id))
    assert await site.desk.wait_settled(10)
    assert [m for m in _marks(site, room_id) if m[1] == second][-1] == ("read", second)


async def _is(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


async def test_without_websocket_the_widget_falls_back_to_plain_http(
    browser_context: BrowserContext, web_desk: WebDeskFactory, shop: Shop
) -> None:
    site = await web_desk(echo=True)
    page = await shop.open(browser_context, shop_page(site, transport="http"))
    websockets: list[str] = []
    page.on("websocket", lambda ws: websockets.append(ws.url))
    widget = Widget(page)
    await widget.open()
    await widget.write("polling hello")
    await expect(widget.texts("bot")).to_have_text(["Thanks, we got your message."])
    await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")
    room = site.workspace.room_of(await site.subject())
    await site.workspace.agent_writes(room.room_id, "answer over a long poll")
    await expect(widget.texts("agent")).to_have_text(["answer over a long poll"])
    await expect(widget.messages("customer").last).to_have_attribute("data-state", "read")
    await site.web.typing(await site.subject(), "Alice", True)
    await expect(widget.typing).to_have_text("Alice is typing…", timeout=SLOW)
    assert websockets == []


async def test_phone_width_keyboard_screen_reader_and_a_hostile_host_page(
    browser: Any, web_desk: WebDeskFactory
) -> None:
    site = await web_desk()
    context = await browser.new_context(
        viewport={"width": 375, "height": 667}, is_mobile=True, has_touch=True
    )
    try:
        page = await context.new_page()
        await page.goto(f"{site.base}/web/demo")  # its CSS restyles every button and font, !important
        widget = Widget(page)
        await expect(widget.launcher).to_have_attribute("aria-expanded", "false")
        await widget.launcher.focus()
        await page.keyboard.press("Enter")
        await expect(widget.panel).to_be_visible()
        await expect(widget.launcher).to_have_attribute("aria-expanded", "true")
        await expect(widget.input).to_be_focused()
        box = await widget.panel.bounding_box()
        assert box is not None and (box["width"], box["height"]) == (375, 667)  # the whole phone screen
        await page.keyboard.type("typed on a phone keyboard")
        await page.keyboard.press("Enter")
        await expect(widget.texts("customer")).to_have_text(["typed on a phone keyboard"])
        await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")
        assert await widget.input.input_value() == ""

        # Screen readers: a named dialog, a live log of messages saying who wrote, labelled controls.
        assert await widget.panel.get_attribute("role") == "dialog"
        assert await widget.log.get_attribute("aria-live") == "polite"
        assert await widget.messages("customer").locator(".who").inner_text() == "You wrote:"
        for label in ("Send", "Attach an image or a file", "Close chat", "Message", "Hide chat"):
            assert await page.locator(f'[data-relaydesk-widget] [aria-label="{label}"]').count() == 1, label
        subject = await site.subject()
        await site.web.typing(subject, "Alice", True)
        await expect(widget.typing).to_have_text("Alice is typing…")
        await expect(widget.typing).to_have_attribute("aria-live", "polite")

        # The host page's styles do not reach the widget, and the widget defines no globals.
        send = page.locator("[data-relaydesk-widget] .send")
        assert await send.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(31, 95, 191)"
        font = await widget.panel.evaluate("p => getComputedStyle(p).fontFamily")
        assert "Georgia" not in font
        added = await page.evaluate(
            """() => {
                const frame = document.createElement("iframe");  // a clean window of the same kind
                document.body.appendChild(frame);
                return Object.keys(window).filter(k => !(k in frame.contentWindow) && k !== "0");
            }"""
        )
        assert added == [], added

        await page.keyboard.press("Escape")
        await expect(widget.panel).to_be_hidden()
        await expect(widget.launcher).to_be_focused()
    finally:
        await context.close()


async def test_history_leaves_out_internal_notes_and_agent_edits_and_deletions_follow(
    browser_context: BrowserContext, web_desk: WebDeskFactory
) -> None:
    site = await web_desk()
    widget, room = await _first_question(site, browser_context, "Do you ship to Norway?")
    await site.workspace.agent_writes(room, "!note VIP, handle with care")
    first = await site.workspace.agent_writes(room, "Yes, in 3 days")
    second = await site.workspace.agent_writes(room, "Customs are included")
    await expect(widget.texts("agent")).to_have_text(["Yes, in 3 days", "Customs are included"])
    await site.workspace.agent_writes(room, "Yes, in 4 days", edit_of=first)
    await expect(widget.messages("agent").first).to_contain_text("Yes, in 4 days")
    await expect(widget.messages("agent").first.locator(".meta")).to_contain_text("edited")
    await site.workspace.agent_redacts(room, second)
    await expect(widget.messages("agent").last).to_contain_text("This message was deleted.")
    assert await site.desk.wait_settled(10)
    await widget.page.reload()
    widget = Widget(widget.page)
    await widget.open()
    await expect(widget.texts()).to_have_text(
        ["Do you ship to Norway?", "Yes, in 4 days", "This message was deleted."]
    )
    assert "VIP" not in await widget.log.inner_text()


def test_identity_hash_is_what_a_backend_computes_with_the_standard_library() -> None:
    claims: dict[str, str | int] = {"user_id": "alice-42", "name": "Ålice", "issued_at": 1765000000}
    # the README's one-liner
    expected = hmac.new(
        IDENTITY_SECRET.encode(),
        json.dumps(claims, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(),
        hashlib.sha256,
    ).hexdigest()
    assert identity_hash(IDENTITY_SECRET, claims) == expected
    signed = '{"issued_at":1765000000,"name":"Ålice","user_id":"alice-42"}'.encode()  # JSON.stringify's form
    assert expected == hmac.new(IDENTITY_SECRET.encode(), signed, hashlib.sha256).hexdigest()


async def test_the_visitors_time_zone_and_language_from_the_browser_reach_the_card(
    browser: Browser, web_desk: WebDeskFactory
) -> None:
    site = await web_desk()
    context = await browser.new_context(timezone_id="Asia/Tokyo", locale="ja-JP")
    try:
        _widget, room_id = await _first_question(site, context, "こんにちは")
    finally:
        await context.close()
    card = site.workspace.rooms[room_id].card
    assert card is not None
    assert (card.attributes.get("time zone"), card.attributes.get("locale")) == ("Asia/Tokyo", "ja-JP")
