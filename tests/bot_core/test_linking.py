"""Customers across channels: identities linked by a verified phone or email or by an agent's !link are
one customer (one open conversation, messages handled in order), replies go to the channel the customer
last wrote from or the one an agent picked with !via, and the card shows every identity."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from bot_core import Plugin, on_customer_message
from bot_core.contacts import publish_key, valid_email, valid_phone
from bot_core.context import ActionKeys, Context
from bot_core.desk import Desk
from bot_core.events import CustomerMessage
from bot_core.linking import LinkTarget, parse_link_target
from bot_core.testing import MemoryChannel, MemoryWorkspace
from bridge.channels.telegram.inbound import start_attributes
from storage.bus.base import partition_of
from storage.models import (
    Consent,
    Conversation,
    ConversationState,
    Customer,
    CustomerContact,
    Identity,
    Message,
)
from tests.conftest import DeskFactory

CHANNELS_YAML = """
plugins:
  - whatsapp: {use: "bot_core.testing:MemoryChannel"}
  - sms: {use: "bot_core.testing:MemoryChannel"}
  - telegram: {use: "bot_core.testing:MemoryChannel"}
  - web: {use: "bot_core.testing:MemoryChannel"}
  - desk: {use: "bot_core.testing:MemoryWorkspace"}
"""
GATED_YAML = CHANNELS_YAML + '  - gate: {use: "tests.bot_core.test_linking:Gate"}\n'
PHONE = "+4915112345678"


class Gate(Plugin):
    """Records when each customer message's handling starts and ends; "first" waits to be released."""

    name = "gate"
    seen: list[str] = []
    release: asyncio.Event | None = None

    @on_customer_message()
    async def on_message(self, ctx: Context, msg: CustomerMessage) -> None:
        cls = type(self)
        cls.seen.append(f"start {msg.text}")
        if msg.text == "first" and cls.release is not None:
            await asyncio.wait_for(cls.release.wait(), 10)
        cls.seen.append(f"end {msg.text}")


def channels(
    desk: Desk,
) -> tuple[MemoryChannel, MemoryChannel, MemoryChannel, MemoryChannel, MemoryWorkspace]:
    p = desk.plugins
    return (
        cast(MemoryChannel, p["whatsapp"]),
        cast(MemoryChannel, p["sms"]),
        cast(MemoryChannel, p["telegram"]),
        cast(MemoryChannel, p["web"]),
        cast(MemoryWorkspace, p["desk"]),
    )


async def wait_until(condition: object, timeout: float = 10.0) -> bool:
    """Poll ``condition()`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.01)
    return False


async def customer_of(channel: str, user: str) -> int:
    return (await Identity.get(channel=channel, external_id=user)).customer_id


# -- checks of values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+4915112345678", "+4915112345678"),
        ("+49 151 1234-5678", "+4915112345678"),
        ("0049 (151) 12345678", "+4915112345678"),
        ("015112345678", None),  # no country code
        ("+0151123", None),
        ("+1234567890123456", None),  # 16 digits
        ("+49151abc", None),
        ("", None),
    ],
)
def test_phone_numbers_are_checked_and_normalised_to_e164(raw: str, e164: str | None) -> None:
    assert valid_phone(raw) == e164


@pytest.mark.parametrize(
    ("raw", "email"),
    [
        ("Anna@Example.COM", "anna@example.com"),
        (" a.b+shop@mail.example.org ", "a.b+shop@mail.example.org"),
        ("jörg@bücher.de", None),  # a non-ASCII local part
        ("jorg@bücher.de", "jorg@xn--bcher-kva.de"),
        ("no-at.example.com", None),
        ("a@localhost", None),
        ("a@@example.com", None),
        ("a..b@example.com", None),
        ("a@-x.com", None),
        ("a@example.123", None),
    ],
)
def test_email_addresses_are_checked_and_lower_cased(raw: str, email: str | None) -> None:
    assert valid_email(raw) == email


def test_link_targets() -> None:
    assert parse_link_target("+49 151 12345678") == LinkTarget("phone", "+4915112345678")
    assert parse_link_target("Anna@Example.com") == LinkTarget("email", "anna@example.com")
    assert parse_link_target("telegram:12345") == LinkTarget("identity", "12345", "telegram")
    assert parse_link_target("web:abc:def") == LinkTarget("identity", "abc:def", "web")
    assert isinstance(parse_link_target("+12"), str)
    assert isinstance(parse_link_target("anna"), str)


def test_a_telegram_deep_link_cannot_claim_a_verified_phone_or_email() -> None:
    # anyone can make a deep link: its phone is kept, but not under the name channels use for verified ones
    from aiogram.utils.payload import encode_payload

    attributes = start_attributes(f"/start {encode_payload('phone=%2B4915112345678&order=7')}", "start")
    assert attributes == {"unverified_phone": "+4915112345678", "order": "7"}


# -- on a real desk ------------------------------------------------------------------------------------


async def test_two_identities_with_the_same_phone_are_one_customer_whose_messages_are_handled_in_order(
    database_url: str, make_desk: DeskFactory
) -> None:
    # without keys per customer these two identities' messages would be handled by different partitions
    assert partition_of(f"whatsapp:{PHONE}", 16) != partition_of(f"sms:{PHONE}", 16)
    Gate.seen, Gate.release = [], asyncio.Event()
    desk = await make_desk(database_url, GATED_YAML)
    whatsapp, sms, _telegram, _web, workspace = channels(desk)

    await whatsapp.customer_writes(PHONE, "first", name="Anna", attributes={"phone": PHONE})
    assert await wait_until(lambda: "start first" in Gate.seen)
    await sms.customer_writes(PHONE, "second", attributes={"phone": "+49 151 12345678"})
    # "second" waits behind "first", on another channel: not handled while "first" still is
    assert not await wait_until(lambda: "start second" in Gate.seen, 0.5)
    Gate.release.set()
    assert await desk.wait_settled(10)
    assert Gate.seen == ["start first", "end first", "start second", "end second"]

    customer = await customer_of("whatsapp", PHONE)
    assert await customer_of("sms", PHONE) == customer
    assert await Customer.all().count() == 1
    conversations = await Conversation.filter(customer_id=customer)
    assert len(conversations) == 1  # one open conversation, whichever channel they write from
    room = workspace.room_of(PHONE)
    assert workspace.texts(room.room_id, "customer_message") == ["first", "second"]
    assert [(c.kind, c.value) for c in await CustomerContact.all()] == [("phone", PHONE)]
    # what its next message is published under: the customer's key, on either channel
    assert (
        await publish_key(CustomerMessage(channel="sms", external_user_id=PHONE, external_message_id="x"))
        == (await Customer.get(id=customer)).bus_key
    )


async def test_the_same_verified_email_links_and_a_bad_one_is_ignored(
    database_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(database_url, CHANNELS_YAML)
    whatsapp, _sms, telegram, web, workspace = channels(desk)
    await web.customer_writes("visitor-1", "hello from the site", attributes={"email": "Anna@Example.com"})
    assert await desk.wait_settled(10)
    await telegram.customer_writes("777", "and from telegram", attributes={"email": "anna@example.com"})
    assert await desk.wait_settled(10)
    assert await customer_of("web", "visitor-1") == await customer_of("telegram", "777")
    card = workspace.room_of("visitor-1").card
    assert card is not None and card.attributes["verified email"] == "anna@example.com"
    assert "email" not in card.attributes  # a contact, not an attribute

    await whatsapp.customer_writes("+4930123456", "not valid", attributes={"email": "anna@@example.com"})
    assert await desk.wait_settled(10)
    assert await customer_of("whatsapp", "+4930123456") != await customer_of("web", "visitor-1")
    assert await CustomerContact.all().count() == 1


async def test_an_agents_link_merges_the_customers_and_moves_their_history(
    database_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(database_url, CHANNELS_YAML)
    whatsapp, _sms, telegram, _web, workspace = channels(desk)
    await telegram.customer_writes("12345", "my order is late", name="Anna T")
    assert await desk.wait_settled(10)
    tg_room = workspace.room_of("12345").room_id
    await workspace.agent_writes(tg_room, "!tag vip", agent="@erin")
    await workspace.agent_writes(tg_room, "!consent marketing on", agent="@erin")
    await whatsapp.customer_writes(
        PHONE, "it is me again, from WhatsApp", name="Anna", attributes={"phone": PHONE}
    )
    assert await desk.wait_settled(10)
    wa_room = workspace.room_of(PHONE).room_id
    older = await customer_of("telegram", "12345")
    younger = await customer_of("whatsapp", PHONE)
    assert older < younger
    tg_conversation = await Conversation.get(customer_id=older)
    wa_conversation = await Conversation.get(customer_id=younger)

    await workspace.agent_writes(wa_room, "!link telegram:12345", agent="@erin")
    assert await desk.wait_settled(10)

    assert await customer_of("whatsapp", PHONE) == older == await customer_of("telegram", "12345")
    assert (await Customer.get(id=younger)).merged_into_id == older
    # both conversations are the customer's now; the older goes on, the other is closed
    assert {c.id for c in await Conversation.filter(customer_id=older)} == {
        tg_conversation.id,
        wa_conversation.id,
    }
    assert (await Conversation.get(id=tg_conversation.id)).state is not ConversationState.CLOSED
    assert (await Conversation.get(id=wa_conversation.id)).state is ConversationState.CLOSED
    assert any("same person as customer" in t for t in workspace.texts(wa_room, "notice"))
    linked = [t for t in workspace.texts(tg_room, "notice") if t.startswith("🔗 Linked")]
    assert len(linked) == 1 and "it is me again, from WhatsApp" in linked[0], linked
    assert (await Customer.get(id=older)).tags == ["vip"]
    assert (await Consent.get(customer_id=older, topic="marketing")).granted
    card = workspace.rooms[tg_room].card
    assert card is not None
    assert {(i.channel, i.external_user_id) for i in card.identities} == {
        ("telegram", "12345"),
        ("whatsapp", PHONE),
    }
    assert card.attributes["verified phone"] == PHONE

    # the customer writes on WhatsApp: the open (older) conversation continues, and the answer goes back there
    await whatsapp.customer_writes(PHONE, "any news?", attributes={"phone": PHONE})
    assert await desk.wait_settled(10)
    assert "any news?" in workspace.texts(tg_room, "customer_message")
    await workspace.agent_writes(tg_room, "It left the warehouse today.", agent="@erin")
    assert await desk.wait_settled(10)
    assert whatsapp.texts_to(PHONE) == ["It left the warehouse today."]
    assert telegram.texts_to("12345") == []
    inbound = await Message.filter(conversation_id=tg_conversation.id, direction="inbound").order_by("id")
    assert [m.channel for m in inbound] == ["telegram", "whatsapp"]

    await workspace.agent_writes(tg_room, "!link telegram:12345", agent="@erin")  # nothing left to link
    await workspace.agent_writes(tg_room, "!link +4999999999", agent="@erin")
    assert await desk.wait_settled(10)
    notices = workspace.texts(tg_room, "notice")
    # a plugin holding the merged customer's id reaches the survivor
    outreach = Context(desk.conversations, "outreach", ActionKeys("outreach:1"))
    assert (await outreach.for_customer(younger)).customer.id == older
    assert any("is this customer's already" in t for t in notices)
    assert any("no customer is known with +4999999999" in t for t in notices)


async def test_replies_go_where_the_customer_last_wrote_or_where_via_says(
    database_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(database_url, CHANNELS_YAML)
    whatsapp, sms, _telegram, _web, workspace = channels(desk)
    await whatsapp.customer_writes(PHONE, "hi on whatsapp", name="Anna", attributes={"phone": PHONE})
    assert await desk.wait_settled(10)
    room = workspace.room_of(PHONE).room_id
    await workspace.agent_writes(room, "answer 1")
    assert await desk.wait_settled(10)
    assert whatsapp.texts_to(PHONE) == ["answer 1"]

    await sms.customer_writes(PHONE, "now by sms", attributes={"phone": PHONE})
    assert await desk.wait_settled(10)
    await workspace.agent_writes(room, "answer 2")  # the channel they last wrote from is the default
    assert await desk.wait_settled(10)
    assert sms.texts_to(PHONE) == ["answer 2"] and whatsapp.texts_to(PHONE) == ["answer 1"]
    card = workspace.rooms[room].card
    assert card is not None and [(i.channel, i.replies, i.reachable) for i in card.identities] == [
        ("whatsapp", False, True),
        ("sms", True, True),
    ]

    await workspace.agent_writes(room, "!via")
    assert await desk.wait_settled(10)
    shown = workspace.texts(room, "notice")[-1]
    assert "Replies go to sms" in shown and "!via whatsapp" in shown and "!via auto" in shown, shown

    await workspace.agent_writes(room, "!via whatsapp")
    assert await desk.wait_settled(10)
    await sms.customer_writes(PHONE, "sms again", attributes={"phone": PHONE})
    assert await desk.wait_settled(10)
    await workspace.agent_writes(room, "answer 3")  # sticky: the agent's pick, though they wrote by sms
    assert await desk.wait_settled(10)
    assert whatsapp.texts_to(PHONE) == ["answer 1", "answer 3"] and sms.texts_to(PHONE) == ["answer 2"]
    card = workspace.rooms[room].card
    assert card is not None and [i.replies for i in card.identities] == [True, False]

    await workspace.agent_writes(room, "!via telegram")
    assert await desk.wait_settled(10)
    assert "no identity there" in workspace.texts(room, "notice")[-1]

    await workspace.agent_writes(room, "!via auto")
    assert await desk.wait_settled(10)
    await workspace.agent_writes(room, "answer 4")
    assert await desk.wait_settled(10)
    assert sms.texts_to(PHONE) == ["answer 2", "answer 4"]


async def test_a_known_identity_bringing_another_customers_email_merges_them_into_the_older(
    database_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(database_url, CHANNELS_YAML)
    _whatsapp, _sms, telegram, web, workspace = channels(desk)
    await telegram.customer_writes("555", "hi", name="Bo", attributes={"email": "bo@example.com"})
    assert await desk.wait_settled(10)  # (the older customer, as its id says)
    await web.customer_writes("visitor-9", "anonymous question")  # not signed in yet: another customer
    assert await desk.wait_settled(10)
    tg_room, web_room = workspace.room_of("555").room_id, workspace.room_of("visitor-9").room_id
    assert await customer_of("web", "visitor-9") != await customer_of("telegram", "555")

    await web.customer_writes("visitor-9", "signed in now", attributes={"email": "BO@example.com"})
    assert await desk.wait_settled(10)
    assert await customer_of("web", "visitor-9") == await customer_of("telegram", "555")
    assert "signed in now" in workspace.texts(tg_room, "customer_message")  # the older conversation goes on
    assert any("same person as customer" in t for t in workspace.texts(web_room, "notice"))
    assert any("Conversation closed" in t for t in workspace.texts(web_room, "notice"))
    linked = [t for t in workspace.texts(tg_room, "notice") if t.startswith("🔗 Linked")]
    assert len(linked) == 1 and "anonymous question" in linked[0] and "the same verified email" in linked[0]
    open_ones = await Conversation.filter(customer_id=await customer_of("telegram", "555")).exclude(
        state=ConversationState.CLOSED
    )
    assert len(open_ones) == 1


async def test_link_from_the_room_of_a_closed_conversation_says_what_it_did(
    database_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(database_url, CHANNELS_YAML)
    _whatsapp, sms, telegram, _web, workspace = channels(desk)
    await telegram.customer_writes("42", "old case")
    assert await desk.wait_settled(10)
    room = workspace.room_of("42").room_id
    await workspace.agent_writes(room, "!close")
    await sms.customer_writes("+4930111222", "hello", attributes={"phone": "+49 30 111 222"})
    assert await desk.wait_settled(10)

    await workspace.agent_writes(room, "!link +4930111222")
    assert await desk.wait_settled(10)
    assert await customer_of("sms", "+4930111222") == await customer_of("telegram", "42")
    assert any(t.startswith("🔗 Linked: sms (+4930111222)") for t in workspace.texts(room, "notice")), (
        workspace.texts(room)
    )
    card = workspace.rooms[room].card
    assert card is not None and {i.channel for i in card.identities} == {"telegram", "sms"}
