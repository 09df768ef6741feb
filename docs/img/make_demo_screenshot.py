"""Make docs/img/demo.png: the widget on the demo page beside the agent's Matrix room, from a real run.

Starts a throwaway Synapse and relaydesk (matrix + web + the FAQ with the sample knowledge base) in a
temporary directory, lets a customer write in headless Chromium (Debian's /usr/bin/chromium): the FAQ
answers a routine question, the customer asks for a person, and the agent answers with a nio client; then
renders the room's transcript (read back from Synapse) next to a screenshot of the widget.

    .venv/bin/python docs/img/make_demo_screenshot.py
"""

from __future__ import annotations

import asyncio
import base64
import html
import secrets
import tempfile
from pathlib import Path

from nio import AsyncClient, RoomMessagesResponse
from playwright.async_api import async_playwright

from bot_core.config import parse_config
from bot_core.desk import Desk
from bridge.workspaces.matrix.devserver import DevHomeserver, free_port, write_registration
from storage.db import migrate
from storage.models import Identity, Room

OUT = Path(__file__).with_name("demo.png")


async def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="relaydesk-shot-"))
    port = free_port()
    registration = write_registration(
        root / "reg.yaml", url=f"http://127.0.0.1:{port}", server_name="localhost"
    )
    password = secrets.token_urlsafe(12)
    synapse = DevHomeserver(
        root / "synapse",
        server_name="localhost",
        registrations=[registration.path],
        agents=[("agent", password)],
    )
    await synapse.start()
    url = f"sqlite://{root / 'relaydesk.db'}"
    await migrate(url)
    config = parse_config(
        f"""
server: {{host: 127.0.0.1, port: {port}}}
storage: {{database: "{url}"}}
plugins:
  - matrix: {{homeserver: "{synapse.base_url}", registration: "{registration.path}", agents: ["@agent:localhost"]}}
  - web: {{dev_secret_file: "{root / "secret"}", upload_dir: "{root / "uploads"}"}}
  - faq: {{knowledge_base: "{root / "faq.yaml"}", seed_from: example, matcher: lexical}}
""",
        "plugins.yaml",
        environ={},
    )
    desk = Desk(config)
    await desk.start()
    agent = AsyncClient(synapse.base_url, "@agent:localhost")
    try:
        await agent.login(password)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path="/usr/bin/chromium")
            page = await browser.new_page(viewport={"width": 760, "height": 760}, device_scale_factor=1)
            await page.goto(f"http://127.0.0.1:{port}/web/demo")
            widget = "[data-relaydesk-widget]"
            await page.click(f"{widget} .launcher")
            await page.fill(f"{widget} textarea", "How long does delivery take?")
            await page.press(f"{widget} textarea", "Enter")
            await page.wait_for_selector(f"{widget} li.bot")  # the FAQ's answer
            await page.fill(
                f"{widget} textarea", "My Ridge 2 tent arrived with a broken pole. Can I talk to an agent?"
            )
            await page.press(f"{widget} textarea", "Enter")
            await page.wait_for_function(
                f"document.querySelector('{widget}').shadowRoot.querySelectorAll('li.bot').length >= 2"
            )  # the hand-over: what happens next
            await desk.wait_settled(30)
            identity = await Identity.get(channel="web")
            room_id = (await Room.get(customer_id=identity.customer_id)).external_id
            await agent.sync(timeout=0)
            await agent.join(room_id)
            await agent.room_send(
                room_id,
                "m.room.message",
                {
                    "msgtype": "m.text",
                    "body": "Sorry about that! A new pole ships today, tracking number NW-4471.",
                },
            )
            await page.wait_for_selector(f"{widget} li.agent")
            await page.fill(f"{widget} textarea", "Great, thank you!")
            await page.press(f"{widget} textarea", "Enter")
            await page.wait_for_selector(f'{widget} li.customer[data-state="delivered"]')
            await desk.wait_settled(30)
            shot = await page.screenshot()

            room = await agent.room_messages(room_id, start="", limit=50)
            assert isinstance(room, RoomMessagesResponse)
            names: dict[str, str] = {}
            lines = []
            for event in reversed(room.chunk):
                source = event.source
                content = source.get("content", {})
                if source.get("type") == "m.room.member" and content.get("displayname"):
                    names[source["state_key"]] = content["displayname"]
                if source.get("type") != "m.room.message" or "m.new_content" in content:
                    continue
                sender = source["sender"]
                who = names.get(sender, sender.split(":")[0].lstrip("@"))
                notice = content.get("msgtype") == "m.notice"
                body = html.escape(content.get("body", "")).replace("\n", "<br>")
                lines.append(
                    f'<div class="ev{" notice" if notice else ""}"><b>{html.escape(who)}</b><p>{body}</p></div>'
                )
            name = await agent.room_get_state_event(room_id, "m.room.name")
            title = html.escape(name.content.get("name", room_id))  # type: ignore[union-attr]
            image = base64.b64encode(shot).decode()
            composed = f"""<!doctype html><meta charset=utf-8><style>
body {{ margin:0; display:flex; gap:0; font:14px/1.45 system-ui,sans-serif; background:#fff; }}
.left {{ width:760px; }} .left img {{ display:block; }}
.right {{ width:560px; height:760px; border-left:1px solid #ccd; display:flex; flex-direction:column; }}
.top {{ padding:14px 18px; background:#f2f4f7; border-bottom:1px solid #dde; }}
.top small {{ display:block; color:#667; }}
.log {{ padding:10px 18px; overflow:hidden; flex:1; }}
.ev {{ margin:0 0 10px; }} .ev b {{ color:#1f5fbf; }} .ev p {{ margin:2px 0 0; white-space:pre-wrap; }}
.notice p {{ color:#556; font-size:13px; }} .notice b {{ color:#889; }}
.cap {{ position:absolute; bottom:8px; padding:2px 8px; background:#222; color:#fff; font-size:12px; border-radius:4px; }}
</style>
<div class=left><img src="data:image/png;base64,{image}"></div>
<div class=right><div class=top><b>{title}</b><small>The agent's room in Matrix (as user "agent", homeserver {synapse.base_url})</small></div>
<div class=log>{"".join(lines)}</div></div>
<span class=cap style="left:8px">Customer: the widget on the demo page</span>
<span class=cap style="left:768px">Agent: the portal room in Matrix</span>"""
            out = await browser.new_page(viewport={"width": 1321, "height": 760})
            await out.set_content(composed)
            await out.screenshot(path=str(OUT))
            await browser.close()
    finally:
        await agent.close()
        await desk.stop(timeout=10)
        await synapse.stop()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    asyncio.run(main())
