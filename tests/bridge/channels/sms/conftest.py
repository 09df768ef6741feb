"""Fixtures of the SMS channel tests: a Twilio emulator per test and a desk whose webhooks it calls."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import pytest

from bot_core.desk import Desk
from bot_core.outbox import OutboxSettings
from bot_core.testing import MemoryWorkspace
from bridge.channels.sms import SmsChannel
from bridge.channels.sms.channel import WEBHOOK_PATH
from bridge.workspaces.matrix.devserver import free_port
from tests.conftest import DeskFactory
from tests.emulators.twilio import TwilioEmulator

ACCOUNT_SID = "AC" + "3f" * 16
AUTH_TOKEN = "5f9d2e7c1b3a4d6e8f0a1b2c3d4e5f60"
ENV = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN}
FAST_OUTBOX = OutboxSettings(
    base_backoff=0.02, max_backoff=0.1, poll_interval=0.1, retry_window=600, notice_after=0.5
)

SmsDesk = Callable[..., Awaitable[tuple[Desk, SmsChannel, MemoryWorkspace]]]


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioEmulator]:
    """Twilio's Messaging API for the test account, on a free loopback port."""
    emulator = TwilioEmulator(ACCOUNT_SID, AUTH_TOKEN)
    await emulator.start()
    yield emulator
    await emulator.stop()


def sms_yaml(emulator: TwilioEmulator, port: int, *, public: str, extra: str = "", rate: float = 50) -> str:
    """A desk with the SMS channel (auth token from ``ENV``) and the in-memory workspace double."""
    return f"""server: {{host: 127.0.0.1, port: {port}, public_url: "{public}"}}
plugins:
  - sms:
      use: "bridge.channels.sms:SmsChannel"
      config:
        account_sid: "{ACCOUNT_SID}"
        auth_token: "${{TWILIO_AUTH_TOKEN}}"
        from_number: "{emulator.number}"
        api_base: "{emulator.base_url}"
        messages_per_second: {rate}
        help_text: "Acme support. Reply with your question. STOP to opt out."{extra}
  - desk: {{use: "bot_core.testing:MemoryWorkspace"}}
"""


@pytest.fixture
def sms_desk(twilio: TwilioEmulator, sqlite_url: str, make_desk: DeskFactory) -> SmsDesk:
    """Start a desk with the SMS channel; Twilio calls it at its public URL (``localhost``, bound on
    127.0.0.1), so a signature is only right when computed over the public URL."""

    async def start(
        *, outbox: OutboxSettings = FAST_OUTBOX, extra: str = "", rate: float = 50
    ) -> tuple[Desk, SmsChannel, MemoryWorkspace]:
        port = free_port()
        public = f"http://localhost:{port}"
        desk = await make_desk(
            sqlite_url,
            sms_yaml(twilio, port, public=public, extra=extra, rate=rate),
            serve_http=True,
            http_port=port,
            environ=ENV,
            outbox=outbox,
        )
        twilio.webhook_url = public + WEBHOOK_PATH
        return desk, cast(SmsChannel, desk.plugins["sms"]), cast(MemoryWorkspace, desk.plugins["desk"])

    return start
