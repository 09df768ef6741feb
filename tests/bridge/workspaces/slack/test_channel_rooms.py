"""The Slack workspace in channel rooms: a private channel per customer, end to end against the emulator."""

from __future__ import annotations

import asyncio
import json
import time
from typing import cast

import pytest
from pydantic import ValidationError

from bridge.workspaces.slack import SlackWorkspace
from storage.models import Conversation, InboundReceipt, Message
from tests.bridge.workspaces.slack.conftest import ANN, BOB, EVE, SlackDesk, SlackDeskFactory, until
from tests.emulators.slack import Channel, SlackEmulator


async def first_contact(
    s: SlackDesk, text: str = "Hello", user: str = "anna", name: str = "Anna Müller"
) -> Channel:
    """The customer writes; returns their channel once their message shows there."""
    await s.customers.customer_writes(user, text, name=name)
    channel = cast(Channel, await until(lambda: _channel_of(s.slack, name), what="the customer's channel"))
    await until(lambda: _customer_posts(s.slack, channel), what="the customer's message in Slack")
    return channel


def _channel_of(slack: SlackEmulator, name: str) -> Channel | None:
    slug = name.split()[0].lower()
    return next((c for c in slack.channels.values() if c.name.startswith(f"support-{slug}")), None)


def _customer_posts(slack: SlackEmulator, channel: Channel) -> list[dict[str, object]]:
    return [m for m in slack.messages(channel.id, top=True) if m.get("username")]


def test_config_wants_agents_and_a_team_channel_for_threads() -> None:
    base = {"bot_token": "x", "signing_secret": "y"}
    with pytest.raises(ValidationError, match="name the agents"):
        SlackWorkspace.Config.model_validate(base)
    with pytest.raises(ValidationError, match="team_channel"):
        SlackWorkspace.Config.model_validate({**base, "agents": ["U1"], "rooms": "thread"})
    with pytest.raises(ValidationError, match="not Slack user ids"):
        SlackWorkspace.Config.model_validate({**base, "agents": ["@ann"]})


async def test_a_customer_gets_a_private_channel_and_the_agents_answer(slack_desk: SlackDeskFactory) -> None:
    s = await slack_desk()
    channel = await first_contact(s)
    assert channel.is_private and channel.name == f"support-anna-muller-{channel.name.rsplit('-', 1)[1]}"
    assert {ANN, BOB} <= channel.members and EVE not in channel.members
    post = _customer_posts(s.slack, channel)[0]
    assert post["username"] == "Anna Müller (Customers)" and post["text"] == "Hello"
    card = await until(lambda: [m for m in s.slack.messages(channel.id) if m.get("blocks")], what="the card")
    assert "Claim" in json.dumps(card[0]["blocks"])

    await s.slack.user_posts(ANN, channel.id, "Hi Anna, how can I help?")
    await s.customers.sent.wait_for(lambda sent: len(sent) == 1)
    delivery = s.customers.sent.items[0]
    assert delivery.text == "Hi Anna, how can I help?" and delivery.agent_name == "ann"

    # a thread reply is internal; the bot's own posts (echoed back by Slack) and Eve's are never relayed
    top = s.slack.messages(channel.id, top=True)[-1]["ts"]
    await s.slack.user_posts(BOB, channel.id, "internal: check the order", thread_ts=top)
    s.slack.channels[channel.id].members.add(EVE)
    await s.slack.user_posts(EVE, channel.id, "I am not an agent")
    await s.slack.user_posts(BOB, channel.id, "Bob here too")
    await s.customers.sent.wait_for(lambda sent: len(sent) == 2)
    await s.slack.idle()
    assert s.customers.texts_to("anna") == ["Hi Anna, how can I help?", "Bob here too"]
    assert any(e["user"] == EVE and "not sent" in e["text"] for e in s.slack.ephemerals)


async def test_a_customers_mentions_and_links_show_as_text(slack_desk: SlackDeskFactory) -> None:
    s = await slack_desk()
    text = "Hey <!channel> @here <@U0ANN> look <https://evil.example|your invoice> & <!subteam^S0AGENTS>"
    channel = await first_contact(s, text)
    post = _customer_posts(s.slack, channel)[0]
    assert post["mentions"] == []
    assert post["seen"] == text  # exactly what the customer typed, nothing turned into a link or a ping


async def test_bad_signature_or_old_timestamp_is_refused_and_nothing_stored(
    slack_desk: SlackDeskFactory,
) -> None:
    s = await slack_desk()
    channel = await first_contact(s)
    before = await InboundReceipt.all().count()
    wrong = await s.slack.user_posts(ANN, channel.id, "forged")  # this one is fine, as a control
    await s.customers.sent.wait_for(lambda sent: len(sent) == 1)
    assert wrong[1][0].status == 200
    event = {"type": "message", "channel": channel.id, "user": ANN, "text": "forged", "ts": "1.000001"}
    bad_secret = await s.slack.deliver_event(event, secret="not-the-secret")
    too_old = await s.slack.deliver_event(event, timestamp=time.time() - 6 * 60)
    assert {a.status for a in bad_secret + too_old} == {401}
    await asyncio.sleep(0.3)  # nothing is coming; give a wrongly accepted event the time to show
    assert await InboundReceipt.all().count() == before + 1
    assert s.customers.texts_to("anna") == ["forged"]


async def test_a_slack_retry_of_a_stored_event_is_relayed_once(slack_desk: SlackDeskFactory) -> None:
    s = await slack_desk()
    channel = await first_contact(s)
    s.slack.ack_timeout = (
        0.001  # every answer is "too slow": Slack sends the event again, with X-Slack-Retry-Num
    )
    _ts, attempts = await s.slack.user_posts(ANN, channel.id, "only once please")
    assert len(attempts) >= 2
    s.slack.ack_timeout = 3.0
    await s.customers.sent.wait_for(lambda sent: len(sent) == 1)
    await s.slack.user_posts(ANN, channel.id, "next")
    await s.customers.sent.wait_for(lambda sent: len(sent) == 2)
    assert s.customers.texts_to("anna") == ["only once please", "next"]


async def test_commands_act_and_answer_ephemerally_and_close_archives(slack_desk: SlackDeskFactory) -> None:
    s = await slack_desk()
    channel = await first_contact(s)
    refused = await s.slack.slash_command(EVE, channel.id, "/relay", "claim")
    assert "Only the desk's agents" in refused[0].body
    claimed = await s.slack.slash_command(BOB, channel.id, "/relay", "claim")
    assert claimed[0].status == 200 and "claim" in claimed[0].body
    conversation = await Conversation.all().first()
    assert conversation is not None
    await until(lambda: _state_is(conversation, "assigned"), what="assigned")
    note = await s.slack.slash_command(ANN, channel.id, "/relay", "note the customer is angry")
    assert note[0].status == 200
    await until(
        lambda: any("📝 Note" in m["text"] for m in s.slack.messages(channel.id)), what="the note shown"
    )
    assert await Message.filter(direction="note").count() == 1
    await s.slack.slash_command(ANN, channel.id, "/relay", "close")
    await until(lambda: s.slack.channels[channel.id].is_archived, what="archived")
    assert s.customers.sent.items == []  # neither the note nor anything else reached the customer

    # the customer returns: the channel is unarchived and shows the new message
    await s.customers.customer_writes("anna", "me again", name="Anna Müller")
    await until(
        lambda: any(m["text"] == "me again" for m in s.slack.messages(channel.id)), what="posted again"
    )
    assert not s.slack.channels[channel.id].is_archived


async def _state_is(conversation: Conversation, state: str) -> bool:
    await conversation.refresh_from_db()
    return str(conversation.state) == state


async def test_card_buttons_claim_and_transfer(slack_desk: SlackDeskFactory) -> None:
    s = await slack_desk()
    channel = await first_contact(s)
    card = await until(lambda: [m for m in s.slack.messages(channel.id) if m.get("blocks")], what="the card")
    ts = card[0]["ts"]
    s.slack.channels[channel.id].members.add(EVE)  # Eve joined the channel somehow: she still cannot act
    await s.slack.click(EVE, channel.id, ts, "relay_claim", value=channel.id)
    await s.slack.click(ANN, channel.id, ts, "relay_claim", value=channel.id)
    await until(
        lambda: "Owner: nobody" not in json.dumps(s.slack.messages(channel.id)[0]["blocks"]), what="claimed"
    )
    await s.slack.click(ANN, channel.id, ts, "relay_transfer", selected=f"billing {channel.id}")
    await until(
        lambda: "Team: billing" in json.dumps(s.slack.messages(channel.id)[0]["blocks"]), what="moved"
    )
    assert any(e["user"] == EVE and "Only the desk's agents" in e["text"] for e in s.slack.ephemerals)
    assert any(e["user"] == ANN and "claim" in e["text"] for e in s.slack.ephemerals)


async def test_an_agent_id_slack_refuses_keeps_no_one_else_out(
    slack_desk: SlackDeskFactory, slack: SlackEmulator
) -> None:
    del slack.users[BOB]  # Bob left the company: the user group still lists him
    s = await slack_desk()
    channel = await first_contact(s)
    assert ANN in channel.members and BOB not in channel.members
