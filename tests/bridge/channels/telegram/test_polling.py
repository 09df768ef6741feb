"""Long polling: customers' messages reach the room, the offset survives restarts exactly, and the loop
survives a gateway answering HTML (shown on ``/healthz`` while it lasts)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest

from bot_core.context import StateStore
from bot_core.desk import Desk
from bot_core.testing import MemoryWorkspace
from bridge.channels.telegram.polling import OFFSET_KEY
from bridge.workspaces.matrix.devserver import free_port
from storage.models import Direction, Message
from tests.bridge.channels.telegram.conftest import (
    ENV,
    FAST_RECEIVING,
    TOKEN,
    doubles_yaml,
    health_until,
    only_telegram_yaml,
    parts,
)
from tests.conftest import DeskFactory
from tests.emulators.telegram import TelegramEmulator


async def test_a_customer_message_reaches_the_room_and_the_agents_answer_comes_back_formatted(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, doubles_yaml(telegram), environ=ENV)
    _channel, workspace = parts(desk)
    alice = telegram.user(424242, "Alice", "Liddell", username="alice")
    await telegram.customer_sends(alice, "Hi, where is my parcel?")
    await workspace.posts.wait_for(lambda posts: any(p.kind == "customer_message" for _, p in posts))
    room = workspace.room_of("424242")
    assert workspace.texts(room.room_id, "customer_message") == ["Hi, where is my parcel?"]
    assert room.posts[0].sender == "Alice Liddell"

    await workspace.agent_writes(room.room_id, "It ships **today** <for sure> & _tomorrow_ it's there")
    await telegram.wait_for(lambda: bool(telegram.bot_messages(424242)))
    sent = telegram.bot_messages(424242)[0]
    assert sent["text"] == "It ships today <for sure> & tomorrow it's there"
    assert [(e["type"], e["offset"], e["length"]) for e in sent["entities"]] == [
        ("bold", 9, 5),
        ("italic", 28, 8),
    ]


def _returned_update_ids(telegram: TelegramEmulator, since_call: int = 0) -> list[int]:
    """The update ids getUpdates answered, from the ``since_call``-th recorded call on."""
    return [
        u["update_id"]
        for c in telegram.calls[since_call:]
        if c.method.lower() == "getupdates" and c.status == 200
        for u in c.response["result"]
    ]


async def _inbound_texts() -> list[str]:
    """What customers wrote, as stored, in order."""
    return [m.text for m in await Message.filter(direction=Direction.INBOUND).order_by("id")]


async def _stored_and_confirmed(telegram: TelegramEmulator, desk: Desk) -> None:
    """Wait until Telegram holds no unconfirmed update (each was stored first) and the desk handled all."""
    await telegram.wait_for(lambda: not telegram.updates)
    assert await desk.wait_settled(10)


async def test_polling_resumes_after_a_restart_from_the_stored_offset_nothing_lost_nothing_repeated(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    bob = telegram.user(5150, "Bob")
    desk = await make_desk(sqlite_url, only_telegram_yaml(telegram), environ=ENV)
    await telegram.customer_sends(bob, "one")
    await telegram.customer_sends(bob, "two")
    await _stored_and_confirmed(telegram, desk)
    assert await _inbound_texts() == ["one", "two"]
    await desk.stop(timeout=5)
    second_update = telegram.all_updates[1]["update_id"]

    # written while relaydesk is down: Telegram keeps them
    await telegram.customer_sends(bob, "three")
    await telegram.customer_sends(bob, "four")
    calls_before_restart = len(telegram.calls)
    desk = await make_desk(sqlite_url, only_telegram_yaml(telegram), environ=ENV)
    await _stored_and_confirmed(telegram, desk)

    first_poll = next(c for c in telegram.calls[calls_before_restart:] if c.method.lower() == "getupdates")
    assert int(first_poll.params["offset"]) == second_update + 1
    later = [u["update_id"] for u in telegram.all_updates[2:]]
    assert _returned_update_ids(telegram, calls_before_restart) == later
    assert await _inbound_texts() == ["one", "two", "three", "four"]


async def test_an_update_stored_but_not_yet_confirmed_at_telegram_is_not_handled_again_after_a_restart(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    carol = telegram.user(777, "Carol")
    desk = await make_desk(sqlite_url, only_telegram_yaml(telegram), environ=ENV)
    await telegram.wait_for(lambda: bool(telegram.calls_of("getUpdates")))  # the first poll waits
    telegram.fail("getUpdates", 502, times=1)  # so the one after it, which would confirm, fails
    await telegram.customer_sends(carol, "stored, then the confirming poll fails")
    await telegram.wait_for(lambda: any(c.status == 502 for c in telegram.calls_of("getUpdates")))
    assert await desk.wait_settled(10)
    update_id = telegram.all_updates[0]["update_id"]
    assert [u["update_id"] for u in telegram.updates] == [update_id]  # Telegram still holds it
    assert await StateStore("telegram", "telegram").get(OFFSET_KEY) == update_id + 1
    await desk.stop(timeout=5)  # "crash" before any poll confirmed it

    calls_before_restart = len(telegram.calls)
    desk = await make_desk(sqlite_url, only_telegram_yaml(telegram), environ=ENV)
    await telegram.customer_sends(carol, "after the restart")
    await _stored_and_confirmed(telegram, desk)
    assert update_id not in _returned_update_ids(telegram, calls_before_restart)
    assert await _inbound_texts() == ["stored, then the confirming poll fails", "after the restart"]


async def _health_until(
    http: aiohttp.ClientSession, desk: Desk, status: str, timeout: float = 10.0
) -> tuple[int, dict[str, Any]]:
    """Ask ``/healthz`` until its status is ``status`` (the condition the test waits on)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with http.get(f"http://127.0.0.1:{desk.port}/healthz") as resp:
            code, health = resp.status, await resp.json()
        if health["status"] == status:
            return code, health
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"/healthz never said {status}: {health}")
        await asyncio.sleep(0.05)


def _customer_texts(workspace: MemoryWorkspace) -> list[str]:
    return [p.text for _, p in workspace.posts.items if p.kind == "customer_message"]


async def test_polling_survives_a_gateways_html_page_and_healthz_shows_degraded_then_ok(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    desk = await make_desk(
        sqlite_url,
        doubles_yaml(telegram),
        environ=ENV,
        serve_http=True,
        http_port=free_port(),
        receive_settings=FAST_RECEIVING,
    )
    _channel, workspace = parts(desk)
    dana = telegram.user(8080, "Dana")
    await telegram.wait_for(lambda: bool(telegram.calls_of("getUpdates")))  # the first poll waits
    telegram.gateway_down("getUpdates")  # from the next poll on, nginx answers its HTML 502 page
    await telegram.customer_sends(dana, "before the outage")
    await workspace.posts.wait_for(lambda _posts: _customer_texts(workspace) == ["before the outage"])
    await telegram.wait_for(lambda: sum(c.status == 502 for c in telegram.calls_of("getUpdates")) >= 3)
    await telegram.customer_sends(dana, "during the outage")

    async with aiohttp.ClientSession() as http:
        code, health = await _health_until(http, desk, "degraded")
        assert code == 200  # degraded: relaydesk works and retries; no restart wanted
        polling = health["receiving"]["telegram"]["loops"]["polling"]
        assert polling["state"] == "degraded" and polling["failures"] >= 3
        assert (
            "ClientDecodeError" in polling["last_error"] and TOKEN.split(":")[1] not in polling["last_error"]
        )

        telegram.gateway_up("getUpdates")
        await workspace.posts.wait_for(
            lambda _posts: _customer_texts(workspace) == ["before the outage", "during the outage"]
        )
        code, health = await _health_until(http, desk, "ok")
        assert code == 200 and health["receiving"]["telegram"]["state"] == "ok"

    await telegram.customer_sends(dana, "after the recovery")
    await workspace.posts.wait_for(lambda _posts: len(_customer_texts(workspace)) == 3)
    assert await _inbound_texts() == ["before the outage", "during the outage", "after the recovery"]
    failures = sum(c.status == 502 for c in telegram.calls_of("getUpdates"))
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and r.getMessage() == "getUpdates failed"
    ]
    assert len(warnings) == 1 < failures  # one warning for the streak, not one per failed poll
    assert any(r.getMessage() == "receiving again" for r in caplog.records)


async def test_a_webhook_left_set_is_dropped_by_polling_even_when_deletewebhook_failed_at_start(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    # a webhook an earlier deployment registered (set directly: the emulator would try to POST to it)
    telegram.webhook = {
        "url": "https://old.example.com/telegram/webhook",
        "secret_token": None,
        "allowed_updates": None,
        "last_error_message": None,
    }
    telegram.fail("deleteWebhook", 502)  # at start: getUpdates then answers 409 "webhook is active"
    desk = await make_desk(
        sqlite_url, only_telegram_yaml(telegram), environ=ENV, receive_settings=FAST_RECEIVING
    )
    await telegram.wait_for(lambda: any(c.status == 409 for c in telegram.calls_of("getUpdates")))
    await telegram.customer_sends(telegram.user(6060, "Frank"), "is anyone there?")
    await _stored_and_confirmed(telegram, desk)
    assert telegram.webhook is None
    assert await _inbound_texts() == ["is anyone there?"]
    await health_until(desk, "ok")
