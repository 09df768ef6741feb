"""Service figures from the database (bot_core.analytics) on a scripted day, on SQLite and PostgreSQL.

The day is written as the conversation service and the relay store it (conversations, their log rows,
customer, agent and bot messages, the FAQ's per-conversation state, CSAT tags) with chosen times, and
every figure is checked against the value worked out by hand in the comments.
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot_core.analytics import (
    day_bounds,
    live_figures,
    parse_since,
    percentile,
    service_report,
)
from bot_core.context import StateStore
from bot_core.events import utcnow
from storage.db import close_db, init_db
from storage.models import (
    Conversation,
    ConversationLog,
    Customer,
    Direction,
    Identity,
    Message,
    OutboxItem,
    OutboxStatus,
    OutboxTarget,
    Room,
    Team,
)

DAY = datetime(2026, 12, 1, tzinfo=UTC)
_keys = itertools.count()


def at(hh: int, mm: int, ss: int = 0, day: datetime = DAY) -> datetime:
    """A moment of the scripted day (UTC)."""
    return day.replace(hour=hh, minute=mm, second=ss)


@dataclass
class Script:
    """Writes a conversation the way the core stores it, at chosen times."""

    conversation: Conversation

    async def log(
        self,
        what: str,
        from_state: str | None,
        to_state: str,
        when: datetime,
        *,
        team: str | None = None,
        agent: str | None = None,
    ) -> None:
        """One conversation-log row (and the conversation's state), as ConversationService.change writes it."""
        n = next(_keys)
        await ConversationLog.create(
            conversation_id=self.conversation.id,
            what=what,
            from_state=from_state,
            to_state=to_state,
            team=team,
            agent_id=agent,
            by=agent or "plugin:faq",
            event_key=f"e{n}",
            action_key=f"a{n}",
            at=when,
        )
        self.conversation.state = to_state  # type: ignore[assignment]
        stamp = {"queued": "queued_at", "assigned": "assigned_at", "closed": "closed_at"}.get(to_state)
        if stamp:
            setattr(self.conversation, stamp, when)
        if team:
            self.conversation.team = (await Team.get_or_create(name=team))[0]
        await self.conversation.save()

    async def says(self, when: datetime, author: str, text: str = "…") -> None:
        """A message: ``customer`` (inbound), ``bot:<plugin>`` or an agent's name (outbound)."""
        direction = Direction.INBOUND if author == "customer" else Direction.OUTBOUND
        await Message.create(
            conversation_id=self.conversation.id,
            direction=direction,
            author=author,
            text=text,
            channel=self.conversation.identity.channel,
            created_at=when,
        )

    async def faq(self, questions: int, answered: int, unanswered: list[str]) -> None:
        """The FAQ plugin's stored state of this conversation (as its ``ctx.state`` keeps it)."""
        state = {"questions": questions, "answered": answered, "unanswered": unanswered, "sent": []}
        await StateStore("faq", f"conversation:{self.conversation.id}").set("conversation", state)


async def open_conversation(
    channel: str,
    user: str,
    when: datetime,
    *,
    team: str,
    locale: str | None = "en-GB",
    tags: list[str] | None = None,
    customer: Customer | None = None,
) -> Script:
    """A customer's conversation opened at ``when`` (the ``opened`` log row and their first message)."""
    if customer is None:
        customer = await Customer.create(display_name=user, locale=locale)
    identity, _ = await Identity.get_or_create(
        channel=channel, external_id=user, defaults={"customer": customer}
    )
    room, _ = await Room.get_or_create(
        customer=customer, workspace="matrix", defaults={"external_id": f"!room-{user}:example.org"}
    )
    team_row = (await Team.get_or_create(name=team))[0]
    conversation = await Conversation.create(
        customer=customer, identity=identity, room=room, team=team_row, created_at=when, tags=tags or []
    )
    conversation.identity = identity
    script = Script(conversation)
    await script.log("opened", None, "bot", when)
    await script.says(when, "customer", "hello")
    return script


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[str]:
    """The migrated database (SQLite and PostgreSQL), connected."""
    await init_db(database_url)
    try:
        yield database_url
    finally:
        await close_db()


async def scripted_day() -> None:
    """Five conversations on 2026-12-01 (UTC), two teams, two channels, three agents."""
    # C1 telegram/support: the FAQ answers both questions; nobody else involved (bot-resolved)
    c1 = await open_conversation("telegram", "u1", at(9, 0), team="support")
    await c1.says(at(9, 0, 5), "bot:faq")
    await c1.faq(2, 2, [])
    # C2 telegram/support: queued 09:12, alice takes it 09:15 (wait 180 s, first response 180 s),
    # customer 09:20 → alice 09:22 (next response 120 s), closed 09:30 (handle 900 s, resolution 1200 s)
    c2 = await open_conversation("telegram", "u2", at(9, 10), team="support")
    await c2.faq(1, 0, ["Can I pay by invoice?"])
    await c2.log("queued", "bot", "queued", at(9, 12))
    await c2.log("assigned", "queued", "assigned", at(9, 15), agent="alice")
    await c2.says(at(9, 15), "alice")
    await c2.says(at(9, 20), "customer")
    await c2.says(at(9, 22), "alice")
    await c2.log("closed", "assigned", "closed", at(9, 30), agent="alice")
    # C3 web/billing, German: queued 10:01, the customer gives up, closed while queued 10:05 (abandoned)
    c3 = await open_conversation("web", "u3", at(10, 0), team="billing", tags=["lang:de"])
    await c3.faq(1, 0, ["can i pay by INVOICE"])
    await c3.log("queued", "bot", "queued", at(10, 1))
    await c3.log("closed", "queued", "closed", at(10, 5), agent="system")
    # C4 web/support → billing, no locale: queued 11:00, bob 11:10 (wait 600 s), first answer 11:10:30
    # (630 s); customer 11:12; transferred 11:20; carol 11:25, answers 11:26 (next response 840 s),
    # closed 11:40 (handle 600 + 900 = 1500 s, resolution 2400 s); CSAT 4
    c4 = await open_conversation("web", "u4", at(11, 0), team="support", locale=None, tags=["csat:4"])
    await c4.log("queued", "bot", "queued", at(11, 0))
    await c4.log("assigned", "queued", "assigned", at(11, 10), agent="bob")
    await c4.says(at(11, 10, 30), "bob")
    await c4.says(at(11, 12), "customer")
    await c4.log("transferred", "assigned", "queued", at(11, 20), team="billing", agent="bob")
    await c4.log("assigned", "queued", "assigned", at(11, 25), agent="carol")
    await c4.says(at(11, 26), "carol")
    await c4.log("closed", "assigned", "closed", at(11, 40), agent="carol")
    # C5: C2's customer again at 12:00 (C2 reopened); alice claims from bot 12:05, answers 12:05:30
    # (first response 330 s from opened), closed 12:35 (handle 1800 s, resolution 2100 s); CSAT 2
    c5 = await open_conversation(
        "telegram", "u2", at(12, 0), team="support", tags=["csat:2"], customer=await c2.conversation.customer
    )
    await c5.log("assigned", "bot", "assigned", at(12, 5), agent="alice")
    await c5.says(at(12, 5, 30), "alice")
    await c5.log("closed", "assigned", "closed", at(12, 35), agent="alice")
    # outside the range: the day before, and the day after
    await open_conversation("telegram", "early", at(23, 59, day=DAY - timedelta(days=1)), team="support")
    await open_conversation("telegram", "late", at(0, 0, day=DAY + timedelta(days=1)), team="support")


async def test_figures_of_a_scripted_day(db: str) -> None:
    await scripted_day()
    report = await service_report(at(0, 0), at(0, 0) + timedelta(days=1))
    o = report.overall
    assert o.volume == 5
    assert o.by_channel == {"telegram": 3, "web": 2}
    assert o.bot_resolved == pytest.approx(1 / 5)  # C1
    assert o.handover_rate == pytest.approx(3 / 5)  # C2, C3, C4 were queued by the bot
    assert (o.queue_wait_p50, o.queue_wait_p90) == (180, 600)  # C2 180, C4 600 (nearest rank)
    assert (o.queued, o.abandoned) == (3, 1)
    assert o.abandonment_rate == pytest.approx(1 / 3)
    assert (o.first_response_p50, o.first_response_p90) == (330, 630)  # 180, 330, 630
    assert o.next_response_avg == pytest.approx(480)  # (120 + 840) / 2
    assert o.handle_avg == pytest.approx(1400)  # (900 + 1500 + 1800) / 3
    assert (o.closed, o.resolution_p50) == (4, 1200)  # 300, 1200, 2100, 2400
    assert o.reopen_rate == pytest.approx(1 / 4)  # C2 (its customer came back at 12:00)
    assert o.transfers == 1
    assert (o.csat_avg, o.csat_responses) == (3.0, 2)
    assert (o.faq_questions, o.faq_hit_rate) == (4, 0.5)
    assert report.top_unanswered == [("Can I pay by invoice?", 2)]

    assert set(report.by_team) == {"support", "billing"}
    assert report.by_team["billing"].volume == 2  # C3, and C4 after its transfer
    assert report.by_team["billing"].abandoned == 1
    assert report.by_team["support"].bot_resolved == pytest.approx(1 / 3)
    assert {k: v.volume for k, v in report.by_agent.items()} == {"alice": 2, "carol": 1}
    assert report.by_agent["alice"].handle_avg == pytest.approx((900 + 1800) / 2)
    assert {k: v.volume for k, v in report.by_channel.items()} == {"telegram": 3, "web": 2}
    assert {k: v.volume for k, v in report.by_language.items()} == {"de": 1, "en": 3, "unknown": 1}

    volume, waits = report.hourly()
    assert (volume[9], volume[10], volume[11], volume[12], sum(volume)) == (2, 1, 1, 1, 5)
    assert (waits[9], waits[10], waits[11]) == (180, None, 600)
    volume_ny, _ = report.hourly(ZoneInfo("America/New_York"))  # UTC-5 in December
    assert volume_ny[4] == 2


async def test_a_team_and_an_empty_range(db: str) -> None:
    await scripted_day()
    billing = await service_report(at(0, 0), at(0, 0) + timedelta(days=1), team="billing")
    assert billing.overall.volume == 2
    assert billing.overall.transfers == 1
    empty = await service_report(at(0, 0) + timedelta(days=3), at(0, 0) + timedelta(days=4))
    o = empty.overall
    assert (o.volume, o.bot_resolved, o.queue_wait_p50, o.csat_avg, o.faq_hit_rate) == (
        0,
        None,
        None,
        None,
        None,
    )


async def test_live_queue_breaches_and_delivery_failures(db: str) -> None:
    now = utcnow()
    # waiting 12 minutes (a breach of the 5-minute target 7 minutes ago), and 2 minutes (not yet)
    long = await open_conversation("web", "w1", now - timedelta(minutes=13), team="support")
    await long.log("queued", "bot", "queued", now - timedelta(minutes=12))
    short = await open_conversation("web", "w2", now - timedelta(minutes=3), team="support")
    await short.log("queued", "bot", "queued", now - timedelta(minutes=2))
    # taken in time (4 min): no breach; another team's, taken late (9 min): a breach of billing only
    quick = await open_conversation("web", "w3", now - timedelta(minutes=30), team="support")
    await quick.log("queued", "bot", "queued", now - timedelta(minutes=30))
    await quick.log("assigned", "queued", "assigned", now - timedelta(minutes=26), agent="alice")
    late = await open_conversation("web", "w4", now - timedelta(minutes=40), team="billing")
    await late.log("queued", "bot", "queued", now - timedelta(minutes=40))
    await late.log("assigned", "queued", "assigned", now - timedelta(minutes=31), agent="carol")
    await OutboxItem.create(
        idempotency_key="k1",
        target=OutboxTarget.CUSTOMER,
        adapter="web",
        address="w4",
        conversation_id=late.conversation.id,
        status=OutboxStatus.FAILED,
        next_attempt_at=now,
    )
    support = await live_figures("support", now=now)
    assert support.queue_length == 2
    assert support.oldest_wait == pytest.approx(12 * 60, abs=1)
    assert support.first_response_breaches == 1
    assert [r.link for r in support.breach_rooms] == ["https://matrix.to/#/!room-w1:example.org"]
    assert [r.conversation_id for r in support.queued_rooms] == [long.conversation.id, short.conversation.id]
    assert support.delivery_failures == 0
    billing = await live_figures("billing", now=now)
    assert (billing.queue_length, billing.first_response_breaches, billing.delivery_failures) == (0, 1, 1)
    everyone = await live_figures(now=now)
    assert (everyone.queue_length, everyone.first_response_breaches, everyone.delivery_failures) == (2, 2, 1)


def test_percentiles_durations_and_local_days() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 90) == 5.0
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == 9
    assert parse_since("7d") == timedelta(days=7)
    assert parse_since("2w") == timedelta(days=14)
    with pytest.raises(ValueError, match="not a duration"):
        parse_since("seven days")
    berlin = ZoneInfo("Europe/Berlin")
    start, end = day_bounds(datetime(2026, 3, 29, 12, tzinfo=UTC), berlin)  # spring forward: 23 hours
    assert (start, end - start) == (datetime(2026, 3, 28, 23, tzinfo=UTC), timedelta(hours=23))


@pytest.fixture
async def scripted_sqlite(sqlite_url: str) -> str:
    """A SQLite file holding the scripted day (connection closed again, for the command to open)."""
    await init_db(sqlite_url)
    try:
        await scripted_day()
    finally:
        await close_db()
    return sqlite_url


async def report_command(*args: str) -> subprocess.CompletedProcess[str]:
    """``relaydesk report ...`` in a process of its own."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bot_core", "report", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )


UNTIL = "2026-12-02T00:00:00+00:00"


async def test_report_command_prints_table_csv_and_json(scripted_sqlite: str) -> None:
    table = await report_command("--database", scripted_sqlite, "--since", "1d", "--until", UNTIL)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == "relaydesk report 2026-12-01 00:00 to 2026-12-02 00:00 UTC"
    heading = lines[2].split()
    assert heading[:3] == ["volume", "bot-resolved", "hand-over"]
    overall = lines[3].split()
    # all, volume 5, 20 %, 60 %, waits 3m 00s / 10m 00s, 33 % abandoned, first responses 5m 30s / 10m 30s,
    # next 8m 00s, handle 23m 20s, resolution 20m 00s, 25 % reopened, 1 transfer, CSAT 3.0/5, FAQ 50 %
    assert overall == [
        "all", "5", "20%", "60%", "3m", "00s", "10m", "00s", "33%", "5m", "30s", "10m", "30s",
        "8m", "00s", "23m", "20s", "20m", "00s", "25%", "1", "3.0/5", "50%",
    ]  # fmt: skip
    assert any(line.startswith("team billing ") for line in lines)
    assert any(line.startswith("agent alice ") for line in lines)
    assert "    2 x Can I pay by invoice?" in lines
    # the empty groups' figures read n/a (nothing was measured), never 0
    assert "n/a" in next(line for line in lines if line.startswith("language de "))

    as_csv = await report_command(
        "--database", scripted_sqlite, "--since", "1d", "--until", UNTIL, "--format", "csv"
    )
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    first = rows[0]
    assert (first["scope"], first["name"], first["volume"], first["queue_wait_p90"]) == (
        "all",
        "all",
        "5",
        "600",
    )
    assert (first["csat_avg"], first["bot_resolved"], first["next_response_avg"]) == ("3", "0.2", "480")
    billing = next(r for r in rows if (r["scope"], r["name"]) == ("team", "billing"))
    assert (billing["volume"], billing["csat_avg"], billing["transfers"]) == ("2", "4", "1")
    assert {"scope": "unanswered", "name": "Can I pay by invoice?", "volume": "2"}.items() <= rows[-1].items()

    as_json = await report_command(
        "--database",
        scripted_sqlite,
        "--since",
        "1d",
        "--until",
        UNTIL,
        "--format",
        "json",
        "--team",
        "support",
    )
    data = json.loads(as_json.stdout)
    assert data["team"] == "support"
    assert data["overall"]["volume"] == 3
    assert data["overall"]["csat_avg"] == 2.0  # only C5's rating: C4 moved to billing
    assert data["by_agent"]["alice"]["volume"] == 2


async def test_report_command_refuses_a_bad_duration(scripted_sqlite: str) -> None:
    bad = await report_command("--database", scripted_sqlite, "--since", "a week")
    assert bad.returncode == 2
    assert "'a week' is not a duration" in bad.stderr
    assert bad.stdout == ""
