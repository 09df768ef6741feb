"""Engine details a user relies on: lifecycle events, entry points, replay at start, log redaction, defaults."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import sys
from pathlib import Path

import aiohttp

from bot_core import ConversationEvent, LifecycleKind, Plugin, on_conversation_event
from bot_core.context import Context
from bot_core.events import CustomerMessage, dump_event
from bot_core.logs import JsonFormatter, Redactor
from bot_core.registry import resolve_plugin
from plugins.echo import EchoPlugin
from storage.bus.journal import DbJournal
from storage.db import close_db, init_db
from tests.bot_core.test_cli import _free_port
from tests.bot_core.test_relay_loop import doubles
from tests.conftest import DOUBLES_YAML, DeskFactory


class Lifecycle(Plugin):
    """Records lifecycle events and queues every new conversation for the 'support' team."""

    name = "lifecycle"
    events: list[tuple[str, str | None]] = []

    @on_conversation_event()
    async def record(self, ctx: Context, event: ConversationEvent) -> None:
        type(self).events.append((event.kind.value, event.team))
        if event.kind is LifecycleKind.OPENED:
            await ctx.queue("support")


async def test_conversation_events_reach_plugins(sqlite_url: str, make_desk: DeskFactory) -> None:
    Lifecycle.events = []
    desk = await make_desk(
        sqlite_url, DOUBLES_YAML + '  - lc: {use: "tests.bot_core.test_engine_details:Lifecycle"}\n'
    )
    channel, workspace = doubles(desk)
    await channel.customer_writes("u1", "hello")
    await workspace.posts.wait_for(
        lambda _: any(
            "Waiting for an agent in support" in t for r in workspace.rooms for t in workspace.texts(r)
        )
    )
    room_id = workspace.room_of("u1").room_id
    await workspace.agent_writes(room_id, "!claim", agent="@erin")
    await workspace.agent_writes(room_id, "!close", agent="@erin")
    await workspace.posts.wait_for(lambda _: any("closed" in t for t in workspace.texts(room_id, "notice")))
    assert await desk.bus.wait_idle(10)
    assert Lifecycle.events == [("opened", None), ("queued", "support"), ("assigned", None), ("closed", None)]


def test_builtin_plugins_load_by_entry_point_name() -> None:
    assert resolve_plugin("echo") is EchoPlugin


async def test_events_left_in_the_journal_by_a_crash_are_handled_at_start(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    # a previous process stored these (webhooks were acknowledged) and died before handling them
    await init_db(sqlite_url)
    journal = DbJournal()
    for i in range(3):
        event = CustomerMessage(
            channel="customers", external_user_id="u9", external_message_id=f"x{i}", text=f"m{i}"
        )
        await journal.append(event.conversation_key(), dump_event(event))
    await close_db()

    desk = await make_desk(sqlite_url)
    _, workspace = doubles(desk)
    await workspace.posts.wait_for(lambda items: sum(p.kind == "customer_message" for _, p in items) == 3)
    assert workspace.texts(workspace.room_of("u9").room_id, "customer_message") == ["m0", "m1", "m2"]


async def test_an_event_a_crash_interrupted_after_its_message_was_stored_is_finished_once(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    from storage.models import InboundReceipt, Message

    event = CustomerMessage(
        channel="customers", external_user_id="u8", external_message_id="y1", text="hello"
    )
    # the previous process noted the event and stored the message, then died before marking it processed
    first = await make_desk(sqlite_url)
    await first.inbound(event)
    assert await first.wait_settled(10)
    await first.stop(timeout=5)
    await init_db(sqlite_url)
    await InboundReceipt.filter(source="customers", external_id="y1").update(processed=False)
    await DbJournal().append(event.conversation_key(), dump_event(event))
    await close_db()

    desk = await make_desk(sqlite_url)
    assert await desk.wait_settled(10)
    _, workspace = doubles(desk)
    assert await Message.filter(channel="customers", channel_message_id="y1").count() == 1
    receipt = await InboundReceipt.get(source="customers", external_id="y1")
    assert receipt.processed is True
    # the room got the message from the first run: the second posts it no more
    assert [p for _, p in workspace.posts.items if p.kind == "customer_message"] == []


def test_secrets_are_redacted_from_logs() -> None:
    redactor = Redactor()
    redactor.add(["123456:ABC-telegram-token"])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(redactor)
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    logger.warning(
        "calling https://api/bot%s/getMe",
        "123456:ABC-telegram-token",
        extra={"url": "bot123456:ABC-telegram-token"},
    )
    line = stream.getvalue()
    assert "ABC-telegram-token" not in line
    assert "bot***" in line


async def test_the_shipped_plugins_yaml_runs_and_answers_healthz(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "plugins.yaml").write_text((repo / "plugins.yaml").read_text())
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot_core",
        "run",
        "--migrate",
        cwd=tmp_path,
        env={**os.environ, "RELAYDESK_PORT": str(port), "RELAYDESK_MATRIX_PORT": str(_free_port())},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        banner = b""
        while b"relaydesk is running" not in banner:
            banner += await asyncio.wait_for(proc.stdout.readline(), 60)
        text = banner.decode()
        # the first screen: one block, printed last, with the login and the demo page; nothing before it
        assert text.startswith("-" * 78 + "\n"), text
        assert text.index("password: ") < text.index("Web chat demo") < text.index("relaydesk is running")
        assert f"relaydesk is running on http://127.0.0.1:{port}" in text
        assert "user: agent (@agent:localhost)" in text and "password: " in text  # how to log in
        assert f"Web chat demo: http://127.0.0.1:{port}/web/demo" in text  # where to write as a customer
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as resp:
            assert resp.status == 200
            assert (await resp.json())["plugins"] == ["matrix", "web", "faq"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert (tmp_path / "relaydesk.db").exists()
    assert (tmp_path / "var/matrix/relaydesk-registration.yaml").exists()
    assert (tmp_path / "var/faq/knowledge.yaml").exists()  # the FAQ started from the shipped sample


async def test_reload_under_traffic_drops_nothing(sqlite_url: str, make_desk: DeskFactory) -> None:
    from bot_core.config import parse_config

    desk = await make_desk(sqlite_url)
    channel, workspace = doubles(desk)
    with_echo = parse_config(DOUBLES_YAML + "  - echo: {greeting: hi}\n", "plugins.yaml", environ={})
    without = parse_config(DOUBLES_YAML, "plugins.yaml", environ={})

    async def traffic() -> None:
        for i in range(40):
            await asyncio.gather(*(channel.customer_writes(f"t{n}", f"t{n}-{i}") for n in range(5)))

    async def reloads() -> None:
        for i in range(6):
            await desk.reload(with_echo if i % 2 == 0 else without)
            await asyncio.sleep(0)

    await asyncio.gather(traffic(), reloads())
    await workspace.posts.wait_for(
        lambda items: sum(p.kind == "customer_message" for _, p in items) == 200, 60
    )
    for n in range(5):
        assert workspace.texts(workspace.room_of(f"t{n}").room_id, "customer_message") == [
            f"t{n}-{i}" for i in range(40)
        ]


async def test_shutdown_finishes_work_in_flight_and_refuses_new_events(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    import pytest

    from bot_core.desk import NotAccepting
    from storage.models import OutboxItem, OutboxStatus, OutboxTarget

    desk = await make_desk(sqlite_url)
    channel, workspace = doubles(desk)
    await channel.customer_writes("u1", "hi")
    posts = await workspace.posts.wait_for(lambda items: any(p.kind == "customer_message" for _, p in items))
    channel.send_delay = 0.3  # the platform is slow: the delivery is still in flight when SIGTERM comes
    await workspace.agent_writes(posts[0][0], "answer")
    await channel.sending.wait_for(lambda items: any(d.text == "answer" for d in items))
    plugins = dict(desk.plugins)
    await desk.stop(timeout=10)
    assert [d.text for d in plugins["customers"].sent.items] == ["answer"]  # type: ignore[attr-defined]
    with pytest.raises(NotAccepting):
        await channel.customer_writes("u1", "too late")
    await init_db(sqlite_url)
    try:
        # the delivery in flight was finished, not cut off; rows nobody had picked up yet (e.g. the card
        # update after the answer) may stay pending: the next start sends them
        assert not await OutboxItem.filter(status=OutboxStatus.SENDING).exists()
        to_customer = [row.status for row in await OutboxItem.filter(target=OutboxTarget.CUSTOMER)]
        assert to_customer == [OutboxStatus.SENT]
    finally:
        await close_db()
