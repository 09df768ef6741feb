"""Make docs/img/digest.png: the supervisor's daily digest as an agent sees it in the Matrix ops room.

Starts a throwaway Synapse and relaydesk (the Matrix workspace and the supervisor plugin) in a temporary
directory, writes two made-up busy Tuesdays of conversations into the database (1 December 2026 and the
week before, through tests/bot_core/test_analytics.py's helpers, with a fixed random seed), has the
supervisor post the digest for 1 December, reads the
ops room back from Synapse as the agent (the text and the uploaded chart) and renders it with headless
Chromium (Debian's /usr/bin/chromium).

    PYTHONPATH=. .venv/bin/python docs/img/make_digest_screenshot.py
"""

from __future__ import annotations

import asyncio
import base64
import html
import random
import secrets
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo

from nio import AsyncClient, DownloadResponse, RoomMessagesResponse
from playwright.async_api import async_playwright

from bot_core.config import parse_config
from bot_core.desk import Desk
from bridge.workspaces.matrix.devserver import DevHomeserver, free_port, write_registration
from plugins.supervisor import SupervisorPlugin
from storage.db import close_db, init_db, migrate
from tests.bot_core.test_analytics import open_conversation

# conversations opened per hour of a working day (Berlin), roughly
PROFILE = [0, 0, 0, 0, 0, 0, 1, 2, 6, 9, 10, 8, 6, 7, 9, 8, 6, 4, 3, 2, 2, 1, 1, 0]
QUESTIONS = ["Can I pay by invoice?", "Do you ship to Norway?", "Is the Ridge 2 tent waterproof?"]


async def busy_day(day: datetime, seed: int, busier: float) -> None:
    """A working day of conversations: most answered by the FAQ, some handed over and waited for."""
    rng = random.Random(seed)
    zone = ZoneInfo("Europe/Berlin")
    n = 0
    for hour, weight in enumerate(PROFILE):
        for _ in range(round(weight * busier)):
            n += 1
            local = datetime(day.year, day.month, day.day, hour, rng.randrange(60), tzinfo=zone)
            opened = local.astimezone(UTC)
            channel = rng.choice(["telegram", "web", "web"])
            tags = [f"csat:{rng.choice([3, 4, 4, 5, 5])}"] if rng.random() < 0.3 else []
            c = await open_conversation(channel, f"{seed}-{n}", opened, team="support", tags=tags)
            if rng.random() < 0.55:  # the FAQ answers
                await c.says(opened + timedelta(seconds=2), "bot:faq")
                await c.faq(1, 1, [])
                continue
            await c.faq(1, 0, [rng.choice(QUESTIONS)] if rng.random() < 0.5 else [])
            queued = opened + timedelta(seconds=rng.randrange(20, 90))
            await c.log("queued", "bot", "queued", queued)
            busy = 1 + (PROFILE[hour] / 10) * 4  # waits grow with the load
            wait = timedelta(seconds=rng.expovariate(1 / (90 * busy)))
            if rng.random() < 0.06:
                await c.log("closed", "queued", "closed", queued + wait, agent="system")
                continue
            agent = rng.choice(["alice", "bob", "carol"])
            await c.log("assigned", "queued", "assigned", queued + wait, agent=agent)
            await c.says(queued + wait + timedelta(seconds=20), agent)
            end = queued + wait + timedelta(minutes=rng.randrange(4, 25))
            await c.log("closed", "assigned", "closed", end, agent=agent)


OUT = Path(__file__).with_name("digest.png")


async def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="relaydesk-digest-"))
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
    await init_db(url)
    await busy_day(datetime(2026, 11, 24, tzinfo=UTC), 1, 1.0)
    await busy_day(datetime(2026, 12, 1, tzinfo=UTC), 2, 1.2)
    await close_db()
    config = parse_config(
        f"""
server: {{host: 127.0.0.1, port: {port}}}
storage: {{database: "{url}"}}
plugins:
  - matrix: {{homeserver: "{synapse.base_url}", registration: "{registration.path}", agents: ["@agent:localhost"]}}
  - supervisor: {{use: "plugins.supervisor:SupervisorPlugin", config: {{teams: {{support: {{timezone: Europe/Berlin}}}}}}}}
""",
        "plugins.yaml",
        environ={},
    )
    desk = Desk(config)
    await desk.start()
    agent = AsyncClient(synapse.base_url, "@agent:localhost")
    try:
        await agent.login(password)
        plugin = cast(SupervisorPlugin, desk.plugins["supervisor"])
        await plugin.digests_now(datetime(2026, 12, 2, 7, 0, tzinfo=UTC))
        assert await desk.wait_settled(60)
        sync = await agent.sync(timeout=0)
        room_id = next(iter(sync.rooms.invite))  # type: ignore[union-attr]
        await agent.join(room_id)
        room = await agent.room_messages(room_id, start="", limit=20)
        assert isinstance(room, RoomMessagesResponse)
        blocks = []
        for event in reversed(room.chunk):
            content = event.source.get("content", {})
            if event.source.get("type") != "m.room.message":
                continue
            if content.get("msgtype") == "m.image":
                image = await agent.download(content["url"])
                assert isinstance(image, DownloadResponse)
                data = base64.b64encode(image.body).decode()
                blocks.append(f'<img src="data:image/png;base64,{data}">')
            else:
                blocks.append(f"<pre>{html.escape(content.get('body', ''))}</pre>")
        name = await agent.room_get_state_event(room_id, "m.room.name")
        title = html.escape(name.content.get("name", room_id))  # type: ignore[union-attr]
        composed = f"""<!doctype html><meta charset=utf-8><style>
body {{ margin:0; font:14px/1.45 system-ui,sans-serif; background:#fff; width:860px; }}
.top {{ padding:14px 18px; background:#f2f4f7; border-bottom:1px solid #dde; }}
.top small {{ display:block; color:#667; }}
.ev {{ padding:12px 18px; }} .ev b {{ color:#1f5fbf; }}
pre {{ font:13px/1.45 ui-monospace,monospace; margin:4px 0 10px; }}
img {{ display:block; border:1px solid #dde; border-radius:6px; }}
</style>
<div class=top><b>{title}</b><small>The team's ops room in Matrix (as user "agent"): the daily digest</small></div>
<div class=ev><b>relaydesk</b>{"".join(blocks)}</div>"""
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path="/usr/bin/chromium")
            page = await browser.new_page(viewport={"width": 860, "height": 400}, device_scale_factor=1)
            await page.set_content(composed)
            await page.screenshot(path=str(OUT), full_page=True)
            await browser.close()
    finally:
        await agent.close()
        await desk.stop(timeout=10)
        await synapse.stop()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    asyncio.run(main())
