"""The Matrix workspace in bot mode (one bot account, no appservice), against the session's real Synapse."""

from __future__ import annotations

import functools
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import pytest
from nio import AsyncClient, LoginResponse, RoomCreateResponse
from pydantic import SecretStr, ValidationError

from bot_core.config import parse_config
from bot_core.desk import Desk
from bot_core.plugin import PluginServices
from bot_core.testing import MemoryChannel
from bridge.workspaces.matrix.agent_events import agent_message
from bridge.workspaces.matrix.bot import MatrixBotWorkspace
from bridge.workspaces.matrix.devserver import free_port
from bridge.workspaces.matrix.errors import MatrixError
from storage.models import OutboxItem, OutboxStatus, OutboxTarget, Room
from tests.bridge.workspaces.matrix_agent import (
    PNG_BYTES,
    Agent,
    agent_sends_image,
    edit_then_redact,
    mark_unsent,
    room_of,
    typing_and_reply,
)
from tests.conftest import FAST_OUTBOX
from tests.matrix_server import SynapseInfo


@dataclass(frozen=True)
class BotAccount:
    """A fresh bot account on the test homeserver."""

    user_id: str
    password: str


def bot_yaml(synapse: SynapseInfo, bot: BotAccount, *, credential: str = "password", extra: str = "") -> str:
    """plugins.yaml for MemoryChannel + the bot workspace; the credential comes from ${BOT_SECRET}."""
    return f"""
plugins:
  - customers: {{use: "bot_core.testing:MemoryChannel"}}
  - matrix:
      use: "bridge.workspaces.matrix.bot:MatrixBotWorkspace"
      config:
        homeserver: "{synapse.base_url}"
        user_id: "{bot.user_id}"
        {credential}: "${{BOT_SECRET}}"
        agents: ["{synapse.agent_user_id}"]
        sync_timeout_ms: 1000
        {extra}
"""


BotDeskFactory = Callable[[str, str, str], Awaitable[Desk]]


@pytest.fixture
async def bot_desk() -> AsyncIterator[BotDeskFactory]:
    """Start desks like ``make_desk`` does, but with an environment, since secrets must come from ${VAR}.

    (``make_desk`` parses plugins.yaml with an empty environment, and a literal password is refused.)
    """
    running: list[Desk] = []

    async def factory(url: str, yaml_text: str, secret: str) -> Desk:
        config = parse_config(yaml_text, "plugins.yaml", environ={"BOT_SECRET": secret})
        config = config.model_copy(
            update={
                "storage": config.storage.model_copy(update={"database": url, "redis": ""}),
                "server": config.server.model_copy(update={"host": "127.0.0.1", "port": free_port()}),
            }
        )
        # served over HTTP: channels fetch agents' files from the bot's media links
        desk = Desk(config, serve_http=True, outbox_settings=FAST_OUTBOX, scheduler_poll=0.1)
        await desk.start()
        running.append(desk)
        return desk

    yield factory
    for desk in running:
        if desk.plugins:
            await desk.stop(timeout=5)


@pytest.fixture
async def bot(synapse: SynapseInfo) -> BotAccount:
    """A new bot account per test, so that no sync token or room is shared between tests."""
    password = secrets.token_urlsafe(12)
    user_id = await synapse.server.create_user(f"relaybot-{uuid.uuid4().hex[:8]}", password)
    return BotAccount(user_id, password)


async def _token_for(synapse: SynapseInfo, bot: BotAccount) -> tuple[AsyncClient, str]:
    """An access token of the bot account (a separate session; close the client to keep it)."""
    client = AsyncClient(synapse.base_url, bot.user_id)
    login = await client.login(bot.password)
    assert isinstance(login, LoginResponse)
    return client, login.access_token


# -- configuration and parsing ---------------------------------------------------------------------


def test_config_wants_exactly_one_credential_and_full_user_ids() -> None:
    config = MatrixBotWorkspace.Config
    base = {"homeserver": "http://127.0.0.1:8008", "user_id": "@bot:example.com"}
    assert config.model_validate({**base, "password": "pw"}).access_token is None
    assert config.model_validate({**base, "access_token": "tok"}).password is None
    for bad in (base, {**base, "password": "pw", "access_token": "tok"}, {**base, "password": ""}):
        with pytest.raises(ValidationError, match="exactly one of password and access_token"):
            config.model_validate(bad)
    with pytest.raises(ValidationError, match="full Matrix user id"):
        config.model_validate({**base, "user_id": "bot", "password": "pw"})
    with pytest.raises(ValidationError, match="not full Matrix user ids: agent"):
        config.model_validate({**base, "password": "pw", "agents": ["agent"]})
    with pytest.raises(ValidationError, match="Extra inputs"):
        config.model_validate({**base, "password": "pw", "mode": "appservice"})


BOT = "@bot:x".__eq__  # the bridge's own users: here only the bot


def test_only_agents_text_messages_become_agent_messages() -> None:
    def event(sender: str, content: dict[str, Any], type_: str = "m.room.message") -> dict[str, Any]:
        return {"type": type_, "sender": sender, "event_id": "$e1", "content": content}

    text = {"msgtype": "m.text", "body": "hello"}
    assert agent_message("matrix", BOT, "!r:x", event("@bot:x", text)) is None  # the bot itself
    assert agent_message("matrix", BOT, "!r:x", event("@a:x", text, "m.reaction")) is None
    assert agent_message("matrix", BOT, "!r:x", event("@a:x", {})) is None  # redacted
    assert agent_message("matrix", BOT, "!r:x", event("@a:x", {"msgtype": "m.notice", "body": "n"})) is None
    message = agent_message("matrix", BOT, "!r:x", event("@a:x", text))
    assert message is not None
    assert (message.agent_id, message.agent_name, message.text, message.room_id) == (
        "@a:x",
        "a",
        "hello",
        "!r:x",
    )
    edit = agent_message(
        "matrix",
        BOT,
        "!r:x",
        event(
            "@a:x",
            {
                "msgtype": "m.text",
                "body": "* fixed",
                "m.new_content": {"msgtype": "m.text", "body": "fixed"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"},
            },
        ),
    )
    assert edit is not None and (edit.text, edit.edit_of) == ("fixed", "$orig")
    reply = agent_message(
        "matrix",
        BOT,
        "!r:x",
        event(
            "@a:x",
            {
                "msgtype": "m.text",
                "body": "> <@bot:x> Alice (Web): where is it?\n> more\n\nIt ships today",
                "m.relates_to": {"m.in_reply_to": {"event_id": "$q"}},
            },
        ),
    )
    assert reply is not None and reply.text == "It ships today"  # the quote is not sent to the customer
    for redaction in (
        {"type": "m.room.redaction", "sender": "@a:x", "event_id": "$e2", "redacts": "$orig", "content": {}},
        {"type": "m.room.redaction", "sender": "@a:x", "event_id": "$e2", "content": {"redacts": "$orig"}},
    ):
        deleted = agent_message("matrix", BOT, "!r:x", redaction)
        assert deleted is not None and (deleted.redacts, deleted.text) == ("$orig", "")
    assert agent_message("matrix", BOT, "!r:x", {**redaction, "sender": "@bot:x"}) is None


# -- end to end against Synapse --------------------------------------------------------------------


async def test_first_contact_creates_the_room_and_agents_answer_from_it(
    synapse: SynapseInfo, sqlite_url: str, bot_desk: BotDeskFactory, bot: BotAccount, agent: Agent
) -> None:
    desk = await bot_desk(sqlite_url, bot_yaml(synapse, bot), bot.password)
    channel = cast(MemoryChannel, desk.plugins["customers"])
    user = f"alice-{uuid.uuid4().hex[:6]}"
    first = await channel.customer_writes(user, "Where is <b>my</b> parcel & co?\nOrder 42", name="Alice <3")
    assert await desk.wait_settled(30)
    room_id = await room_of(user)

    # the customer's message, posted by the bot with the customer's name in a prefix (HTML escaped)
    await agent.sync_until(
        lambda: any(c.get("msgtype") == "m.text" for c in agent.messages(room_id, bot.user_id))
    )
    mirror = next(c for c in agent.messages(room_id, bot.user_id) if c.get("msgtype") == "m.text")
    assert mirror["body"] == "Alice <3 (Customers): Where is <b>my</b> parcel & co?\nOrder 42"
    assert mirror["format"] == "org.matrix.custom.html"
    assert mirror["formatted_body"] == (
        "<b>Alice &lt;3 (Customers)</b>: Where is &lt;b&gt;my&lt;/b&gt; parcel &amp; co?<br>Order 42"
    )
    name = await agent.client.room_get_state_event(room_id, "m.room.name")
    topic = await agent.client.room_get_state_event(room_id, "m.room.topic")
    assert name.content["name"] == "Alice <3 (Customers)"
    assert "Alice <3" in topic.content["topic"] and "Customers" in topic.content["topic"]
    create = await agent.client.room_get_state_event(room_id, "m.room.create")
    assert create.content.get("m.federate") is False
    pinned = await agent.client.room_get_state_event(room_id, "m.room.pinned_events")
    card_id = pinned.content["pinned"][0]
    await agent.sync_until(lambda: agent.event(room_id, card_id) is not None)
    card = agent.event(room_id, card_id)
    assert card is not None and card["sender"] == bot.user_id
    assert card["content"]["msgtype"] == "m.notice" and card["content"]["body"].startswith(
        "Customer card: Alice <3"
    )

    # the agent's answer reaches the customer, and only that: the bot never relays its own messages
    await agent.say(room_id, "Sorry about that! A new parcel ships today.")
    await channel.sent.wait_for(lambda items: any(d.external_user_id == user for d in items), 20)
    assert await desk.wait_settled(30)
    assert channel.texts_to(user) == ["Sorry about that! A new parcel ships today."]

    # a command: the engine answers with a notice in the room; nothing goes to the customer
    await agent.say(room_id, "!note VIP customer")
    await agent.sync_until(
        lambda: any(
            c.get("msgtype") == "m.notice" and "Note: VIP customer" in c.get("body", "")
            for c in agent.messages(room_id, bot.user_id)
        )
    )
    # the first answer assigned the conversation: the pinned card was updated in place
    await agent.sync_until(
        lambda: any(
            c.get("m.relates_to", {}).get("event_id") == card_id and "owner" in c["m.new_content"]["body"]
            for c in agent.messages(room_id, bot.user_id)
        )
    )

    # the customer corrects their message: the room's copy is edited (m.replace), prefix and all
    mirror_id = next(
        e["event_id"]
        for e in agent.events[room_id]
        if e.get("sender") == bot.user_id and e["content"].get("msgtype") == "m.text"
    )
    await channel.customer_writes(user, "Where is my parcel?", name="Alice <3", edit_of=first)
    await agent.sync_until(
        lambda: any(c.get("m.relates_to", {}).get("event_id") == mirror_id for c in agent.messages(room_id))
    )
    edit = next(c for c in agent.messages(room_id) if c.get("m.relates_to", {}).get("event_id") == mirror_id)
    assert edit["m.relates_to"]["rel_type"] == "m.replace"
    assert edit["m.new_content"]["body"] == "Alice <3 (Customers): Where is my parcel?"
    assert edit["m.new_content"]["formatted_body"] == "<b>Alice &lt;3 (Customers)</b>: Where is my parcel?"

    assert await desk.wait_settled(30)
    assert channel.texts_to(user) == ["Sorry about that! A new parcel ships today."]  # notes stay internal


async def test_files_travel_both_ways_in_bot_mode(
    synapse: SynapseInfo,
    sqlite_url: str,
    bot_desk: BotDeskFactory,
    bot: BotAccount,
    agent: Agent,
    file_host: str,
) -> None:
    from nio import DownloadResponse

    from bot_core.events import Attachment

    desk = await bot_desk(sqlite_url, bot_yaml(synapse, bot), bot.password)
    channel = cast(MemoryChannel, desk.plugins["customers"])
    user = f"erin-{uuid.uuid4().hex[:6]}"
    photo = Attachment(
        kind="image", url=f"{file_host}/broken-lamp.png", mime_type="image/png", name="broken-lamp.png"
    )
    receipt = Attachment(kind="file", url=f"{file_host}/receipt.pdf", mime_type="application/pdf")
    gone = Attachment(kind="file", url=f"{file_host.rsplit('/', 1)[0]}/missing/x.pdf", name="x.pdf")
    await channel.customer_writes(user, "It arrived broken", name="Erin", attachments=(photo, receipt, gone))
    assert await desk.wait_settled(30)
    room_id = await room_of(user)

    # each file is posted by the bot into the room, captioned with the customer's name
    await agent.sync_until(
        lambda: (
            sum(c.get("msgtype") in ("m.image", "m.file") for c in agent.messages(room_id, bot.user_id)) == 2
            and any(c.get("msgtype") == "m.text" for c in agent.messages(room_id, bot.user_id))
        )
    )
    files = [c for c in agent.messages(room_id, bot.user_id) if c.get("msgtype") in ("m.image", "m.file")]
    assert [(c["msgtype"], c["body"]) for c in files] == [
        ("m.image", "Erin (Customers): broken-lamp.png"),
        ("m.file", "Erin (Customers): file"),
    ]
    downloaded = await agent.client.download(files[0]["url"])
    assert isinstance(downloaded, DownloadResponse) and downloaded.body == PNG_BYTES
    # the file the channel could not serve is named in the text, with its link, instead of being lost
    text = next(c for c in agent.messages(room_id, bot.user_id) if c.get("msgtype") == "m.text")
    assert text["body"] == f"Erin (Customers): It arrived broken\n[file: x.pdf] {gone.url}"

    # the agent answers with a picture: the channel gets a signed relaydesk link to the bytes
    await agent_sends_image(agent, channel, room_id)


async def test_agent_typing_and_customer_replies_in_bot_mode(
    synapse: SynapseInfo, sqlite_url: str, bot_desk: BotDeskFactory, bot: BotAccount, agent: Agent
) -> None:
    desk = await bot_desk(sqlite_url, bot_yaml(synapse, bot), bot.password)
    channel = cast(MemoryChannel, desk.plugins["customers"])
    user = f"hana-{uuid.uuid4().hex[:6]}"
    await channel.customer_writes(user, "Is the blue one in stock?", name="Hana")
    assert await desk.wait_settled(30)
    await typing_and_reply(agent, channel, user, await room_of(user))


async def test_agents_edits_and_deletions_follow_to_the_customer(
    synapse: SynapseInfo, sqlite_url: str, bot_desk: BotDeskFactory, bot: BotAccount, agent: Agent
) -> None:
    desk = await bot_desk(sqlite_url, bot_yaml(synapse, bot), bot.password)
    channel = cast(MemoryChannel, desk.plugins["customers"])
    user = f"dan-{uuid.uuid4().hex[:6]}"
    await channel.customer_writes(user, "what's the status?", name="Dan")
    assert await desk.wait_settled(30)
    await edit_then_redact(agent, channel, await room_of(user))
    assert await desk.wait_settled(30)
    assert len(channel.sent.items) == 3


async def test_a_restart_replays_nothing_relays_what_was_written_meanwhile_and_keeps_the_room(
    synapse: SynapseInfo,
    sqlite_url: str,
    bot_desk: BotDeskFactory,
    bot: BotAccount,
    agent: Agent,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    paged: list[str] = []
    page_in = MatrixBotWorkspace._missed

    async def counting_page_in(self: MatrixBotWorkspace, room_id: str, prev_batch: str, since: str) -> Any:
        paged.append(room_id)
        return await page_in(self, room_id, prev_batch, since)

    monkeypatch.setattr(MatrixBotWorkspace, "_missed", counting_page_in)
    # timeline_limit 2: the three messages written while relaydesk is down do not fit in one sync,
    # so the restarted desk has to page in the gap
    desk = await bot_desk(sqlite_url, bot_yaml(synapse, bot, extra="timeline_limit: 2"), bot.password)
    channel = cast(MemoryChannel, desk.plugins["customers"])
    user = f"bob-{uuid.uuid4().hex[:6]}"
    await channel.customer_writes(user, "first visit", name="Bob")
    assert await desk.wait_settled(30)
    room_id = await room_of(user)
    await agent.sync_until(
        lambda: any(c.get("body") == "Bob (Customers): first visit" for c in agent.messages(room_id))
    )
    await agent.say(room_id, "answer one")
    await channel.sent.wait_for(lambda items: len(items) >= 1, 20)
    assert await desk.wait_settled(30)
    await desk.stop(timeout=10)

    for n in (1, 2, 3):
        await agent.say(room_id, f"written while relaydesk was down {n}")

    # the second process uses an access token of the same account (the stored sync position is per account)
    session, token = await _token_for(synapse, bot)
    try:
        desk = await bot_desk(
            sqlite_url, bot_yaml(synapse, bot, credential="access_token", extra="timeline_limit: 2"), token
        )
        channel = cast(MemoryChannel, desk.plugins["customers"])
        await channel.sent.wait_for(lambda items: len(items) >= 3, 20)
        assert await desk.wait_settled(30)
        assert channel.texts_to(user) == [f"written while relaydesk was down {n}" for n in (1, 2, 3)]
        assert room_id in paged  # the gap was paged in (the test exercises that path)

        await channel.customer_writes(user, "back again", name="Bob")
        assert await desk.wait_settled(30)
        assert await Room.all().count() == 1
        await agent.sync_until(
            lambda: any(c.get("body") == "Bob (Customers): back again" for c in agent.messages(room_id))
        )
        assert await desk.wait_settled(30)
        assert channel.texts_to(user) == [f"written while relaydesk was down {n}" for n in (1, 2, 3)]
    finally:
        await session.close()


async def test_wrong_credentials_or_an_unreachable_agents_space_are_refused_at_start(
    synapse: SynapseInfo, bot: BotAccount, agent: Agent
) -> None:
    session, token = await _token_for(synapse, bot)
    services = PluginServices(log=logging.getLogger("test.matrix_bot"))
    try:
        mismatched = MatrixBotWorkspace.Config(
            homeserver=synapse.base_url, user_id=synapse.agent_user_id, access_token=SecretStr(token)
        )
        with pytest.raises(MatrixError, match=f"belong to {bot.user_id}"):
            await MatrixBotWorkspace(mismatched, services).start()
        wrong = MatrixBotWorkspace.Config(
            homeserver=synapse.base_url, user_id=bot.user_id, password=SecretStr("not-the-password")
        )
        with pytest.raises(MatrixError, match="refused"):
            await MatrixBotWorkspace(wrong, services).start()
        # an agents' space that does not exist, or that the bot was not invited to, stops the start
        good: dict[str, Any] = {
            "homeserver": synapse.base_url,
            "user_id": bot.user_id,
            "password": SecretStr(bot.password),
        }
        nowhere = MatrixBotWorkspace.Config(**good, space=f"#nowhere:{synapse.server_name}")
        with pytest.raises(MatrixError, match=f"space #nowhere:{synapse.server_name} was not found"):
            await MatrixBotWorkspace(nowhere, services).start()
        private = await agent.client.room_create(space=True, name="Someone else's team")
        assert isinstance(private, RoomCreateResponse)
        closed = MatrixBotWorkspace.Config(**good, space=private.room_id)
        with pytest.raises(
            MatrixError, match=r"cannot join the agents' space .* \(invite the bot to the space\)"
        ):
            await MatrixBotWorkspace(closed, services).start()
    finally:
        await session.logout()
        await session.close()


async def test_rooms_of_older_versions_list_the_bot_in_the_power_levels(
    synapse: SynapseInfo,
    sqlite_url: str,
    bot_desk: BotDeskFactory,
    bot: BotAccount,
    agent: Agent,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Version 12 (Synapse's default) refuses the creator in the power levels; earlier versions demand it.
    desk = await bot_desk(sqlite_url, bot_yaml(synapse, bot), bot.password)
    client = cast(MatrixBotWorkspace, desk.plugins["matrix"])._client
    assert client is not None
    create = client.room_create
    monkeypatch.setattr(client, "room_create", functools.partial(create, room_version="10"))
    channel = cast(MemoryChannel, desk.plugins["customers"])
    user = f"carol-{uuid.uuid4().hex[:6]}"
    await channel.customer_writes(user, "hi", name="Carol")
    assert await desk.wait_settled(30)
    room_id = await room_of(user)
    await agent.sync_until(
        lambda: any(c.get("body") == "Carol (Customers): hi" for c in agent.messages(room_id))
    )
    version = await agent.client.room_get_state_event(room_id, "m.room.create")
    assert version.content["room_version"] == "10"
    power = await agent.client.room_get_state_event(room_id, "m.room.power_levels")
    users = power.content["users"]
    assert users == {bot.user_id: 100, synapse.agent_user_id: 50}
    pinned = await agent.client.room_get_state_event(room_id, "m.room.pinned_events")
    assert pinned.content["pinned"]  # the bot could pin the card


async def test_a_post_and_a_notice_resent_after_a_crash_by_a_new_process_show_once(
    synapse: SynapseInfo, sqlite_url: str, bot_desk: BotDeskFactory, bot: BotAccount, agent: Agent
) -> None:
    """The bot logs in with the same device each start and every post's transaction id is its outbox
    key: Synapse recognises what the next process sends again."""
    desk = await bot_desk(sqlite_url, bot_yaml(synapse, bot), bot.password)
    channel = cast(MemoryChannel, desk.plugins["customers"])
    user = f"quinn-{uuid.uuid4().hex[:6]}"
    await channel.customer_writes(user, "where is my parcel?", name="Quinn")
    assert await desk.wait_settled(30)
    room_id = await room_of(user)
    await agent.sync_until(lambda: any(t.endswith("where is my parcel?") for _, t in agent.texts(room_id)))
    await agent.say(room_id, "!note ask the depot")
    await agent.sync_until(lambda: any("Note: ask the depot" in t for _, t in agent.texts(room_id)))
    assert await desk.wait_settled(30)
    rows = [
        r.id
        for r in await OutboxItem.filter(target=OutboxTarget.ROOM, status=OutboxStatus.SENT)
        if any(s in str(r.payload.get("text")) for s in ("where is my parcel?", "ask the depot"))
    ]
    assert len(rows) == 2
    cast(MatrixBotWorkspace, desk.plugins["matrix"])._logged_in_here = False  # a crash logs nothing out
    await desk.stop(timeout=10)
    mark_unsent(sqlite_url, rows)

    desk = await bot_desk(sqlite_url, bot_yaml(synapse, bot), bot.password)
    assert await desk.wait_settled(30)
    assert await OutboxItem.filter(id__in=rows, status=OutboxStatus.SENT).count() == 2
    await cast(MemoryChannel, desk.plugins["customers"]).customer_writes(user, "any news?", name="Quinn")
    await agent.sync_until(lambda: any(t.endswith("any news?") for _, t in agent.texts(room_id)))
    texts = [t for _, t in agent.texts(room_id)]
    assert sum(t.endswith("where is my parcel?") for t in texts) == 1
    assert sum("Note: ask the depot" in t for t in texts) == 1


async def test_ops_posts_in_bot_mode_land_in_the_teams_ops_room(
    synapse: SynapseInfo, sqlite_url: str, bot_desk: BotDeskFactory, bot: BotAccount, agent: Agent
) -> None:
    team = f"sales{uuid.uuid4().hex[:6]}"
    desk = await bot_desk(sqlite_url, bot_yaml(synapse, bot), bot.password)
    services = desk.plugins["customers"].services
    await services.post_to_ops(team, "5 leads waiting", key="digest:1")
    await services.post_to_ops(team, "one more lead")
    assert await desk.wait_settled(30)

    def ops_room() -> str | None:
        return next((r for r in agent.timeline if "one more lead" in [t for _, t in agent.texts(r)]), None)

    await agent.sync_until(lambda: ops_room() is not None)
    room_id = ops_room()
    assert room_id is not None
    assert [t for _, t in agent.texts(room_id)] == ["5 leads waiting", "one more lead"]
    name = await agent.client.room_get_state_event(room_id, "m.room.name")
    assert name.content["name"] == f"relaydesk ops-{team}"


async def test_delivery_statuses_show_as_the_bots_reactions_and_a_failure_as_one_notice(
    synapse: SynapseInfo, sqlite_url: str, bot_desk: BotDeskFactory, bot: BotAccount, agent: Agent
) -> None:
    desk = await bot_desk(sqlite_url, bot_yaml(synapse, bot), bot.password)
    channel = cast(MemoryChannel, desk.plugins["customers"])
    user = f"dora-{uuid.uuid4().hex[:6]}"
    await channel.customer_writes(user, "Is my order on its way?", name="Dora")
    assert await desk.wait_settled(30)
    room_id = await room_of(user)
    await agent.sync_until(lambda: any("Is my order on its way?" in t for _, t in agent.texts(room_id)))
    answers: list[str] = []
    for text in ("Yes, it left today.", "Tracking: NW-1"):
        answers.append(await agent.say(room_id, text))
        await channel.sent.wait_for(functools.partial(_has_text, text), 20)
    assert await desk.wait_settled(30)
    sent = {d.text: f"out{d.outbox_id}" for d in channel.sent.items}

    def reactions(event_id: str) -> list[str]:
        return [
            e["content"]["m.relates_to"]["key"]
            for e in agent.events.get(room_id, [])
            if e.get("type") == "m.reaction"
            and e.get("sender") == bot.user_id
            and e["content"].get("m.relates_to", {}).get("event_id") == event_id
        ]

    statuses: tuple[Literal["delivered", "read"], ...] = ("delivered", "read", "read")
    for status in statuses:  # the repeat shows nothing more
        await channel.reports_status(user, sent["Yes, it left today."], status)
    await channel.reports_status(user, sent["Tracking: NW-1"], "failed", "131026 undeliverable")
    await channel.reports_status(user, sent["Tracking: NW-1"], "delivered")  # failed is final
    assert await desk.wait_settled(30)
    await agent.sync_until(lambda: reactions(answers[0]) == ["✓ delivered", "✓✓ read"])
    failure = 'Tracking: NW-1". customers reported it failed: 131026 undeliverable'
    await agent.sync_until(lambda: any(failure in t for _, t in agent.texts(room_id)))
    assert sum(failure in t for _, t in agent.texts(room_id)) == 1
    assert reactions(answers[1]) == []


def _has_text(text: str, deliveries: list[Any]) -> bool:
    return any(d.text == text for d in deliveries)


async def test_an_ops_image_in_bot_mode_is_uploaded_and_posted_once(
    synapse: SynapseInfo, sqlite_url: str, bot_desk: BotDeskFactory, bot: BotAccount, agent: Agent
) -> None:
    from nio import DownloadResponse

    team = f"digest{uuid.uuid4().hex[:6]}"
    desk = await bot_desk(sqlite_url, bot_yaml(synapse, bot), bot.password)
    services = desk.plugins["customers"].services
    for _ in range(2):
        await services.post_to_ops(team, "Daily digest", key="digest:3", image=("chart.png", PNG_BYTES))
    assert await desk.wait_settled(30)

    def ops_room() -> str | None:
        return next((r for r in agent.timeline if "Daily digest" in [t for _, t in agent.texts(r)]), None)

    await agent.sync_until(lambda: ops_room() is not None and len(agent.messages(ops_room() or "")) >= 2)
    room_id = ops_room()
    assert room_id is not None
    contents = agent.messages(room_id, bot.user_id)
    assert [(c["msgtype"], c["body"]) for c in contents] == [
        ("m.text", "Daily digest"),
        ("m.image", "chart.png"),
    ]
    downloaded = await agent.client.download(contents[1]["url"])
    assert isinstance(downloaded, DownloadResponse) and downloaded.body == PNG_BYTES
