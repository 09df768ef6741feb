"""Telegram customers and Matrix agents end to end: the Bot API emulator and the session's real Synapse."""

from __future__ import annotations

import secrets
from typing import Any, cast

import pytest
from nio import DownloadResponse, RoomMessageImage, UploadResponse

from bridge.workspaces.matrix.appservice import MatrixWorkspace
from tests.bridge.channels.telegram.conftest import ENV, telegram_entry
from tests.bridge.workspaces.matrix_agent import PNG_BYTES, Agent, room_of, type_until_shown
from tests.conftest import DeskFactory
from tests.emulators.telegram import TelegramEmulator
from tests.matrix_server import SynapseInfo


def desk_yaml(synapse: SynapseInfo, telegram: TelegramEmulator, mode: str = "polling") -> str:
    """Telegram customers, Matrix agents (appservice), served where Synapse pushes transactions."""
    entry = telegram_entry(telegram, mode=mode, webhook_url=synapse.appservice_url)
    return f"""
server: {{host: 127.0.0.1, port: {synapse.appservice_port}}}
plugins:{entry}{synapse.matrix_plugin_yaml()}
"""


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_a_telegram_customer_reaches_the_matrix_room_and_the_agents_answer_comes_back(
    mode: str,
    synapse: SynapseInfo,
    telegram: TelegramEmulator,
    sqlite_url: str,
    make_desk: DeskFactory,
    agent: Agent,
) -> None:
    desk = await make_desk(
        sqlite_url,
        desk_yaml(synapse, telegram, mode),
        serve_http=True,
        http_port=synapse.appservice_port,
        environ=ENV,
    )
    matrix = cast(MatrixWorkspace, desk.plugins["matrix"])
    chat_id = 10_000_000 + secrets.randbelow(10_000_000)
    rosa = telegram.user(chat_id, "Rosa", "Diaz")
    await telegram.customer_sends(rosa, "Hello, my parcel never arrived")
    await telegram.wait_for(lambda: not telegram.updates, 20)
    assert await desk.wait_settled(30)
    room_id = await room_of(str(chat_id))
    ghost = matrix.ghost_id("telegram", str(chat_id))
    await agent.sync_until(lambda: (ghost, "Hello, my parcel never arrived") in agent.texts(room_id))

    # the agent starts typing in Matrix: the customer sees "typing..." in Telegram
    await agent.sync_until(lambda: room_id in agent.client.rooms)
    await type_until_shown(
        agent,
        room_id,
        lambda s: telegram.wait_for(
            lambda: any(
                str(c.params.get("chat_id")) == str(chat_id) and c.params.get("action") == "typing"
                for c in telegram.calls_of("sendChatAction")
            ),
            s,
        ),
    )
    answer_id = await agent.say(room_id, "So sorry! A **new parcel** ships today.")
    await agent.client.room_typing(room_id, False)
    await telegram.wait_for(lambda: bool(telegram.bot_messages(chat_id)), 20)
    [answer] = telegram.bot_messages(chat_id)
    assert answer["text"] == "So sorry! A new parcel ships today."
    assert answer["entities"] == [{"type": "bold", "offset": 12, "length": 10}]
    if mode == "webhook":
        assert telegram.webhook_deliveries and not telegram.calls_of("getUpdates")
    else:
        assert telegram.calls_of("getUpdates") and not telegram.webhook_deliveries

    # the customer answers with Telegram's "reply": the room shows it as a reply to the agent's message
    await telegram.customer_sends(rosa, "Thank you!", reply_to=answer["message_id"])
    await agent.sync_until(lambda: (ghost, "Thank you!") in agent.texts(room_id))
    thanks = next(c for c in agent.messages(room_id, ghost) if c.get("body") == "Thank you!")
    assert thanks["m.relates_to"] == {"m.in_reply_to": {"event_id": answer_id}}

    # the customer corrects themselves: the ghost's message in the room is replaced, not duplicated
    await telegram.customer_edits(rosa, 1, "Hello, my parcel 1042 never arrived")
    await agent.sync_until(
        lambda: any(
            e.get("content", {}).get("m.new_content", {}).get("body") == "Hello, my parcel 1042 never arrived"
            and e["content"]["m.relates_to"]["rel_type"] == "m.replace"
            for e in agent.events.get(room_id, [])
        )
    )


async def test_a_photo_makes_the_round_trip(
    synapse: SynapseInfo, telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory, agent: Agent
) -> None:
    desk = await make_desk(
        sqlite_url,
        desk_yaml(synapse, telegram),
        serve_http=True,
        http_port=synapse.appservice_port,
        environ=ENV,
    )
    matrix = cast(MatrixWorkspace, desk.plugins["matrix"])
    chat_id = 20_000_000 + secrets.randbelow(10_000_000)
    sam = telegram.user(chat_id, "Sam")
    await telegram.customer_sends(sam, photo=PNG_BYTES, caption="the lamp arrived broken")
    await telegram.wait_for(lambda: not telegram.updates, 20)
    assert await desk.wait_settled(30)
    room_id = await room_of(str(chat_id))

    def images() -> list[Any]:
        return [e for e in agent.timeline.get(room_id, []) if isinstance(e, RoomMessageImage)]

    await agent.sync_until(
        lambda: len(images()) == 1 and ("the lamp arrived broken" in [t for _, t in agent.texts(room_id)])
    )
    image = images()[0]
    assert image.sender == matrix.ghost_id("telegram", str(chat_id))
    downloaded = await agent.client.download(image.url)
    assert isinstance(downloaded, DownloadResponse) and downloaded.body == PNG_BYTES

    upload, _ = await agent.client.upload(
        lambda *_: PNG_BYTES, content_type="image/png", filename="replacement.png", filesize=len(PNG_BYTES)
    )
    assert isinstance(upload, UploadResponse), upload
    await agent.client.room_send(
        room_id,
        "m.room.message",
        {
            "msgtype": "m.image",
            "body": "replacement.png",
            "url": upload.content_uri,
            "info": {"mimetype": "image/png", "size": len(PNG_BYTES)},
        },
    )
    await telegram.wait_for(lambda: bool(telegram.bot_messages(chat_id)), 20)
    [sent] = telegram.bot_messages(chat_id)
    [send_photo] = [c for c in telegram.calls_of("sendPhoto") if c.status == 200]
    [upload_part] = send_photo.files.values()
    assert (upload_part.filename, upload_part.data) == ("replacement.png", PNG_BYTES)
    largest = sent["photo"][-1]
    assert telegram.files[largest["file_id"]].data == PNG_BYTES
