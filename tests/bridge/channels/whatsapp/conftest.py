"""Fixtures of the WhatsApp channel tests: a Cloud API emulator per test and a desk whose webhook it calls."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import pytest

from bot_core.desk import Desk
from bot_core.outbox import OutboxSettings
from bot_core.testing import MemoryWorkspace
from bridge.channels.whatsapp import WhatsAppChannel
from bridge.channels.whatsapp.channel import WEBHOOK_PATH
from bridge.workspaces.matrix.devserver import free_port
from tests.conftest import DeskFactory
from tests.emulators.whatsapp import WhatsAppEmulator

TOKEN = "EAAGm0PX4ZCpsBAtestaccesstoken"
APP_SECRET = "0123456789abcdef0123456789abcdef"
VERIFY_TOKEN = "relaydesk-verify-4711"
ENV = {"WA_TOKEN": TOKEN, "WA_APP_SECRET": APP_SECRET, "WA_VERIFY_TOKEN": VERIFY_TOKEN}
FAST_OUTBOX = OutboxSettings(
    base_backoff=0.02, max_backoff=0.1, poll_interval=0.1, retry_window=600, notice_after=0.5
)

WaDesk = Callable[..., Awaitable[tuple[Desk, WhatsAppChannel, MemoryWorkspace]]]


@pytest.fixture
async def whatsapp() -> AsyncIterator[WhatsAppEmulator]:
    """The Cloud API of the test business number, on a free loopback port."""
    emulator = WhatsAppEmulator(TOKEN, APP_SECRET)
    emulator.approve_template(
        "reopen_chat", "en_US", "Hi {{1}}, {{2}} has an answer for you. Reply to read it."
    )
    emulator.approve_template("reopen_chat", "de", "Hallo {{1}}, {{2}} hat eine Antwort für Sie.")
    await emulator.start()
    yield emulator
    await emulator.stop()


def whatsapp_plugin_yaml(
    emulator: WhatsAppEmulator, *, pair_interval: float = 0.0, extra: str = "", template: bool = True
) -> str:
    """The ``whatsapp`` entry of a plugins.yaml list (secrets from ``ENV``), for desks with other plugins."""
    reopen = (
        """
        reopen_template:
          name: reopen_chat
          language: en_US
          languages: {"49": de}
          variables: ["{customer_name}", "{agent_name}"]"""
        if template
        else ""
    )
    return f"""  - whatsapp:
      use: "bridge.channels.whatsapp:WhatsAppChannel"
      config:
        access_token: "${{WA_TOKEN}}"
        app_secret: "${{WA_APP_SECRET}}"
        verify_token: "${{WA_VERIFY_TOKEN}}"
        phone_number_id: "{emulator.phone_number_id}"
        api_base: "{emulator.base_url}"
        pair_interval: {pair_interval}{reopen}{extra}
"""


def whatsapp_yaml(
    emulator: WhatsAppEmulator,
    port: int,
    *,
    pair_interval: float = 0.0,
    extra: str = "",
    template: bool = True,
) -> str:
    """A desk with the WhatsApp channel (secrets from ``ENV``) and the in-memory workspace double."""
    return (
        f"""server: {{host: 127.0.0.1, port: {port}, public_url: "http://127.0.0.1:{port}"}}
plugins:
"""
        + whatsapp_plugin_yaml(emulator, pair_interval=pair_interval, extra=extra, template=template)
        + """  - desk: {use: "bot_core.testing:MemoryWorkspace"}
"""
    )


@pytest.fixture
def wa_desk(whatsapp: WhatsAppEmulator, sqlite_url: str, make_desk: DeskFactory) -> WaDesk:
    """Start a desk with the WhatsApp channel on a free port and point the emulator's webhook at it."""

    async def start(
        url: str | None = None,
        *,
        pair_interval: float = 0.0,
        outbox: OutboxSettings = FAST_OUTBOX,
        extra: str = "",
        template: bool = True,
    ) -> tuple[Desk, WhatsAppChannel, MemoryWorkspace]:
        port = free_port()
        desk = await make_desk(
            url or sqlite_url,
            whatsapp_yaml(whatsapp, port, pair_interval=pair_interval, extra=extra, template=template),
            serve_http=True,
            http_port=port,
            environ=ENV,
            outbox=outbox,
        )
        whatsapp.webhook_url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
        channel = cast(WhatsAppChannel, desk.plugins["whatsapp"])
        channel.clock = whatsapp.now  # one clock for the window on both sides (the emulator can advance it)
        return desk, channel, cast(MemoryWorkspace, desk.plugins["desk"])

    return start
