"""Choices and reactions in the core: a channel with buttons gets the choices (up to what it shows), one
without gets them as a numbered list in the text; a typed number, title or press picks; a reaction goes
to a channel with reactions and is skipped elsewhere."""

from __future__ import annotations

from bot_core.api import Choice, numbered, picked
from bot_core.desk import Desk
from storage.models import OutboxItem, OutboxStatus
from tests.bot_core.test_relay_loop import doubles
from tests.conftest import DeskFactory

ASK = '  - ask: {use: "tests.bridge.channels.ask_plugin:AskPlugin"}\n'


def _yaml(choices: int, reactions: bool) -> str:
    return f"""
plugins:
  - customers:
      use: "bot_core.testing:MemoryChannel"
      config: {{choices: {choices}, reactions: {str(reactions).lower()}}}
  - desk: {{use: "bot_core.testing:MemoryWorkspace"}}
{ASK}"""


async def _settle(desk: Desk) -> None:
    assert await desk.wait_settled(15)


def test_numbered_and_picked() -> None:
    options = (Choice(id="a", title="Order status"), Choice(id="b", title="Returns"))
    assert numbered("What do you need?", options) == "What do you need?\n1. Order status\n2. Returns"
    assert picked("2", None, options) == options[1]
    assert picked("#2.", None, options) == options[1]
    assert picked("２", None, options) == options[1]  # noqa: RUF001 (a full-width digit, as typed on a phone)
    assert picked("returns", None, options) == options[1]
    assert picked("Returns", "a", options) == options[0]  # a press wins over the text
    assert picked("3", None, options) is None and picked("hello", None, options) is None


async def test_a_channel_without_buttons_gets_the_choices_as_a_numbered_list(
    database_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(database_url, _yaml(0, False))
    channel, workspace = doubles(desk)
    await channel.customer_writes("u1", "menu")
    await _settle(desk)
    [delivery] = channel.sent.items
    assert delivery.choices == ()
    assert delivery.text == "What do you need?\n1. Order status\n2. Returns\n3. Talk to a person"
    room = workspace.room_of("u1").room_id
    assert any("3. Talk to a person" in t for t in workspace.texts(room, "notice"))  # agents see the list

    await channel.customer_writes("u1", "2")
    await _settle(desk)
    assert channel.texts_to("u1")[-1] == "You picked return"

    thanks = await channel.customer_writes("u1", "thanks")
    await _settle(desk)
    assert len(channel.sent.items) == 2  # no reactions on this channel: skipped, not sent as text
    [reaction] = [r for r in await OutboxItem.all() if r.payload.get("kind") == "reaction"]
    assert reaction.status == OutboxStatus.SENT and reaction.payload["message"] == thanks


async def test_a_channel_with_buttons_gets_them_and_a_press_picks(
    database_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(database_url, _yaml(3, True))
    channel, _workspace = doubles(desk)
    await channel.customer_writes("u1", "menu")
    await _settle(desk)
    [delivery] = channel.sent.items
    assert delivery.text == "What do you need?" and [c.id for c in delivery.choices] == [
        "order",
        "return",
        "agent",
    ]
    assert delivery.menu == "Topics"
    await channel.customer_writes("u1", "Talk to a person", choice="agent")
    await _settle(desk)
    assert channel.texts_to("u1")[-1] == "You picked agent"

    await channel.customer_writes("u1", "topics")  # five choices: more than this channel shows
    await _settle(desk)
    listed = channel.sent.items[-1]
    assert listed.choices == () and listed.text.endswith("5. Are prices shown with VAT included?")

    thanks = await channel.customer_writes("u1", "thanks")
    await _settle(desk)
    reaction = channel.sent.items[-1]
    assert reaction.kind == "reaction" and reaction.text == "👍" and reaction.react_to == thanks
