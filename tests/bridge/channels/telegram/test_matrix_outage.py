"""The homeserver down for minutes: customers' messages written meanwhile reach the room, once each, in
order, and the customer hears once that they have not reached the team yet.

relaydesk talks to the session's real Synapse through :class:`tests.faults.FaultProxy`, which answers
502 (a load balancer in front of a dead homeserver) or refuses connections (a crashed one) until the test has seen the customer told and more
tries than the old six-try give-up allowed; the agent syncs with Synapse directly.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import pytest

from bot_core.outbox import OutboxSettings
from storage.models import OutboxItem, OutboxStatus
from tests.bridge.channels.telegram.conftest import ENV, telegram_entry
from tests.bridge.workspaces.matrix_agent import Agent, room_of
from tests.conftest import DeskFactory
from tests.emulators.telegram import TelegramEmulator
from tests.faults import FaultProxy, Mode, Refused
from tests.matrix_server import SynapseInfo

OUTAGE_OUTBOX = OutboxSettings(
    base_backoff=0.02, max_backoff=0.1, poll_interval=0.2, retry_window=120.0, notice_after=0.5
)
NOT_YET = "⏳ Your message has not reached our team yet: we keep trying and will tell you when it has."
THROUGH = "✓ Your message has reached our team now."


def more_than(seen: int) -> Callable[[list[Refused]], bool]:
    """A :meth:`FaultProxy.wait_refused` condition: one more refusal than ``seen``."""
    return lambda refused: len(refused) > seen


async def _tries_of_first_waiting_post() -> int:
    row = await OutboxItem.filter(target="room", status=OutboxStatus.PENDING).order_by("id").first()
    return row.attempts if row is not None else 0


@pytest.fixture
async def homeserver_proxy(synapse: SynapseInfo) -> AsyncIterator[FaultProxy]:
    """A fault proxy in front of the session's Synapse."""
    address = urlsplit(synapse.base_url)
    proxy = FaultProxy(address.hostname or "127.0.0.1", address.port or 80)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.mark.parametrize("mode", ["502", "refuse"])
async def test_the_homeserver_down_for_minutes_loses_no_customer_message(
    mode: Mode,
    synapse: SynapseInfo,
    telegram: TelegramEmulator,
    homeserver_proxy: FaultProxy,
    sqlite_url: str,
    make_desk: DeskFactory,
    agent: Agent,
) -> None:
    matrix = synapse.matrix_plugin_yaml().replace(synapse.base_url, homeserver_proxy.url)
    yaml_text = f"""
server: {{host: 127.0.0.1, port: {synapse.appservice_port}}}
plugins:{telegram_entry(telegram)}{matrix}
"""
    desk = await make_desk(
        sqlite_url,
        yaml_text,
        serve_http=True,
        http_port=synapse.appservice_port,
        environ=ENV,
        outbox=OUTAGE_OUTBOX,
    )
    chat_id = 30_000_000 + secrets.randbelow(10_000_000)
    mia = telegram.user(chat_id, "Mia")
    await telegram.customer_sends(mia, "Hi, I have a question about my order")
    await telegram.wait_for(lambda: not telegram.updates, 20)
    assert await desk.wait_settled(30)
    room_id = await room_of(str(chat_id))
    await agent.sync_until(
        lambda: any(t == "Hi, I have a question about my order" for _, t in agent.texts(room_id))
    )

    homeserver_proxy.down(mode)
    written = ["It is order 5512.", "The parcel says delivered", "but nothing arrived."]
    for text in written:
        await telegram.customer_sends(mia, text)
    await telegram.wait_for(lambda: NOT_YET in telegram.texts_to(chat_id), 20)  # the customer is told
    # the outage outlasts the six tries after which the outbox used to give up: wait for a refusal
    # at a time until the first waiting post has been tried more often than that
    while (await _tries_of_first_waiting_post()) <= 8:
        await homeserver_proxy.wait_refused(more_than(len(homeserver_proxy.refused)))
    assert not any(t in written for _, t in agent.texts(room_id))
    homeserver_proxy.up()

    await agent.sync_until(lambda: sum(t in written for _, t in agent.texts(room_id)) >= 3, 30)
    await telegram.wait_for(lambda: THROUGH in telegram.texts_to(chat_id), 20)
    assert await desk.wait_settled(30)
    await agent.sync_until(lambda: True)  # one more sync: anything doubled would show now
    shown = [t for _, t in agent.texts(room_id) if t in written]
    assert shown == written  # all of them, once each, in the order written
    assert telegram.texts_to(chat_id) == [NOT_YET, THROUGH]  # told once that it is late, once it is through
    rooms = await OutboxItem.filter(target="room")
    mirrors = [r for r in rooms if r.payload.get("kind") == "customer_message"]
    assert len(mirrors) == 4 and {r.status for r in mirrors} == {OutboxStatus.SENT}
