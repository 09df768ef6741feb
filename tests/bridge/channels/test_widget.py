"""The widget itself in a real headless Chromium: nothing lost across restarts, reloads and going offline;
a strict Content-Security-Policy and hostile host CSS; accessibility (axe-core, keyboard only, a modal
dialog on phones, announcements); Chinese and right-to-left pages; the composer; how widget.js is served.

relaydesk is real (the web channel on SQLite, the in-memory workspace double as the agents' side); a
restart is a stopped desk and a new one on the same database, secret and port.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from playwright.async_api import Browser, BrowserContext, Page, ViewportSize, expect

from tests.bridge.channels import test_web, test_web_transport
from tests.bridge.channels.test_web import Shop, WebDesk, WebDeskFactory, Widget, eventually, shop_page
from tests.bridge.channels.test_web_transport import WebSocketBlockingProxy

web_desk = test_web.web_desk  # the fixtures: relaydesk with the web channel, and another web site
shop = test_web.shop
proxy_for = test_web_transport.proxy_for  # proxies in front of relaydesk, stopped after the test

AXE = Path(__file__).resolve().parents[2] / "fixtures" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
HOST = "[data-relaydesk-widget]"


async def open_widget(context: BrowserContext, url: str) -> tuple[Page, Widget]:
    """A new page at ``url`` with the widget's panel opened, as a visitor clicks the launcher."""
    page = await context.new_page()
    await page.goto(url)
    widget = Widget(page)
    await widget.open()
    return page, widget


async def history_texts(site: WebDesk) -> list[str]:
    """The texts of the (only) visitor's conversation as relaydesk stored it."""
    return [m["text"] for m in await site.web.history(await site.subject())]


async def outbox_of(page: Page, site: WebDesk) -> dict[str, Any]:
    """The widget's outbox in the page's localStorage (what it has not had acknowledged)."""
    raw = await page.evaluate("key => localStorage.getItem(key)", f"relaydesk:outbox:{site.base}")
    return dict(json.loads(raw)) if raw else {}


def status(page: Page) -> Any:
    return page.locator(f"{HOST} .status")


# -- nothing lost ----------------------------------------------------------------------------------


async def test_a_message_written_while_relaydesk_restarts_is_delivered_once_when_it_is_back(
    browser_context: BrowserContext, web_desk: WebDeskFactory
) -> None:
    site = await web_desk()
    page, widget = await open_widget(browser_context, f"{site.base}/web/demo")
    await widget.write("before the restart")
    await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")

    port, rooms = int(site.base.rsplit(":", 1)[1]), site.workspace.rooms
    await site.desk.stop(timeout=5)
    await expect(status(page)).to_have_text("Reconnecting…", timeout=5000)
    await widget.write("written while it restarts")
    late = widget.messages("customer").last
    await expect(late).to_have_attribute("data-state", "queued", timeout=5000)  # said honestly, at once
    await expect(late.locator(".meta")).to_contain_text("Not sent yet")
    assert [e["text"] for e in (await outbox_of(page, site)).values()] == ["written while it restarts"]

    again = await web_desk(port=port)  # the same database, secret and address
    again.workspace.rooms.update(rooms)  # the agents' workspace outlives relaydesk (as Matrix rooms do)
    await expect(late).to_have_attribute("data-state", "delivered", timeout=8000)
    await expect(status(page)).to_have_text("", timeout=5000)
    assert await history_texts(again) == ["before the restart", "written while it restarts"]
    assert await outbox_of(page, site) == {}
    await widget.write("and after it")  # the WebSocket is back: no long polls
    await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")
    assert again.web.connected(await again.subject()) == 1


async def test_a_message_written_while_relaydesk_is_down_survives_closing_the_page(
    browser_context: BrowserContext, web_desk: WebDeskFactory
) -> None:
    site = await web_desk()
    page, widget = await open_widget(browser_context, f"{site.base}/web/demo")
    await widget.write("hello")
    await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")
    port, rooms = int(site.base.rsplit(":", 1)[1]), site.workspace.rooms
    await site.desk.stop(timeout=5)
    await widget.write("my order 1234 never came")
    await expect(widget.messages("customer").last).to_have_attribute("data-state", "queued")
    await page.close()  # the visitor leaves before relaydesk is back

    again = await web_desk(port=port)
    again.workspace.rooms.update(rooms)
    page, widget = await open_widget(browser_context, f"{again.base}/web/demo")
    await expect(widget.texts("customer")).to_have_text(["hello", "my order 1234 never came"])
    await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")
    assert await history_texts(again) == ["hello", "my order 1234 never came"]
    assert await outbox_of(page, again) == {}


async def test_offline_the_visitor_is_told_at_once_and_what_they_write_goes_when_back_online(
    browser_context: BrowserContext, web_desk: WebDeskFactory
) -> None:
    site = await web_desk()
    page, widget = await open_widget(browser_context, f"{site.base}/web/demo")
    await widget.write("online")
    await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")

    await browser_context.set_offline(True)
    await expect(status(page)).to_have_text(
        "You are offline. Your messages will be sent when you are back online.", timeout=5000
    )
    await widget.write("written offline")
    offline = widget.messages("customer").last
    await expect(offline).to_have_attribute("data-state", "queued")
    await expect(offline.locator(".meta")).to_contain_text(
        "Not sent yet: will send when the connection is back"
    )
    await browser_context.set_offline(False)
    await expect(offline).to_have_attribute("data-state", "delivered", timeout=5000)
    await expect(status(page)).to_have_text("")
    assert await history_texts(site) == ["online", "written offline"]


async def test_a_message_refused_as_too_fast_is_not_sent_and_a_tap_sends_it(
    browser_context: BrowserContext, web_desk: WebDeskFactory
) -> None:
    site = await web_desk(web_extra="      messages_per_minute: 2\n")
    page, widget = await open_widget(browser_context, f"{site.base}/web/demo")
    for text in ("one", "two", "three"):
        await widget.write(text)
    third = widget.messages("customer").nth(2)
    await expect(third).to_have_attribute("data-state", "failed")
    await expect(third.locator(".state")).to_have_text("· ! Not sent. Tap to retry")
    await expect(widget.error).to_contain_text("You are sending messages faster than we can read them")
    assert [e["text"] for e in (await outbox_of(page, site)).values()] == ["three"]  # kept for the retry

    await site.web.reconfigure(site.web.settings.model_copy(update={"messages_per_minute": 6000}))
    await third.get_by_role("button", name="Retry").click()
    await expect(third).to_have_attribute("data-state", "delivered")
    await expect(widget.error).to_have_text("")
    assert await history_texts(site) == ["one", "two", "three"]
    assert await outbox_of(page, site) == {}


async def test_without_local_storage_messages_written_offline_are_still_sent_once_back(
    browser_context: BrowserContext, web_desk: WebDeskFactory
) -> None:
    site = await web_desk()
    await browser_context.add_init_script(  # storage blocked, as by some privacy settings
        "Object.defineProperty(window, 'localStorage', {get() { throw new DOMException('no', 'SecurityError'); }});"
    )
    _page, widget = await open_widget(browser_context, f"{site.base}/web/demo")
    await widget.write("first")
    await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")
    await browser_context.set_offline(True)
    await widget.write("second, offline")
    await expect(widget.messages("customer").last).to_have_attribute("data-state", "queued")
    await browser_context.set_offline(False)
    await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")
    assert await history_texts(site) == ["first", "second, offline"]


class BlackHoleProxy(WebSocketBlockingProxy):
    """The proxy, whose open WebSockets can die silently (``kill``): frames from the browser vanish and
    nothing comes back, but the socket stays open, as on a network path that died without a close.
    Connections made afterwards work."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.block_websockets = False
        self._open: set[web.WebSocketResponse] = set()
        self._dead: set[web.WebSocketResponse] = set()

    def kill(self) -> None:
        self._dead |= self._open

    async def _pipe_websocket(self, request: web.Request) -> web.StreamResponse:
        assert self._client is not None
        down = web.WebSocketResponse()
        await down.prepare(request)
        self._open.add(down)
        url = self.upstream.replace("http", "ws", 1) + request.path_qs
        async with self._client.ws_connect(url) as up:

            async def relay_to_browser() -> None:
                async for msg in up:
                    if msg.type is WSMsgType.TEXT and down not in self._dead:
                        await down.send_str(msg.data)

            task = asyncio.create_task(relay_to_browser())
            try:
                async for msg in down:
                    if msg.type is WSMsgType.TEXT and down not in self._dead:
                        await up.send_str(msg.data)
            finally:
                self._open.discard(down)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return down


async def test_on_a_connection_that_died_silently_the_message_is_resent_over_a_new_one(
    browser_context: BrowserContext, web_desk: WebDeskFactory, proxy_for: list[WebSocketBlockingProxy]
) -> None:
    site = await web_desk()
    proxy = BlackHoleProxy(site.base)
    await proxy.start()
    proxy_for.append(proxy)
    _page, widget = await open_widget(browser_context, f"{proxy.base}/web/demo")
    await widget.write("through the proxy")
    await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")

    proxy.kill()
    await widget.write("into the void")
    lost = widget.messages("customer").last
    await expect(lost).to_have_attribute("data-state", "sending")
    # no acknowledgement within 5 s: the widget gives up on that socket and sends it over a new one
    await expect(lost).to_have_attribute("data-state", "delivered", timeout=8000)
    assert await history_texts(site) == ["through the proxy", "into the void"]


# -- strict CSP, hostile host pages ------------------------------------------------------------------


class HeaderShop(Shop):
    """The other web site, whose pages may come with response headers (a Content-Security-Policy)."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: dict[str, dict[str, str]] = {}

    async def _page(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return web.Response(
            text=self.pages[name], content_type="text/html", headers=self.headers.get(name, {})
        )

    async def open_with(self, context: BrowserContext, html: str, headers: dict[str, str]) -> Page:
        self.headers[f"page{len(self.pages)}"] = headers
        return await self.open(context, html)


@pytest.fixture
async def header_shop() -> AsyncIterator[HeaderShop]:
    site = HeaderShop()
    await site.start()
    yield site
    await site.stop()


def strict_csp(relaydesk: str) -> str:
    """The policy the README gives a site embedding the widget (with a strict style-src of its own)."""
    ws = relaydesk.replace("http", "ws", 1)
    return (
        f"default-src 'self'; script-src 'self' {relaydesk}; connect-src 'self' {relaydesk} {ws}; "
        f"img-src 'self' {relaydesk}; style-src 'self' 'nonce-shopstyles'; object-src 'none'; base-uri 'self'"
    )


async def test_the_widget_works_and_is_styled_under_a_strict_content_security_policy(
    browser_context: BrowserContext, web_desk: WebDeskFactory, header_shop: HeaderShop
) -> None:
    site = await web_desk()
    await browser_context.add_init_script(
        "window.__csp = []; document.addEventListener('securitypolicyviolation',"
        " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    page = await header_shop.open_with(
        browser_context, shop_page(site), {"Content-Security-Policy": strict_csp(site.base)}
    )
    widget = Widget(page)
    await expect(widget.launcher).to_be_visible()
    box = await widget.launcher.bounding_box()
    viewport = page.viewport_size
    assert box is not None and viewport is not None
    assert (box["width"], box["height"]) == (60, 60)  # styled, and fixed at the bottom right
    assert (viewport["width"] - box["x"] - 60, viewport["height"] - box["y"] - 60) == (20, 20)
    await widget.open()
    send = page.locator(f"{HOST} .send")
    assert await send.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(31, 95, 191)"
    assert await widget.panel.evaluate("p => getComputedStyle(p).position") == "fixed"
    await widget.write("hello under a strict CSP")
    await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")
    room = site.workspace.room_of(await site.subject())
    await site.workspace.agent_writes(room.room_id, "answered")
    await expect(widget.texts("agent")).to_have_text(["answered"])
    assert await page.evaluate("window.__csp") == []
    assert await page.locator(f"{HOST}[style]").count() == 0


HOSTILE_CSS = """
* { text-transform: uppercase !important; letter-spacing: 6px !important; white-space: nowrap !important;
    font-family: Georgia, serif !important; line-height: 3 !important; direction: rtl !important; }
html, body { transform: translateZ(0); filter: blur(0); }
body { min-height: 3000px; margin: 0; }
div, section, aside, span, button, p, ol, li { display: none !important; }
[data-relaydesk-widget] { display: none !important; position: static !important; opacity: 0 !important; }
"""


async def test_hostile_host_css_does_not_reach_the_widget_or_move_its_launcher(
    browser_context: BrowserContext, web_desk: WebDeskFactory, shop: Shop
) -> None:
    site = await web_desk()
    html = shop_page(site).replace("<title>Shop</title>", f"<title>Shop</title><style>{HOSTILE_CSS}</style>")
    page = await shop.open(browser_context, html)
    widget = Widget(page)
    await expect(widget.launcher).to_be_visible()
    box = await widget.launcher.bounding_box()
    viewport = page.viewport_size
    assert box is not None and viewport is not None
    assert (viewport["width"] - box["x"] - 60, viewport["height"] - box["y"] - 60) == (20, 20)
    await widget.open()
    await widget.write("Mixed Case, two  spaces")
    text = widget.texts("customer").last
    await expect(text).to_have_text("Mixed Case, two  spaces")
    style = await text.evaluate(
        "t => { const s = getComputedStyle(t); return [s.textTransform, s.letterSpacing, s.fontFamily,"
        " getComputedStyle(t.parentElement).whiteSpace, getComputedStyle(t.closest('.panel')).direction]; }"
    )
    assert style[:2] == ["none", "normal"] and "Georgia" not in style[2]
    assert style[3:] == ["pre-wrap", "ltr"]


# -- accessibility -----------------------------------------------------------------------------------


async def axe_violations(page: Page) -> list[str]:
    """axe-core's serious and critical violations in the widget (WCAG 2.1 A/AA and best practices)."""
    if not AXE.exists():
        reason = "axe-core is not installed: run `make axe` (npm ci in tests/fixtures/axe)"
        if os.environ.get("RELAYDESK_REQUIRE_SERVICES") == "1":
            pytest.fail(f"RELAYDESK_REQUIRE_SERVICES=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate(
        """async () => {
            const r = await axe.run({ include: [["[data-relaydesk-widget]"]] }, {
                runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] },
            });
            return r.violations.filter(v => v.impact === "serious" || v.impact === "critical")
                .map(v => v.id + ": " + v.nodes.map(n => JSON.stringify(n.target)).join(", "));
        }"""
    )
    return list(result)


async def test_axe_finds_no_serious_violation_on_a_desktop_and_on_a_phone(
    browser: Browser, web_desk: WebDeskFactory, shop: Shop
) -> None:
    site = await web_desk(echo=True)
    sizes: list[ViewportSize] = [{"width": 1280, "height": 800}, {"width": 375, "height": 667}]
    for viewport in sizes:
        context = await browser.new_context(viewport=viewport)
        try:
            page = await shop.open(context, shop_page(site))
            widget = Widget(page)
            assert await axe_violations(page) == [], viewport  # closed
            await widget.open()
            await widget.write("Is https://example.com/p/1 in stock?")
            await expect(widget.texts("bot")).to_have_count(1)
            await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")
            await page.locator(f"{HOST} textarea").fill("x" * 3990)  # the counter shows
            assert await axe_violations(page) == [], viewport
        finally:
            await context.close()


async def test_a_keyboard_only_visitor_on_a_phone_gets_a_modal_dialog_with_large_targets(
    browser: Browser, web_desk: WebDeskFactory, shop: Shop
) -> None:
    site = await web_desk()
    context = await browser.new_context(
        viewport={"width": 375, "height": 667}, is_mobile=True, has_touch=True
    )
    try:
        html = shop_page(site).replace("<h1>Shop</h1>", '<h1>Shop</h1><a href="#cart">Cart</a>')
        html = html.replace("<title>", '<meta name="viewport" content="width=device-width"><title>')
        page = await shop.open(context, html)
        widget = Widget(page)
        await expect(widget.launcher).to_be_visible()
        await page.keyboard.press("Tab")  # the shop's link, then the launcher
        await page.keyboard.press("Tab")
        await expect(widget.launcher).to_be_focused()
        await page.keyboard.press("Enter")
        await expect(widget.input).to_be_focused()
        await expect(widget.panel).to_have_attribute("aria-modal", "true")
        assert await page.evaluate("document.body.inert") is True  # the page behind is out of reach
        await page.keyboard.type("typed with the keyboard only")
        await page.keyboard.press("Enter")
        await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")
        for _ in range(8):  # the focus goes round inside the dialog, never to the page behind it
            await page.keyboard.press("Tab")
            inside = await page.evaluate(
                "() => document.activeElement && document.activeElement.matches('[data-relaydesk-widget]')"
            )
            assert inside
        for _ in range(3):
            await page.keyboard.press("Shift+Tab")
            assert await page.evaluate("() => document.activeElement.matches('[data-relaydesk-widget]')")
        # every control is at least 44 x 44 CSS pixels
        sizes = await page.locator(HOST).evaluate(
            """h => [...h.shadowRoot.querySelectorAll("button, textarea")]
                .filter(b => b.getClientRects().length)
                .map(b => { const r = b.getBoundingClientRect();
                            return [b.getAttribute("aria-label") || b.className, r.width, r.height]; })"""
        )
        assert sizes and all(w >= 44 and h >= 44 for _, w, h in sizes), sizes
        await page.keyboard.press("Escape")
        await expect(widget.panel).to_be_hidden()
        assert await page.evaluate("document.body.inert") is False
        await expect(widget.launcher).to_be_focused()
    finally:
        await context.close()


async def test_a_phone_on_its_side_with_the_keyboard_up_still_shows_messages_and_the_input(
    browser: Browser, web_desk: WebDeskFactory
) -> None:
    site = await web_desk()
    context = await browser.new_context(
        viewport={"width": 740, "height": 300}, is_mobile=True, has_touch=True
    )
    try:
        page = await context.new_page()
        await page.goto(f"{site.base}/web/demo")
        widget = Widget(page)
        await widget.open()
        await widget.write("landscape")
        await expect(widget.texts("customer")).to_have_text(["landscape"])
        panel = await widget.panel.bounding_box()
        assert panel is not None and (panel["y"], panel["height"]) == (0, 300)  # all of it, not more
        scroller = await page.locator(f"{HOST} .scroller").bounding_box()
        composer = await widget.input.bounding_box()
        assert scroller is not None and scroller["height"] >= 100
        assert composer is not None and composer["y"] + composer["height"] <= 300
        await expect(widget.panel).to_have_attribute("aria-modal", "true")
    finally:
        await context.close()


async def test_screen_readers_hear_a_state_change_once_and_answers_while_the_panel_is_closed(
    browser_context: BrowserContext, web_desk: WebDeskFactory
) -> None:
    site = await web_desk()
    page, widget = await open_widget(browser_context, f"{site.base}/web/demo")
    assert await page.locator(f"{HOST} header, {HOST} [role=banner]").count() == 0  # the page has the banner
    assert await page.locator(f"{HOST} [role=log] > ol > li.message").count() == 0
    await page.locator(HOST).evaluate(
        """h => { window.__removed = [];
                  new MutationObserver(ms => ms.forEach(m => m.removedNodes.forEach(n =>
                      window.__removed.push(n.nodeName + ":" + n.textContent))))
                  .observe(h.shadowRoot.querySelector("[role=log]"), {childList: true, subtree: true}); }"""
    )
    await widget.write("Where is my parcel?")
    mine = widget.messages("customer").last
    await expect(mine).to_have_attribute("data-state", "delivered")
    room = site.workspace.room_of(await site.subject())
    await site.workspace.agent_writes(room.room_id, "On its way")
    await expect(mine).to_have_attribute("data-state", "read")
    assert await page.locator(f"{HOST} [role=log] > ol > li.message").count() == 2
    # the message was added once and its state changed in place: nothing was taken out and put back
    removed = await page.evaluate("window.__removed")
    assert not [r for r in removed if "Where is my parcel?" in r], removed
    await expect(mine.locator(".state")).to_have_text("· ✓✓ Read")

    await page.keyboard.press("Escape")
    await site.workspace.agent_writes(room.room_id, "It arrives tomorrow")
    live = page.locator(f"{HOST} .frame > [aria-live=polite]")
    await expect(live).to_have_text("New message from Alice: It arrives tomorrow")
    await expect(widget.badge).to_have_text("1")


async def test_the_focus_ring_contrasts_and_forced_colours_keep_the_edges(
    browser_context: BrowserContext, web_desk: WebDeskFactory
) -> None:
    site = await web_desk()
    page, widget = await open_widget(browser_context, f"{site.base}/web/demo")
    await page.keyboard.press("Shift+Tab")  # from the input to the attach button
    ring = await page.locator(f"{HOST} .attach").evaluate(
        "b => { const s = getComputedStyle(b); return [s.outlineStyle, s.outlineWidth, s.outlineColor]; }"
    )
    assert ring[0] == "solid" and float(ring[1].removesuffix("px")) >= 2
    assert contrast(ring[2], "rgb(255, 255, 255)") >= 3, ring  # against the composer's white

    await page.emulate_media(forced_colors="active")
    edges = await widget.panel.evaluate(
        """p => [getComputedStyle(p).borderTopStyle,
                 getComputedStyle(p.querySelector(".send")).borderTopStyle]"""
    )
    assert edges == ["solid", "solid"]


def contrast(color: str, background: str) -> float:
    """The WCAG contrast ratio of two ``rgb(...)`` colours."""

    def luminance(css: str) -> float:
        channels = [int(float(c)) / 255 for c in css[css.index("(") + 1 : css.index(")")].split(",")[:3]]
        lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    high, low = sorted((luminance(color), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


# -- languages and writing directions ---------------------------------------------------------------


async def test_a_chinese_visitor_on_a_right_to_left_page_gets_chinese_texts_and_the_right_directions(
    browser: Browser, web_desk: WebDeskFactory, shop: Shop
) -> None:
    site = await web_desk()
    context = await browser.new_context(locale="zh-CN")
    try:
        html = shop_page(site).replace("<html>", '<html dir="rtl" lang="ar">')
        page = await shop.open(context, html)
        widget = Widget(page)
        await expect(widget.launcher).to_have_attribute("aria-label", "打开聊天")
        await widget.open()
        await expect(page.locator(f"{HOST} .title")).to_have_text("联系我们")
        await expect(widget.input).to_have_attribute("placeholder", "输入消息…")
        await expect(widget.input).to_have_attribute("dir", "auto")
        assert await page.locator(f"{HOST} .frame").get_attribute("lang") == "zh"
        await widget.write("我的订单还没到")
        mine = widget.messages("customer").last
        await expect(mine).to_have_attribute("data-state", "delivered")
        await expect(mine.locator(".state")).to_contain_text("已送达")
        assert await mine.locator(".text").get_attribute("lang") == "zh"
        room = site.workspace.room_of(await site.subject())
        await site.workspace.agent_writes(room.room_id, "مرحبا، طلبك في الطريق")
        answer = widget.texts("agent").last
        await expect(answer).to_have_text("مرحبا، طلبك في الطريق")
        assert await answer.get_attribute("lang") == "ar"
        assert await answer.evaluate("t => getComputedStyle(t).direction") == "rtl"  # dir=auto
        # the widget's own texts keep their direction on the right-to-left page
        assert await widget.panel.evaluate("p => getComputedStyle(p).direction") == "ltr"
    finally:
        await context.close()


async def test_the_site_picks_the_language_and_an_input_method_confirming_never_sends(
    browser_context: BrowserContext, web_desk: WebDeskFactory, shop: Shop
) -> None:
    site = await web_desk()
    page = await shop.open(browser_context, shop_page(site, {"locale": "zh-Hans"}))
    widget = Widget(page)
    await widget.open()
    await expect(page.locator(f"{HOST} .send")).to_have_attribute("aria-label", "发送")
    await widget.input.fill("ni hao")
    sent = await widget.input.evaluate(
        """i => {
            const composing = new KeyboardEvent("keydown", {key: "Enter", bubbles: true, isComposing: true,
                                                            cancelable: true});
            const safari = new KeyboardEvent("keydown", {key: "Enter", bubbles: true, cancelable: true});
            Object.defineProperty(safari, "keyCode", {get: () => 229});  // Safari's IME confirm
            return [i.dispatchEvent(composing), i.dispatchEvent(safari)];
        }"""
    )
    assert sent == [True, True]  # neither was taken as "send"
    await expect(widget.input).to_have_value("ni hao")
    assert await widget.messages().count() == 0


# -- the composer --------------------------------------------------------------------------------------


async def test_the_limit_counts_characters_long_pastes_are_not_cut_and_the_input_grows(
    browser_context: BrowserContext, web_desk: WebDeskFactory
) -> None:
    site = await web_desk(web_extra="      max_text_length: 20\n")
    page, widget = await open_widget(browser_context, f"{site.base}/web/demo")
    counter = page.locator(f"{HOST} .counter")
    await expect(counter).to_be_hidden()
    await widget.input.fill("😀" * 20)  # 20 characters, 40 UTF-16 units: within the limit
    await expect(counter).to_have_text("20 of 20 characters")
    await widget.input.press("Enter")
    await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")

    pasted = "a" * 50
    await widget.input.fill(pasted)
    assert await widget.input.input_value() == pasted  # not silently cut
    await expect(counter).to_have_text("50 of 20 characters")
    await expect(widget.error).to_have_text(
        "Your message is 50 characters long; at most 20 can be sent. Shorten it or send it in parts."
    )
    await widget.input.press("Enter")
    await expect(widget.messages("customer")).to_have_count(1)  # not sent
    await expect(widget.input).to_have_attribute("aria-invalid", "true")
    await widget.input.fill("short")
    await expect(widget.error).to_have_text("")

    one = (await widget.input.bounding_box() or {"height": 0})["height"]
    await widget.input.fill("one\ntwo\nthree")
    await eventually(lambda: _taller(widget, one + 30))
    await widget.input.fill("1\n2\n3\n4\n5\n6\n7\n8\n9")
    five = (await widget.input.bounding_box() or {"height": 0})["height"]
    assert five < one + 5 * 20  # a few lines, then it scrolls


async def _taller(widget: Widget, height: float) -> bool:
    box = await widget.input.bounding_box()
    return box is not None and box["height"] >= height


async def test_links_in_answers_are_clickable_and_only_http(
    browser_context: BrowserContext, web_desk: WebDeskFactory
) -> None:
    site = await web_desk()
    _page, widget = await open_widget(browser_context, f"{site.base}/web/demo")
    await widget.write("help?")
    await expect(widget.messages("customer").last).to_have_attribute("data-state", "delivered")
    room = site.workspace.room_of(await site.subject())
    text = "See https://example.com/help?a=1&b=2. Not javascript:alert(1) nor <a href=x>this</a>"
    await site.workspace.agent_writes(room.room_id, text)
    answer = widget.texts("agent").last
    await expect(answer).to_have_text(text)
    links = answer.locator("a")
    await expect(links).to_have_count(1)
    assert await links.get_attribute("href") == "https://example.com/help?a=1&b=2"
    assert await links.get_attribute("rel") == "noopener noreferrer"
    assert await links.get_attribute("target") == "_blank"
    await expect(links).to_have_text("https://example.com/help?a=1&b=2")


# -- serving widget.js --------------------------------------------------------------------------------


async def test_widget_js_is_gzipped_with_an_etag_and_cached_for_good_under_its_version(
    web_desk: WebDeskFactory,
) -> None:
    site = await web_desk()
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        async with http.get(f"{site.base}/web/widget.js", headers={"Accept-Encoding": "gzip, br"}) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Encoding"] == "gzip"
            assert resp.headers["Cache-Control"] == "public, max-age=300"
            assert "Accept-Encoding" in resp.headers["Vary"]
            zipped = await resp.read()
            etag = resp.headers["ETag"]
        script = gzip.decompress(zipped)
        assert script.startswith(b"/* relaydesk web chat widget.") and len(zipped) < len(script) / 3
        async with http.get(
            f"{site.base}/web/widget.js", headers={"Accept-Encoding": "gzip", "If-None-Match": etag}
        ) as resp:
            assert resp.status == 304 and await resp.read() == b""
        async with http.get(f"{site.base}/web/widget.js", headers={"Accept-Encoding": "identity"}) as resp:
            assert resp.status == 200 and "Content-Encoding" not in resp.headers
            assert await resp.read() == script
        async with http.get(f"{site.base}/web/demo") as resp:
            demo = await resp.text()
        versioned = demo.split('src="', 1)[1].split('"', 1)[0]
        assert versioned.startswith("/web/widget.js?v=")
        async with http.get(f"{site.base}{versioned}") as resp:
            assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
