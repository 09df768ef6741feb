"""Campaigns: a segment on a cron schedule in a time zone, marketing consent, skips counted with their
reason, A/B arms with replies, opt-outs and clicks counted per variant, one fire across two workers and
across a restart, the frequency cap, and the CLI's dry run."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from bot_core.desk import Desk
from bridge.workspaces.matrix.devserver import free_port
from plugins.outreach.config import Campaign, OutreachConfig
from plugins.outreach.planning import variant_for
from plugins.outreach.plugin import OutreachPlugin
from storage.bus.redis_streams import RedisStreamsBus
from tests.bot_core.test_relay_loop import doubles
from tests.conftest import DeskFactory
from tests.plugins.outreach.helpers import (
    ENV,
    Clock,
    customer,
    outreach_yaml,
    sample,
    scrape,
    settle,
    started,
    tick,
)

CAMPAIGN = """        campaigns:
          - name: spring
            cron: "0 9 * * *"
            timezone: Europe/Berlin
            segment: {tags: [vip]}
            variants: [{name: a, template: spring_a}, {name: b, template: spring_b}]
"""
T0 = datetime(2026, 3, 28, 10, 0, tzinfo=UTC)  # Saturday, 11:00 in Berlin: today's 09:00 has passed
SLOT = datetime(2026, 3, 29, 7, 0, tzinfo=UTC)  # Sunday 09:00 in Berlin, the first day of summer time
WORDS = {"a": "Spring sale", "b": "spring collection"}


def _yaml(cap: int = 5) -> str:
    return outreach_yaml(campaigns=CAMPAIGN, cap=cap)


async def _desk(make_desk: DeskFactory, url: str, clock: Clock, **kwargs: object) -> Desk:
    desk = await make_desk(
        url,
        kwargs.pop("yaml_text", _yaml()),
        serve_http=True,
        http_port=free_port(),  # tracked links carry the public address: a real port
        environ=ENV,
        scheduler_clock=clock,
        scheduler_poll=3600,
        **kwargs,
    )
    return await started(desk)


def _campaign_texts(desk: Desk, user: str) -> list[str]:
    channel, _ = doubles(desk)
    return [t for t in channel.texts_to(user) if any(w in t for w in WORDS.values())]


def _plugin(desk: Desk) -> OutreachPlugin:
    plugin = desk.plugins["outreach"]
    assert isinstance(plugin, OutreachPlugin)
    return plugin


async def test_a_campaign_reaches_its_segment_with_consent_and_counts_each_variant(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    clock = Clock(T0)
    desk = await _desk(make_desk, sqlite_url, clock)
    for n in (1, 2, 3, 4):
        await customer(desk, f"u{n}", f"Vip{n} Person", consent=True, tags=("vip",))
    await customer(desk, "never", "Nico", tags=("vip",))  # never opted in
    await customer(desk, "stopped", "Stan", consent=False, tags=("vip",))  # opted out
    await customer(desk, "other", "Olga", consent=True)  # not in the segment
    outreach = _plugin(desk).outreach
    campaign = outreach.config.campaign("spring")
    assert campaign is not None
    arms = {
        f"u{n}": variant_for(campaign, n).name for n in (1, 2, 3, 4)
    }  # customer ids follow creation order

    # nothing before 09:00 Berlin; at 09:00 summer time (07:00 UTC) the campaign fires once
    assert await tick(desk, clock, SLOT - timedelta(seconds=1)) == 0
    assert await tick(desk, clock, SLOT) == 1
    await tick(desk, clock, SLOT)  # the per-customer send tasks it stored
    for user, arm in arms.items():
        texts = _campaign_texts(desk, user)
        assert len(texts) == 1 and WORDS[arm] in texts[0], (user, texts)
        assert texts[0].startswith(("Spring sale, Vip", "Vip"))
    assert [_campaign_texts(desk, u) for u in ("never", "stopped", "other")] == [[], [], []]
    assert await outreach.skip_reasons("spring") == {"no marketing consent": 1, "opted out of marketing": 1}

    # replies, an opt-out and clicks land on the variant each customer got
    channel, workspace = doubles(desk)
    await channel.customer_writes("u1", "Sounds great, do you have it in blue?")
    await channel.customer_writes("u2", "STOP")
    await settle(desk)
    link = re.search(r"http://\S+", _campaign_texts(desk, "u3")[0])
    assert link is not None
    async with aiohttp.ClientSession() as session:
        for _ in range(2):  # a second click by the same customer counts once
            async with session.get(link.group(0), allow_redirects=False) as resp:
                assert resp.status == 302
                assert resp.headers["Location"] == f"https://shop.example/spring?arm={arms['u3']}"
        async with session.get(link.group(0)[:-3] + "xyz", allow_redirects=False) as resp:
            assert resp.status == 404  # a forged link redirects nowhere and counts nothing
    stats = await outreach.stats("spring")
    expected: dict[str, dict[str, int]] = {
        arm: dict.fromkeys(("sent", "skipped", "replied", "opted_out", "clicked"), 0) for arm in "ab"
    }
    for arm in arms.values():
        expected[arm]["sent"] += 1
    expected[arms["u1"]]["replied"] += 1
    expected[arms["u2"]]["opted_out"] += 1
    expected[arms["u3"]]["clicked"] += 1
    expected[variant_for(campaign, 5).name]["skipped"] += 1
    expected[variant_for(campaign, 6).name]["skipped"] += 1
    assert stats == expected
    # the reply is in the customer's room like any message, after the outreach it answers
    room = workspace.room_of("u1").room_id
    assert workspace.texts(room, "customer_message")[-1] == "Sounds great, do you have it in blue?"
    assert any(t.startswith("📣 Outreach: template 'spring_") for t in workspace.texts(room, "notice"))
    await workspace.agent_writes(room, "!outreach stats spring")
    await settle(desk)
    shown = workspace.texts(room, "notice")[-1]
    assert shown.startswith("Campaign 'spring':") and f"opted out {stats['a']['opted_out']}" in shown


async def test_two_workers_fire_the_campaign_once(
    postgres_url: str, redis_prefix: tuple[str, str], make_desk: DeskFactory
) -> None:
    redis_url, prefix = redis_prefix
    clock = Clock(T0)
    desks = [
        await _desk(
            make_desk, postgres_url, clock, redis=redis_url, bus=RedisStreamsBus(redis_url, prefix=prefix)
        )
        for _ in range(2)
    ]
    for n in (1, 2):
        await customer(desks[0], f"u{n}", f"Vip{n}", consent=True, tags=("vip",))
    await customer(desks[0], "never", "Nico", tags=("vip",))  # never opted in: skipped
    clock.at = SLOT
    fired = await asyncio.gather(*(d.scheduler.tick() for d in desks for _ in range(3)))
    assert sum(fired) == 1  # one scan of one worker won the slot
    for desk in desks:
        await settle(desk)
    await asyncio.gather(*(d.scheduler.tick() for d in desks for _ in range(3)))  # the send tasks
    for desk in desks:
        await settle(desk)
    for user in ("u1", "u2"):
        assert sum(len(_campaign_texts(d, user)) for d in desks) == 1
    # /metrics: both workers read the same records, so both export the same figures
    scraped = [
        {k: v for k, v in (await scrape(d)).items() if k[0].startswith("relaydesk_outreach_")} for d in desks
    ]
    assert scraped[0] == scraped[1] and scraped[0]
    spring = _plugin(desks[0]).outreach.config.campaign("spring")
    assert spring is not None
    figures = "relaydesk_outreach_campaign_customers"
    for got in scraped:
        sent = [sample(got, figures, campaign="spring", variant=arm, outcome="sent") for arm in "ab"]
        assert sum(sent) == 2
        assert (
            sum(sample(got, figures, campaign="spring", variant=arm, outcome="skipped") for arm in "ab") == 1
        )
        arm = variant_for(spring, 3).name
        assert (
            sample(
                got,
                "relaydesk_outreach_campaign_skipped",
                campaign="spring",
                variant=arm,
                reason="no_consent",
            )
            == 1
        )


async def test_a_restart_neither_loses_nor_repeats_a_campaign_and_the_cap_holds(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    clock = Clock(T0)
    desk = await _desk(make_desk, sqlite_url, clock, yaml_text=_yaml(cap=1))
    await customer(desk, "u1", "Vip1", consent=True, tags=("vip",))
    assert await tick(desk, clock, SLOT) == 1  # the campaign fired: the send task is stored, not yet run
    await desk.stop()

    desk = await _desk(make_desk, sqlite_url, clock, yaml_text=_yaml(cap=1))  # its start scan sends it
    await doubles(desk)[0].sent.wait_for(lambda _: len(_campaign_texts(desk, "u1")) == 1)
    assert await tick(desk, clock, SLOT + timedelta(hours=3)) == 0  # the same day again: nothing
    await desk.stop()

    clock.at = SLOT + timedelta(days=1, hours=2)  # down over the next slot: fired once at start
    desk = await _desk(make_desk, sqlite_url, clock, yaml_text=_yaml(cap=1))
    await tick(desk, clock, clock.at)
    await tick(desk, clock, clock.at)
    assert _campaign_texts(desk, "u1") == []  # the frequency cap (1 in 7 days) held it back
    reasons = await _plugin(desk).outreach.skip_reasons("spring")
    assert reasons == {"frequency cap": 1}


async def test_the_dry_run_lists_who_would_get_what_and_who_is_skipped_why(
    sqlite_url: str, make_desk: DeskFactory, tmp_path: Path
) -> None:
    clock = Clock(T0)
    desk = await _desk(make_desk, sqlite_url, clock)
    await customer(desk, "u1", "Vip1 Person", consent=True, tags=("vip",), timezone="Europe/Berlin")
    await customer(desk, "never", "Nico", tags=("vip",))
    await desk.stop()
    config = tmp_path / "plugins.yaml"
    config.write_text(f'storage: {{database: "{sqlite_url}"}}\n' + _yaml())
    script = (
        "import argparse, sys\n"
        "from plugins.outreach.cli import register\n"
        "parser = argparse.ArgumentParser(prog='relaydesk')\n"
        "register(parser.add_subparsers(dest='command', required=True))\n"
        "args = parser.parse_args(sys.argv[1:])\n"
        "raise SystemExit(args.func(args))\n"
    )

    async def relaydesk(*argv: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            *argv,
            "-c",
            str(config),
            env={**os.environ, **ENV, "PYTHONPATH": str(Path.cwd())},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    code, out = await relaydesk("outreach", "campaign", "spring", "--dry-run")
    assert code == 0, out
    arm = variant_for(_campaign(), 1)
    assert "Campaign 'spring' (dry run, nothing sent): 1 would get it, 1 skipped, of 2 in the segment." in out
    assert f"SEND customer 1 (Vip1 Person) on customers: variant {arm.name} template spring_{arm.name}" in out
    assert "SKIP customer 2 (Nico): no marketing consent (never opted in)" in out
    code, out = await relaydesk("outreach", "preview", "order_shipped", "1", "--var", "order_id=A-7")
    assert (code, out.splitlines()[-1]) == (0, "Hi Vip1, your order A-7 is on its way."), out
    code, out = await relaydesk("outreach", "preview", "order_shipped", "1")
    assert (code, out.strip()) == (
        1,
        "NOT SENT: template 'order_shipped': no value for order_id "
        "(pass them with --var NAME=VALUE or set the customer's attributes)",
    )


def _campaign() -> Campaign:
    """The campaign as the tests' plugins.yaml declares it (its arms are what matters)."""
    config = OutreachConfig.model_validate(
        {
            "templates": {
                "spring_a": {"text": {"en": "a"}},
                "spring_b": {"text": {"en": "b"}},
            },
            "campaigns": [
                {
                    "name": "spring",
                    "cron": "0 9 * * *",
                    "variants": [
                        {"name": "a", "template": "spring_a"},
                        {"name": "b", "template": "spring_b"},
                    ],
                }
            ],
        }
    )
    campaign = config.campaign("spring")
    assert campaign is not None
    return campaign
