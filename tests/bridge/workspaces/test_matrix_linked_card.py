"""A customer on two channels in Matrix: one portal room, and its pinned card lists both identities and the
one answers go to (against the session's real Synapse); the cards (Matrix and Slack) show the WhatsApp
window."""

from __future__ import annotations

import uuid
from typing import cast

from bot_core.adapters import CustomerCard, IdentityView
from bot_core.testing import MemoryChannel
from bridge.workspaces.matrix.card import card_text
from bridge.workspaces.slack.cards import card_blocks
from tests.bridge.workspaces.matrix_agent import Agent, room_of
from tests.conftest import DeskFactory
from tests.matrix_server import SynapseInfo


def test_the_cards_say_whether_the_whatsapp_window_is_open_and_until_when() -> None:
    def card(open_: bool) -> CustomerCard:
        return CustomerCard(
            customer_id=1,
            name="Anna",
            identities=(
                IdentityView(
                    "whatsapp",
                    "4915112345678",
                    "Anna",
                    window_until="2026-12-07 16:57 UTC",
                    window_open=open_,
                ),
                IdentityView("sms", "+4915112345678", None, replies=True),
            ),
            tags=(),
            state="assigned",
            team=None,
            assignee=None,
        )

    assert "whatsapp: Anna (window open until 2026-12-07 16:57 UTC); sms" in card_text(card(True))[0]
    closed = card_text(card(False))[0]
    assert (
        "whatsapp: Anna (window closed since 2026-12-07 16:57 UTC: a reply waits for the customer)" in closed
    )
    slack = card_blocks(card(True), "C1", [], notes_button=False)[1]["text"]["text"]
    assert "Anna on whatsapp (window open until 2026-12-07 16:57 UTC)" in slack
    assert "+4915112345678 on sms ← replies go here" in slack


class SmsDouble(MemoryChannel):
    """A second channel double (without the first one's test route: one HTTP server serves both)."""

    name = "sms_double"
    _routes = ()


def test_the_card_text_marks_the_identity_answers_go_to_and_unreachable_ones() -> None:
    card = CustomerCard(
        customer_id=1,
        name="Anna",
        identities=(
            IdentityView("whatsapp", "+4915112345678", "Anna", reachable=False),
            IdentityView("sms", "+4915112345678", None, replies=True),
        ),
        tags=(),
        state="bot",
        team=None,
        assignee=None,
        attributes={"verified phone": "+4915112345678"},
    )
    plain, rich = card_text(card)
    assert "Identities: whatsapp: Anna (unreachable); sms: +4915112345678 ← replies go here" in plain
    assert "verified phone=+4915112345678" in plain and "← replies go here" in rich


async def test_a_customer_writing_on_two_channels_has_one_room_whose_card_shows_both(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent
) -> None:
    yaml = f"""
server: {{host: 127.0.0.1, port: {synapse.appservice_port}}}
plugins:
  - whatsapp: {{use: "bot_core.testing:MemoryChannel"}}
  - sms: {{use: "tests.bridge.workspaces.test_matrix_linked_card:SmsDouble"}}{synapse.matrix_plugin_yaml()}
"""
    desk = await make_desk(sqlite_url, yaml, serve_http=True, http_port=synapse.appservice_port)
    whatsapp, sms = cast(MemoryChannel, desk.plugins["whatsapp"]), cast(MemoryChannel, desk.plugins["sms"])
    phone = "+49151" + str(uuid.uuid4().int)[:8]
    await whatsapp.customer_writes(phone, "hello on whatsapp", name="Greta", attributes={"phone": phone})
    assert await desk.wait_settled(30)
    room_id = await room_of(phone)
    await agent.sync_until(lambda: any(t == "hello on whatsapp" for _, t in agent.texts(room_id)))

    await sms.customer_writes(phone, "and by sms", attributes={"phone": phone})
    assert await desk.wait_settled(30)
    await agent.sync_until(lambda: any(t == "and by sms" for _, t in agent.texts(room_id)))

    def card_bodies() -> list[str]:
        return [
            e.source["content"].get("m.new_content", {}).get("body", "")
            for e in agent.timeline.get(room_id, [])
            if "m.new_content" in e.source.get("content", {})
        ]

    both = f"Identities: whatsapp: Greta; sms: {phone} ← replies go here"
    await agent.sync_until(lambda: any(both in body for body in card_bodies()))
    await agent.say(room_id, "Got it, answering here.")
    await sms.sent.wait_for(lambda items: any(d.external_user_id == phone for d in items), 20)
    assert sms.texts_to(phone) == ["Got it, answering here."] and whatsapp.texts_to(phone) == []
