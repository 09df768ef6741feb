"""End to end: a customer (memory channel double; the web and Telegram channels are built in parallel) talks
to the FAQ, and an agent in a REAL Matrix room on the test Synapse sees it, takes over and teaches the FAQ."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import cast

from bot_core.testing import MemoryChannel
from tests.bridge.workspaces.matrix_agent import Agent, room_of
from tests.conftest import DeskFactory
from tests.matrix_server import SynapseInfo


def matrix_faq_yaml(synapse: SynapseInfo, kb: Path) -> str:
    return f"""
server: {{host: 127.0.0.1, port: {synapse.appservice_port}}}
plugins:
  - customers: {{use: "bot_core.testing:MemoryChannel"}}{synapse.matrix_plugin_yaml()}
  - faq:
      knowledge_base: "{kb}"
"""


async def test_faq_answers_hands_over_and_learns_from_the_agent_in_a_real_matrix_room(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent, kb_file: Path
) -> None:
    desk = await make_desk(
        sqlite_url, matrix_faq_yaml(synapse, kb_file), serve_http=True, http_port=synapse.appservice_port
    )
    channel = cast(MemoryChannel, desk.plugins["customers"])
    user = f"faq-{uuid.uuid4().hex[:6]}"

    async def customer_says(text: str) -> str:
        before = len(channel.texts_to(user))
        await channel.customer_writes(user, text, name="Mia")
        await channel.sent.wait_for(lambda _: len(channel.texts_to(user)) > before, 20)
        return channel.texts_to(user)[before]

    # a routine question: answered at once; the agent sees the question and the bot's answer
    reply = await customer_says("I want to return an item, how?")
    assert reply.startswith("You can return any item within 30 days.")
    assert await desk.wait_settled(30)
    room_id = await room_of(user)
    await agent.sync_until(lambda: any("faq answered: You can return" in t for _, t in agent.texts(room_id)))
    assert any(t == "I want to return an item, how?" for _, t in agent.texts(room_id))

    # an unknown question gets choices; the customer picks none: handed over, saying what happens next
    question = "Can I pick up my order at your warehouse in Ghent?"
    first = await customer_says(question)
    assert first.startswith("I'm not sure I understood. Did you mean:")  # choices, not a guess
    assert "passing you to a person" in await customer_says("0")  # 0: none of these, a person please
    await agent.sync_until(lambda: any("handed over" in t for _, t in agent.texts(room_id)))
    await agent.sync_until(lambda: any("Waiting for an agent" in t for _, t in agent.texts(room_id)))

    # the agent answers in Matrix; the customer gets it; the bot stays quiet from now on
    await agent.say(room_id, "Yes, pick-ups in Ghent are possible Monday to Friday, 10:00-16:00.")
    await channel.sent.wait_for(lambda _: channel.texts_to(user)[-1].startswith("Yes, pick-ups in Ghent"), 20)

    # the agent turns the answer into an FAQ entry; the next customer gets it from the bot
    await agent.say(room_id, "!faq learn pickup")
    await agent.sync_until(lambda: any("Learned FAQ entry 'pickup'" in t for _, t in agent.texts(room_id)))
    other = f"faq-{uuid.uuid4().hex[:6]}"
    await channel.customer_writes(other, question)
    await channel.sent.wait_for(lambda _: len(channel.texts_to(other)) == 1, 20)
    assert channel.texts_to(other) == ["Yes, pick-ups in Ghent are possible Monday to Friday, 10:00-16:00."]
