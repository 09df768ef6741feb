"""A plugin's choices on Telegram: an inline keyboard under the reply; a tap comes back as the choice (the
query answered, the keyboard taken off so it is pressed once); a typed number picks too; the emulator
refuses callback data Telegram refuses."""

from __future__ import annotations

import aiohttp

from bot_core.api import Choice
from bridge.channels.telegram.outbound import keyboard
from tests.bridge.channels.telegram.conftest import ENV, TOKEN, doubles_yaml, parts
from tests.conftest import DeskFactory
from tests.emulators.telegram import TelegramEmulator

ASK = '  - ask: {use: "tests.bridge.channels.ask_plugin:AskPlugin"}\n'


async def test_choices_are_an_inline_keyboard_and_a_tap_picks_once(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, doubles_yaml(telegram) + ASK, environ=ENV)
    user = telegram.user(3001, "Kai")
    await telegram.customer_sends(user, "menu")
    await telegram.wait_for(lambda: telegram.texts_to(3001) == ["What do you need?"])
    [offer] = telegram.bot_messages(3001)
    assert offer["reply_markup"]["inline_keyboard"] == [
        [{"text": "Order status", "callback_data": "order"}],
        [{"text": "Returns", "callback_data": "return"}],
        [{"text": "Talk to a person", "callback_data": "agent"}],
    ]
    query = await telegram.customer_presses(user, offer["message_id"], "Returns")
    await telegram.wait_for(lambda: telegram.texts_to(3001)[-1:] == ["You picked return"])
    await telegram.wait_for(lambda: query["id"] in telegram.answered_queries)
    await telegram.wait_for(lambda: "reply_markup" not in telegram.bot_messages(3001)[0])

    await telegram.customer_sends(user, "3")  # typed, as on a channel without buttons
    await telegram.wait_for(lambda: telegram.texts_to(3001)[-1:] == ["You picked agent"])
    _channel, workspace = parts(desk)
    room = workspace.room_of("3001").room_id
    mirrored = [t for t in workspace.texts(room, "customer_message")]
    assert "Returns" in mirrored  # the room shows what was pressed
    assert await desk.wait_settled(5)


def test_short_choices_share_a_row() -> None:
    scores = tuple(Choice(id=f"nps:{n}", title=str(n)) for n in range(11))
    markup = keyboard(scores)
    assert markup is not None
    assert [len(row) for row in markup.inline_keyboard] == [6, 5]
    assert keyboard(()) is None


async def test_the_emulator_refuses_callback_data_over_64_bytes(telegram: TelegramEmulator) -> None:
    telegram.user(3002, "Lu")
    markup = '{"inline_keyboard": [[{"text": "Yes", "callback_data": "%s"}]]}' % ("x" * 65)
    async with aiohttp.ClientSession() as http:
        url = f"{telegram.base_url}/bot{TOKEN}/sendMessage"
        async with http.post(url, data={"chat_id": "3002", "text": "Sure?", "reply_markup": markup}) as resp:
            answer = await resp.json()
    assert resp.status == 400 and answer["description"] == "Bad Request: BUTTON_DATA_INVALID"
