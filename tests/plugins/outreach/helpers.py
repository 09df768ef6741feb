"""What the outreach tests share: a desk config, a settable clock, customers set up like real ones."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bot_core.desk import Desk
from tests.bot_core.test_relay_loop import doubles

TOKEN = "shop-token-for-the-tests"
SIGNING = "shop-signing-secret"
LINKS = "link-secret-for-the-tests"
ENV = {"OUTREACH_TOKEN": TOKEN, "OUTREACH_SIGNING": SIGNING, "OUTREACH_LINKS": LINKS}

TEMPLATES = """
      templates:
        order_shipped:
          text:
            en: "Hi {{first_name}}, your order {{order_id}} is on its way."
            zh: "{{first_name}}，您好！您的订单 {{order_id}} 已发货。"
          channels:
            whatsapp: {template: order_shipped_v2, variables: [first_name, order_id]}
        spring_a:
          topic: marketing
          text: {en: "Spring sale, {{first_name}}: 20 % off. {{link.shop}}"}
          links: {shop: "https://shop.example/spring?arm=a"}
        spring_b:
          topic: marketing
          text: {en: "{{first_name}}, our spring collection is here: {{link.shop}}"}
          links: {shop: "https://shop.example/spring?arm=b"}
      events: {order_shipped: order_shipped}
"""  # noqa: RUF001


def outreach_yaml(
    *,
    signing: bool = False,
    quiet: bool = True,
    campaigns: str = "",
    cap: int = 5,
    rate: str = "",
    metrics_refresh: float = 30,
    channels: str = '  - customers: {use: "bot_core.testing:MemoryChannel"}\n',
) -> str:
    """A plugins.yaml with the doubles (or other channels) and the outreach plugin."""
    signing_line = '      signing_secret: "${OUTREACH_SIGNING}"\n' if signing else ""
    return (
        "plugins:\n"
        + channels
        + '  - desk: {use: "bot_core.testing:MemoryWorkspace"}\n'
        + '  - outreach:\n      use: "plugins.outreach:OutreachPlugin"\n      config:\n'
        + '        token: "${OUTREACH_TOKEN}"\n        link_secret: "${OUTREACH_LINKS}"\n'
        + signing_line.replace("      ", "        ", 1)
        + "        default_timezone: Europe/Berlin\n"
        + f"        quiet_hours: {{enabled: {str(quiet).lower()}}}\n"
        + f"        frequency_cap: {{max: {cap}, days: 7}}\n"
        + f"        metrics_refresh: {metrics_refresh}\n"
        + (f"        rate_limits: {rate}\n" if rate else "")
        + TEMPLATES.replace("\n      ", "\n        ")
        + campaigns
    )


class Clock:
    """The time the test says it is."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


async def post_event(
    desk: Desk, body: Any, *, token: str = TOKEN, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """POST ``body`` (JSON, or bytes as given) to the desk's event route; (status, JSON answer)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **(headers or {})}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://127.0.0.1:{desk.port}/outreach/events", data=data, headers=sent
        ) as resp:
            return resp.status, await resp.json()


async def get_event(desk: Desk, event_id: str, *, token: str = TOKEN) -> tuple[int, dict[str, Any]]:
    """GET what became of an event; (status, JSON answer)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"http://127.0.0.1:{desk.port}/outreach/events/{event_id}",
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            return resp.status, await resp.json()


async def scrape(desk: Desk) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics as Prometheus does: every sample by name and sorted labels."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{desk.port}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """One sample's value (0 when absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def customer(
    desk: Desk,
    user: str,
    name: str,
    *,
    consent: bool | None = None,
    tags: tuple[str, ...] = (),
    **attributes: str,
) -> None:
    """A customer wrote once (with ``attributes``); an agent recorded their marketing consent and tags."""
    channel, workspace = doubles(desk)
    await channel.customer_writes(user, "hello", name=name, attributes=attributes)
    await settle(desk)
    room = workspace.room_of(user).room_id
    if consent is not None:
        await workspace.agent_writes(room, f"!consent marketing {'on' if consent else 'off'}")
    if tags:
        await workspace.agent_writes(room, "!tag " + " ".join(tags))
    await workspace.agent_writes(room, "!close")
    await settle(desk)


async def settle(desk: Desk, timeout: float = 15) -> None:
    """Every event handled and every delivery made."""
    assert await desk.wait_settled(timeout)


async def tick(desk: Desk, clock: Clock, at: datetime) -> int:
    """Move the clock to ``at`` and let the desk's scheduler scan once; wait for what it fired."""
    clock.at = at
    fired = await desk.scheduler.tick()
    await settle(desk)
    return fired


async def started(desk: Desk) -> Desk:
    """Wait for the scan the desk makes at start (so it never runs on a clock moved since)."""
    await asyncio.wait_for(desk.scheduler.first_scan_done.wait(), 10)
    return desk
