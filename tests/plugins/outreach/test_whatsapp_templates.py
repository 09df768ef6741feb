"""Outreach on the real WhatsApp channel (issue 23 point 3): a variant naming an approved template goes as a
template delivery; the Cloud API emulator receives the template message outside the 24-hour window and the
rendered text inside it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import pytest

from bridge.channels.whatsapp import WhatsAppChannel
from bridge.channels.whatsapp.channel import WEBHOOK_PATH
from bridge.workspaces.matrix.devserver import free_port
from tests.bridge.channels.whatsapp.conftest import APP_SECRET, FAST_OUTBOX, TOKEN, whatsapp_plugin_yaml
from tests.bridge.channels.whatsapp.conftest import ENV as WA_ENV
from tests.conftest import DeskFactory
from tests.emulators.whatsapp import WINDOW_SECONDS, WhatsAppEmulator
from tests.plugins.outreach.helpers import ENV, outreach_yaml, post_event, settle

WANDA = "4915112345678"


@pytest.fixture
async def whatsapp() -> AsyncIterator[WhatsAppEmulator]:
    """The business number, with the shipping template approved in English."""
    emulator = WhatsAppEmulator(TOKEN, APP_SECRET)
    emulator.approve_template("order_shipped_v2", "en", "Hi {{1}}, your order {{2}} is on its way.")
    emulator.approve_template("reopen_chat", "de", "Hallo {{1}}, {{2}} hat eine Antwort für Sie.")
    await emulator.start()
    yield emulator
    await emulator.stop()


async def test_a_shipping_event_goes_as_text_inside_the_window_and_as_the_template_outside(
    whatsapp: WhatsAppEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    port = free_port()
    yaml_text = (
        f'server: {{host: 127.0.0.1, port: {port}, public_url: "http://127.0.0.1:{port}"}}\n'
        + outreach_yaml(quiet=False, channels=whatsapp_plugin_yaml(whatsapp))
    )
    desk = await make_desk(
        sqlite_url,
        yaml_text,
        serve_http=True,
        http_port=port,
        environ={**ENV, **WA_ENV},
        outbox=FAST_OUTBOX,
    )
    whatsapp.webhook_url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    cast(WhatsAppChannel, desk.plugins["whatsapp"]).clock = whatsapp.now
    await whatsapp.customer_sends(WANDA, "Wanda Maximoff", text="hallo")
    await settle(desk)

    status, body = await post_event(
        desk,
        {
            "id": "evt-1",
            "type": "order_shipped",
            "customer": {"phone": f"+{WANDA}"},
            "variables": {"order_id": "A-1"},
        },
    )
    assert (status, body["channel"]) == (202, "whatsapp")
    # she wrote a minute ago: free-form text is allowed, the rendering goes
    await whatsapp.wait_for(lambda: whatsapp.texts_to(WANDA) == ["Hi Wanda, your order A-1 is on its way."])

    whatsapp.advance(WINDOW_SECONDS + 3600)  # a day and an hour later: only a template may go
    status, _ = await post_event(
        desk,
        {
            "id": "evt-2",
            "type": "order_shipped",
            "customer": {"phone": f"+{WANDA}"},
            "variables": {"order_id": "A-2"},
        },
    )
    assert status == 202
    await whatsapp.wait_for(lambda: len(whatsapp.texts_to(WANDA)) == 2)
    assert whatsapp.texts_to(WANDA)[1] == "template:order_shipped_v2:en:Wanda|A-2"
    [graph] = [m for m in whatsapp.messages_to(WANDA) if m.get("type") == "template"]
    assert graph["template"]["name"] == "order_shipped_v2"  # a Graph template message, accepted
    await settle(desk)
    # nothing held, nothing refused with the window error, no re-engagement template instead
    assert not [c for c in whatsapp.calls if c.response.get("error")]
    assert not any(t.startswith("template:reopen_chat") for t in whatsapp.texts_to(WANDA))
