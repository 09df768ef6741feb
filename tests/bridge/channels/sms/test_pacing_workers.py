"""Twilio's per-number throughput is paced across workers: two desks on one database and one Redis,
sending from the same number at once, keep the configured rate together."""

from __future__ import annotations

import asyncio
import itertools
from typing import cast

from bot_core.api import Delivery
from bridge.channels.sms import SmsChannel
from bridge.workspaces.matrix.devserver import free_port
from storage.bus.redis_streams import RedisStreamsBus
from storage.fanout import RedisFanout
from storage.ratelimit import RedisRateLimits
from tests.bridge.channels.sms.conftest import ENV, sms_yaml
from tests.conftest import DeskFactory
from tests.emulators.twilio import TwilioEmulator

RATE = 4.0  # messages per second from the number (a US long code takes about 1)


async def test_two_workers_keep_the_numbers_throughput_together(
    postgres_url: str, redis_prefix: tuple[str, str], make_desk: DeskFactory, twilio: TwilioEmulator
) -> None:
    redis_url, prefix = redis_prefix
    channels = []
    for _ in range(2):
        port = free_port()
        desk = await make_desk(
            postgres_url,
            sms_yaml(twilio, port, public=f"http://localhost:{port}", rate=RATE),
            serve_http=True,
            http_port=port,
            environ=ENV,
            redis=redis_url,
            bus=RedisStreamsBus(redis_url, prefix=prefix),
            fanout=RedisFanout(redis_url, prefix=prefix),
            rate_limits=RedisRateLimits(redis_url, prefix=prefix),
        )
        channels.append(cast(SmsChannel, desk.plugins["sms"]))

    async def send(n: int) -> None:
        to = f"+1415555{n:04d}"
        await channels[n % 2].send(Delivery(outbox_id=n, channel="sms", external_user_id=to, text=f"hi {n}"))

    await asyncio.gather(*(send(n) for n in range(6)))  # three from each worker, all at once
    created = [c.at for c in twilio.calls if c.path.endswith("/Messages.json") and c.status == 201]
    assert len(created) == 6
    assert all(b - a >= 1 / RATE - 0.05 for a, b in itertools.pairwise(sorted(created)))
