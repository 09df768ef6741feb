"""Choices and reactions on WhatsApp: a plugin's choices go as reply buttons (up to 3 short titles) or a
list (more, or longer titles), within the Cloud API's limits (which the emulator checks as the platform
does); a press comes back as the choice, a typed number too; a reaction lands on the customer's message."""

from __future__ import annotations

from typing import Any, cast

import aiohttp

from bot_core.api import Choice
from bridge.channels.whatsapp.channel import interactive_message
from tests.bridge.channels.whatsapp.conftest import TOKEN, WaDesk
from tests.emulators.whatsapp import VERSION, WhatsAppEmulator

ANA = "4915112345678"
ASK = '\n  - ask: {use: "tests.bridge.channels.ask_plugin:AskPlugin"}'


def _interactive(whatsapp: WhatsAppEmulator, wa_id: str) -> list[dict[str, Any]]:
    return [m for m in whatsapp.messages_to(wa_id) if m.get("type") == "interactive"]


async def test_three_short_choices_go_as_reply_buttons_and_a_press_or_a_typed_number_picks(
    whatsapp: WhatsAppEmulator, wa_desk: WaDesk
) -> None:
    await wa_desk(extra=ASK)
    await whatsapp.customer_sends(ANA, "Ana", text="menu")
    await whatsapp.wait_for(lambda: bool(_interactive(whatsapp, ANA)))
    [sent] = _interactive(whatsapp, ANA)
    assert sent["interactive"]["type"] == "button"
    assert sent["interactive"]["body"]["text"] == "What do you need?"
    assert whatsapp.choices_of(sent["id"]) == [
        ("order", "Order status"),
        ("return", "Returns"),
        ("agent", "Talk to a person"),
    ]

    await whatsapp.customer_presses(ANA, "Ana", sent["id"], "Returns")
    await whatsapp.wait_for(lambda: whatsapp.texts_to(ANA)[-1] == "You picked return")
    await whatsapp.customer_sends(ANA, "Ana", text="1")  # typed, as a channel without buttons would ask
    await whatsapp.wait_for(lambda: whatsapp.texts_to(ANA)[-1] == "You picked order")
    assert not [c for c in whatsapp.calls if c.response.get("error")]


async def test_more_or_longer_choices_go_as_a_list_within_its_limits(
    whatsapp: WhatsAppEmulator, wa_desk: WaDesk
) -> None:
    await wa_desk(extra=ASK)
    await whatsapp.customer_sends(ANA, "Ana", text="topics")
    await whatsapp.wait_for(lambda: bool(_interactive(whatsapp, ANA)))
    [sent] = _interactive(whatsapp, ANA)
    interactive = sent["interactive"]
    assert interactive["type"] == "list" and interactive["action"]["button"] == "Topics"
    rows = interactive["action"]["sections"][0]["rows"]
    assert [r["id"] for r in rows] == ["ship", "size", "pay", "gift", "vat"]
    assert rows[0]["title"] == "When will my parcel be…" and len(rows[0]["title"]) <= 24
    assert rows[0]["description"] == "When will my parcel be shipped to me?"  # the whole question
    assert rows[2] == {"id": "pay", "title": "Can I pay by invoice?"}

    await whatsapp.customer_presses(ANA, "Ana", sent["id"], "Do you wrap gifts?")
    await whatsapp.wait_for(lambda: whatsapp.texts_to(ANA)[-1] == "You picked gift")
    assert not [c for c in whatsapp.calls if c.response.get("error")]


async def test_a_reaction_lands_on_the_customers_message(whatsapp: WhatsAppEmulator, wa_desk: WaDesk) -> None:
    await wa_desk(extra=ASK)
    thanks = await whatsapp.customer_sends(ANA, "Ana", text="thanks")
    await whatsapp.wait_for(lambda: whatsapp.texts_to(ANA) == ["reaction:👍"])
    [reaction] = whatsapp.messages_to(ANA)
    assert reaction["reaction"] == {"message_id": thanks["id"], "emoji": "👍"}


def test_choices_are_fitted_to_the_platforms_limits() -> None:
    """What the channel makes of choices the Cloud API would refuse as they are."""
    many = tuple(Choice(id=f"c{n}", title=f"Option {n}") for n in range(4))
    rest, message = interactive_message("Pick one", many, "")
    assert rest == "" and message["interactive"]["type"] == "list"  # 4 buttons are too many
    assert message["interactive"]["action"]["button"] == "Choose"
    same = (Choice(id="a", title="Yes"), Choice(id="b", title="Yes"))
    assert interactive_message("Sure?", same, "")[1]["interactive"]["type"] == "list"  # titles not unique
    long_text = "x" * 1500
    rest, message = interactive_message(long_text, (Choice(id="y", title="Yes"),), "")
    assert message["interactive"]["type"] == "button"
    assert rest == "x" * 476 and len(message["interactive"]["body"]["text"]) == 1024


async def _post(whatsapp: WhatsAppEmulator, interactive: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    body = {"messaging_product": "whatsapp", "to": ANA, "type": "interactive", "interactive": interactive}
    url = f"{whatsapp.base_url}/{VERSION}/{whatsapp.phone_number_id}/messages"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            return resp.status, cast(dict[str, Any], await resp.json())


def _buttons(*titles: str) -> dict[str, Any]:
    return {
        "type": "button",
        "body": {"text": "Pick one"},
        "action": {
            "buttons": [{"type": "reply", "reply": {"id": f"b{n}", "title": t}} for n, t in enumerate(titles)]
        },
    }


async def test_the_emulator_refuses_what_the_cloud_api_refuses(whatsapp: WhatsAppEmulator) -> None:
    whatsapp.last_inbound[ANA] = whatsapp.now()  # the window is open: only the shapes are judged
    status, answer = await _post(whatsapp, _buttons("One", "Two", "Three", "Four"))
    assert status == 400 and answer["error"]["code"] == 131009
    assert answer["error"]["message"] == "(#131009) Parameter value is not valid"
    assert "Max allowed buttons: 3" in answer["error"]["error_data"]["details"]
    status, answer = await _post(whatsapp, _buttons("A title of twenty-one"))
    assert answer["error"]["code"] == 131009 and "Max length: 20" in answer["error"]["error_data"]["details"]
    status, answer = await _post(whatsapp, _buttons("Same", "Same"))
    assert answer["error"]["code"] == 131009
    rows = [{"id": f"r{n}", "title": f"Row {n}"} for n in range(11)]
    listing: dict[str, Any] = {
        "type": "list",
        "body": {"text": "Pick one"},
        "action": {"button": "Choose", "sections": [{"rows": rows}]},
    }
    status, answer = await _post(whatsapp, listing)
    assert answer["error"]["code"] == 131009 and "10" in answer["error"]["error_data"]["details"]
    listing["action"]["sections"][0]["rows"] = [{"id": "r", "title": "A row title of 25 letters"}]
    status, answer = await _post(whatsapp, listing)
    assert answer["error"]["code"] == 131009 and "Max length: 24" in answer["error"]["error_data"]["details"]
    listing["action"]["sections"][0]["rows"] = [{"id": "r", "title": "Fine"}]
    status, answer = await _post(whatsapp, listing)
    assert status == 200 and answer["messages"][0]["id"].startswith("wamid.")
