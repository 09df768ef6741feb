"""WhatsApp and SMS customers with Matrix agents end to end: both emulators and the session's real Synapse.

An agent in a real Matrix room sees what the platforms' rules did (a reply held outside WhatsApp's
24-hour window, an SMS STOP) and the customers get every answer once the rules allow it."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import cast

import pytest

from bridge.channels.sms.channel import WEBHOOK_PATH as SMS_WEBHOOK
from bridge.channels.whatsapp import WhatsAppChannel
from bridge.channels.whatsapp.channel import WEBHOOK_PATH as WA_WEBHOOK
from bridge.workspaces.matrix.appservice import MatrixWorkspace
from tests.bridge.channels.sms.conftest import ACCOUNT_SID, AUTH_TOKEN
from tests.bridge.channels.whatsapp.conftest import APP_SECRET, TOKEN, VERIFY_TOKEN
from tests.bridge.workspaces.matrix_agent import Agent, room_of
from tests.conftest import DeskFactory
from tests.emulators.twilio import TwilioEmulator
from tests.emulators.whatsapp import WINDOW_SECONDS, WhatsAppEmulator
from tests.matrix_server import SynapseInfo

ENV = {
    "WA_TOKEN": TOKEN,
    "WA_APP_SECRET": APP_SECRET,
    "WA_VERIFY_TOKEN": VERIFY_TOKEN,
    "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
}


@pytest.fixture
async def emulators() -> AsyncIterator[tuple[WhatsAppEmulator, TwilioEmulator]]:
    """Both platforms on loopback."""
    whatsapp, twilio = WhatsAppEmulator(TOKEN, APP_SECRET), TwilioEmulator(ACCOUNT_SID, AUTH_TOKEN)
    whatsapp.approve_template("reopen_chat", "en_US", "Hi {{1}}, we have an answer for you.")
    await whatsapp.start()
    await twilio.start()
    yield whatsapp, twilio
    await whatsapp.stop()
    await twilio.stop()


def desk_yaml(synapse: SynapseInfo, whatsapp: WhatsAppEmulator, twilio: TwilioEmulator) -> str:
    """WhatsApp and SMS customers, Matrix agents (appservice), served where Synapse pushes transactions."""
    base = synapse.appservice_url.rstrip("/")
    return f"""
server: {{host: 127.0.0.1, port: {synapse.appservice_port}, public_url: "{base}"}}
plugins:
  - whatsapp:
      use: "bridge.channels.whatsapp:WhatsAppChannel"
      config:
        access_token: "${{WA_TOKEN}}"
        app_secret: "${{WA_APP_SECRET}}"
        verify_token: "${{WA_VERIFY_TOKEN}}"
        phone_number_id: "{whatsapp.phone_number_id}"
        api_base: "{whatsapp.base_url}"
        pair_interval: 0
        reopen_template: {{name: reopen_chat, variables: ["{{customer_name}}"]}}
  - sms:
      use: "bridge.channels.sms:SmsChannel"
      config:
        account_sid: "{ACCOUNT_SID}"
        auth_token: "${{TWILIO_AUTH_TOKEN}}"
        from_number: "{twilio.number}"
        api_base: "{twilio.base_url}"
        messages_per_second: 50{synapse.matrix_plugin_yaml()}
"""


async def test_whatsapp_and_sms_customers_talk_to_matrix_agents_within_the_platforms_rules(
    synapse: SynapseInfo,
    emulators: tuple[WhatsAppEmulator, TwilioEmulator],
    sqlite_url: str,
    make_desk: DeskFactory,
    agent: Agent,
) -> None:
    whatsapp, twilio = emulators
    desk = await make_desk(
        sqlite_url,
        desk_yaml(synapse, whatsapp, twilio),
        serve_http=True,
        http_port=synapse.appservice_port,
        environ=ENV,
    )
    matrix = cast(MatrixWorkspace, desk.plugins["matrix"])
    cast(WhatsAppChannel, desk.plugins["whatsapp"]).clock = whatsapp.now
    base = synapse.appservice_url.rstrip("/")
    whatsapp.webhook_url, twilio.webhook_url = base + WA_WEBHOOK, base + SMS_WEBHOOK

    # WhatsApp: in the window, then outside it
    wa_id = "49151" + str(10_000_000 + secrets.randbelow(10_000_000))
    await whatsapp.customer_sends(wa_id, "Lena", text="Is the blue tent back in stock?")
    assert await desk.wait_settled(30)
    wa_room = await room_of(wa_id)
    ghost = matrix.ghost_id("whatsapp", wa_id)
    await agent.sync_until(lambda: (ghost, "Is the blue tent back in stock?") in agent.texts(wa_room))
    await agent.say(wa_room, "Not yet, I will tell you.")
    await whatsapp.wait_for(lambda: whatsapp.texts_to(wa_id) == ["Not yet, I will tell you."], 20)

    whatsapp.advance(WINDOW_SECONDS + 600)
    await agent.say(wa_room, "It is back in stock!")
    await agent.sync_until(lambda: any("Not sent yet" in body for _, body in agent.texts(wa_room)))
    assert whatsapp.texts_to(wa_id)[1:] == ["template:reopen_chat:en_US:Lena"]
    await whatsapp.customer_sends(wa_id, "Lena", text="Great, tell me!")
    await whatsapp.wait_for(lambda: whatsapp.texts_to(wa_id)[-1:] == ["It is back in stock!"], 20)
    await agent.sync_until(lambda: any("held reply went out" in body for _, body in agent.texts(wa_room)))

    # SMS: STOP, a refused reply, START, a delivered one
    number = "+1415" + str(1_000_000 + secrets.randbelow(8_000_000))
    await twilio.customer_sends(number, "Do you ship to Canada?")
    assert await desk.wait_settled(30)
    sms_room = await room_of(number)
    await agent.sync_until(lambda: any(body == "Do you ship to Canada?" for _, body in agent.texts(sms_room)))
    await twilio.customer_sends(number, "STOP")
    await agent.sync_until(lambda: any("opted out of service" in body for _, body in agent.texts(sms_room)))
    await agent.say(sms_room, "Yes we do.")
    await agent.sync_until(lambda: any("did not get" in body for _, body in agent.texts(sms_room)))
    await twilio.customer_sends(number, "START")
    await agent.sync_until(lambda: any("opted in to service" in body for _, body in agent.texts(sms_room)))
    await agent.say(sms_room, "Yes, we ship to Canada.")
    await twilio.wait_for(lambda: twilio.texts_to(number) == ["Yes, we ship to Canada."], 20)
    assert await desk.wait_settled(30)
