"""WhatsApp's pair rate and the number's throughput are paced across workers: two desks on one database
and one Redis, each sending to the same customer at once, keep Meta's spacing together (no 131056), and a
throughput refusal (130429) seen by one makes the other wait too."""

from __future__ import annotations

import asyncio
import itertools
from typing import cast

from bot_core.api import Delivery, RetryAfter
from bot_core.desk import Desk
from bridge.channels.whatsapp import WhatsAppChannel
from bridge.channels.whatsapp.channel import WEBHOOK_PATH
from bridge.channels.whatsapp.graph import THROUGHPUT_WAIT
from bridge.workspaces.matrix.devserver import free_port
from storage.bus.redis_streams import RedisStreamsBus
from storage.fanout import RedisFanout
from storage.ratelimit import RedisRateLimits
from tests.bridge.channels.whatsapp.conftest import ENV, whatsapp_yaml
from tests.conftest import DeskFactory
from tests.emulators.whatsapp import WhatsAppEmulator

ANA = "4915112345678"
BEN = "14155550123"
PAIR = 0.5  # the channel's pair interval in this test (Meta's is about 6 s)


async def _two_workers(
    make_desk: DeskFactory, postgres_url: str, redis_prefix: tuple[str, str], whatsapp: WhatsAppEmulator
) -> list[WhatsAppChannel]:
    redis_url, prefix = redis_prefix
    desks: list[Desk] = []
    for _ in range(2):
        port = free_port()
        desks.append(
            await make_desk(
                postgres_url,
                whatsapp_yaml(whatsapp, port, pair_interval=PAIR),
                serve_http=True,
                http_port=port,
                environ=ENV,
                redis=redis_url,
                bus=RedisStreamsBus(redis_url, prefix=prefix),
                fanout=RedisFanout(redis_url, prefix=prefix),
                rate_limits=RedisRateLimits(redis_url, prefix=prefix),
            )
        )
        whatsapp.webhook_url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    channels = [cast(WhatsAppChannel, d.plugins["whatsapp"]) for d in desks]
    for channel in channels:
        channel.clock = whatsapp.now
    for wa_id, name in ((ANA, "Ana"), (BEN, "Ben")):  # their windows are open (stored for both workers)
        await whatsapp.customer_sends(wa_id, name, text="Hello")
    assert [d.status for d in whatsapp.webhook_deliveries] == [200, 200]
    return channels


def _accepted_at(whatsapp: WhatsAppEmulator) -> list[float]:
    """When the emulator accepted each text message (read marks left out)."""
    return [
        c.at
        for c in whatsapp.calls
        if c.path.endswith("/messages") and c.status == 200 and c.body.get("type") == "text"
    ]


async def test_two_workers_keep_the_pair_rate_together(
    postgres_url: str,
    redis_prefix: tuple[str, str],
    make_desk: DeskFactory,
    whatsapp: WhatsAppEmulator,
) -> None:
    channels = await _two_workers(make_desk, postgres_url, redis_prefix, whatsapp)
    whatsapp.pair_interval = PAIR - 0.05  # Meta's own check (a little lenient, as a clock's jitter is)

    async def send(channel: WhatsAppChannel, n: int) -> str:
        delivery = Delivery(outbox_id=n, channel="whatsapp", external_user_id=ANA, text=f"line {n}")
        return (await channel.send(delivery)).external_message_id

    # three messages from each worker to the one customer, all at once
    ids = await asyncio.gather(*(send(channels[n % 2], n) for n in range(6)))
    assert len(set(ids)) == 6
    refused = [c.response["error"]["code"] for c in whatsapp.calls if c.response.get("error")]
    assert refused == []  # no 131056: the workers paced together
    sent_at = _accepted_at(whatsapp)
    assert len(sent_at) == 6
    assert all(b - a >= PAIR - 0.05 for a, b in itertools.pairwise(sent_at))


async def test_a_throughput_refusal_seen_by_one_worker_makes_the_other_wait(
    postgres_url: str,
    redis_prefix: tuple[str, str],
    make_desk: DeskFactory,
    whatsapp: WhatsAppEmulator,
) -> None:
    channels = await _two_workers(make_desk, postgres_url, redis_prefix, whatsapp)
    whatsapp.fail(130429)
    first = Delivery(outbox_id=1, channel="whatsapp", external_user_id=ANA, text="one")
    try:
        await channels[0].send(first)
        raise AssertionError("the throughput refusal should have been raised")
    except RetryAfter as exc:
        assert exc.seconds == THROUGHPUT_WAIT
    refused_at = next(c.at for c in whatsapp.calls if c.response.get("error"))
    other = Delivery(outbox_id=2, channel="whatsapp", external_user_id=BEN, text="two")
    await channels[1].send(other)  # another customer, the other worker: the number's pause holds
    [accepted] = _accepted_at(whatsapp)
    assert accepted - refused_at >= THROUGHPUT_WAIT - 0.1
