"""One customer on WhatsApp and SMS (issue 22 point 4): the same E.164 number writing on both channels is one
customer with two identities, one card, one open conversation; agents answer on either with ``!via``; the
card shows which identity is reachable and whether the WhatsApp window is open, and until when."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest

from bot_core.testing import MemoryWorkspace
from bridge.channels.sms.channel import WEBHOOK_PATH as SMS_WEBHOOK
from bridge.channels.whatsapp import WhatsAppChannel
from bridge.channels.whatsapp.channel import WEBHOOK_PATH as WA_WEBHOOK
from bridge.workspaces.matrix.devserver import free_port
from storage.models import Conversation, Customer, Identity
from tests.bridge.channels.sms.conftest import ACCOUNT_SID, AUTH_TOKEN
from tests.bridge.channels.whatsapp.conftest import APP_SECRET, FAST_OUTBOX, TOKEN, VERIFY_TOKEN
from tests.conftest import DeskFactory
from tests.emulators.twilio import TwilioEmulator
from tests.emulators.whatsapp import WINDOW_SECONDS, WhatsAppEmulator

NUMBER = "+4915112345678"
WA_ID = NUMBER.removeprefix("+")  # WhatsApp's wa_id is the number without "+"
ENV = {
    "WA_TOKEN": TOKEN,
    "WA_APP_SECRET": APP_SECRET,
    "WA_VERIFY_TOKEN": VERIFY_TOKEN,
    "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
}


@pytest.fixture
async def emulators() -> AsyncIterator[tuple[WhatsAppEmulator, TwilioEmulator]]:
    """The business's WhatsApp Cloud API number and its Twilio SMS number."""
    whatsapp = WhatsAppEmulator(TOKEN, APP_SECRET)
    whatsapp.approve_template("reopen_chat", "de", "Hallo {{1}}, {{2}} hat eine Antwort für Sie.")
    twilio = TwilioEmulator(ACCOUNT_SID, AUTH_TOKEN)
    await whatsapp.start()
    await twilio.start()
    yield whatsapp, twilio
    await twilio.stop()
    await whatsapp.stop()


def _yaml(whatsapp: WhatsAppEmulator, twilio: TwilioEmulator, port: int, public: str) -> str:
    return f"""server: {{host: 127.0.0.1, port: {port}, public_url: "{public}"}}
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
        reopen_template:
          name: reopen_chat
          language: de
          variables: ["{{customer_name}}", "{{agent_name}}"]
  - sms:
      use: "bridge.channels.sms:SmsChannel"
      config:
        account_sid: "{ACCOUNT_SID}"
        auth_token: "${{TWILIO_AUTH_TOKEN}}"
        from_number: "{twilio.number}"
        api_base: "{twilio.base_url}"
        messages_per_second: 50
  - desk: {{use: "bot_core.testing:MemoryWorkspace"}}
"""


def _identity_line(workspace: MemoryWorkspace, room: str, channel: str) -> tuple[bool, str, bool, bool]:
    """(reachable, window until, window open, replies go here) of the card's identity on ``channel``."""
    card = workspace.rooms[room].card
    assert card is not None
    [identity] = [i for i in card.identities if i.channel == channel]
    return identity.reachable, identity.window_until, identity.window_open, identity.replies


def _notices(workspace: MemoryWorkspace, room: str) -> list[str]:
    return workspace.texts(room, "notice")


async def test_the_same_number_on_whatsapp_and_sms_is_one_customer_answered_on_either(
    emulators: tuple[WhatsAppEmulator, TwilioEmulator], sqlite_url: str, make_desk: DeskFactory
) -> None:
    whatsapp, twilio = emulators
    port = free_port()
    public = f"http://localhost:{port}"  # Twilio signs over the public URL
    desk = await make_desk(
        sqlite_url,
        _yaml(whatsapp, twilio, port, public),
        serve_http=True,
        http_port=port,
        environ=ENV,
        outbox=FAST_OUTBOX,
    )
    whatsapp.webhook_url = public + WA_WEBHOOK
    twilio.webhook_url = public + SMS_WEBHOOK
    cast(WhatsAppChannel, desk.plugins["whatsapp"]).clock = whatsapp.now
    workspace = cast(MemoryWorkspace, desk.plugins["desk"])

    # yesterday on WhatsApp (the emulator's clock set back a day and an hour), today by SMS
    whatsapp.offset = -(WINDOW_SECONDS + 3600)
    await whatsapp.customer_sends(WA_ID, "Ana Díaz", text="Hallo, my order 1042?")
    yesterday = datetime.fromtimestamp(whatsapp.now(), UTC)
    whatsapp.offset = 0
    await workspace.posts.wait_for(lambda posts: any(p.kind == "customer_message" for _, p in posts))
    room = workspace.room_of(WA_ID).room_id
    await twilio.customer_sends(NUMBER, "Any news on 1042?")
    await workspace.posts.wait_for(
        lambda _: workspace.texts(room, "customer_message") == ["Hallo, my order 1042?", "Any news on 1042?"]
    )
    assert len(workspace.rooms) == 1  # one room: the SMS went to the open conversation
    assert await Customer.all().count() == 1
    customer = await Customer.get()
    assert sorted(await Identity.filter(customer_id=customer.id).values_list("channel", "external_id")) == [
        ("sms", NUMBER),
        ("whatsapp", WA_ID),
    ]
    assert await Conversation.filter(customer_id=customer.id, state__not="closed").count() == 1

    closed_at = f"{yesterday + timedelta(hours=24):%Y-%m-%d %H:%M} UTC"
    await workspace.posts.wait_for(
        lambda _: (card := workspace.rooms[room].card) is not None and len(card.identities) == 2
    )  # one card with both identities
    assert _identity_line(workspace, room, "whatsapp") == (True, closed_at, False, False)
    assert _identity_line(workspace, room, "sms") == (True, "", False, True)  # replies go to the SMS

    await workspace.agent_writes(room, "It ships today.", agent="@bea")
    await twilio.wait_for(lambda: twilio.texts_to(NUMBER) == ["It ships today."])
    assert whatsapp.texts_to(WA_ID) == []

    await workspace.agent_writes(room, "!via whatsapp", agent="@bea")
    await workspace.posts.wait_for(
        lambda _: any("Replies in this conversation go to whatsapp" in t for t in _notices(workspace, room))
    )
    await workspace.agent_writes(room, "Tracking: RD-1042.", agent="@bea")
    # the window closed yesterday: the template goes out, the reply waits for the customer
    await whatsapp.wait_for(lambda: whatsapp.texts_to(WA_ID) == ["template:reopen_chat:de:Ana Díaz|Bea"])
    await workspace.posts.wait_for(lambda _: any("Not sent yet" in t for t in _notices(workspace, room)))
    assert twilio.texts_to(NUMBER) == ["It ships today."]

    await whatsapp.customer_sends(WA_ID, "Ana Díaz", text="Danke!")
    await whatsapp.wait_for(lambda: whatsapp.texts_to(WA_ID)[1:] == ["Tracking: RD-1042."])
    until = datetime.fromtimestamp(whatsapp.last_inbound[WA_ID], UTC) + timedelta(hours=24)
    await workspace.posts.wait_for(
        lambda _: _identity_line(workspace, room, "whatsapp")[1:3] == (f"{until:%Y-%m-%d %H:%M} UTC", True)
    )  # the card now says the window is open, and until when
    assert _identity_line(workspace, room, "whatsapp")[3] is True  # !via whatsapp holds

    await workspace.agent_writes(room, "!via sms", agent="@bea")
    await workspace.agent_writes(room, "Sent you the invoice by SMS too.", agent="@bea")
    await twilio.wait_for(lambda: twilio.texts_to(NUMBER)[1:] == ["Sent you the invoice by SMS too."])
    assert whatsapp.texts_to(WA_ID)[1:] == ["Tracking: RD-1042."]
    await workspace.posts.wait_for(lambda _: _identity_line(workspace, room, "sms")[3] is True)
    assert await desk.wait_settled(5)
    assert await Customer.all().count() == 1 and len(workspace.rooms) == 1
