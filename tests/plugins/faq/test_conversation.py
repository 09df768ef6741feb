"""The FAQ plugin in a real desk (memory channel and workspace doubles, real SQLite): what customers and agents see."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, cast

import pytest

from bot_core.testing import MemoryChannel, MemoryWorkspace
from plugins.faq.knowledge import KnowledgeBaseError, load
from storage.models import Conversation, ConversationState, PluginState
from tests.bot_core.test_relay_loop import doubles
from tests.conftest import DeskFactory
from tests.plugins.faq.conftest import SAMPLE, FaqDesk, faq_of, faq_yaml
from tests.plugins.faq.test_matching import needs_semantic

SHOP = load(SAMPLE)
ALL_ANSWERS = {text for entry in SHOP.entries.values() for text in entry.answers.values()}


def answer(entry: str, language: str = "en") -> str:
    """The reply text of a sample entry."""
    return SHOP.entries[entry].render(language)


async def ask(channel: MemoryChannel, user: str, text: str) -> str:
    """The customer writes ``text``; returns the bot's next reply to them."""
    before = len(channel.texts_to(user))
    await channel.customer_writes(user, text)
    await channel.sent.wait_for(lambda _: len(channel.texts_to(user)) > before)
    return channel.texts_to(user)[before]


async def state_of(user: str) -> ConversationState:
    """The state of the customer's latest conversation."""
    conv = await Conversation.filter(identity__external_id=user).order_by("-id").first()
    assert conv is not None
    return conv.state


def room_notices(workspace: MemoryWorkspace, user: str) -> list[str]:
    """The notices in the customer's room."""
    return workspace.texts(workspace.room_of(user).room_id, "notice")


async def test_english_questions_are_answered_and_the_room_sees_question_and_answer(
    faq_desk: FaqDesk,
) -> None:
    desk = await faq_desk()
    channel, workspace = doubles(desk)

    assert await ask(channel, "ann", "What are your opening times?") == answer("opening-hours")
    assert await ask(channel, "ann", "Can I pay using PayPal?") == answer("payment-methods")
    reply = await ask(channel, "ann", "I want to return an item")
    assert (
        reply == answer("returns") and "https://shop.example.com/returns" in reply
    )  # links follow the answer
    assert await desk.wait_settled()
    room = workspace.room_of("ann").room_id
    assert workspace.texts(room, "customer_message") == [
        "What are your opening times?",
        "Can I pay using PayPal?",
        "I want to return an item",
    ]
    assert any("faq answered: Our team is available" in t for t in room_notices(workspace, "ann"))
    assert await state_of("ann") is ConversationState.BOT  # nobody had to act


async def test_chinese_questions_are_answered_in_chinese(faq_desk: FaqDesk) -> None:
    desk = await faq_desk()
    channel, _ = doubles(desk)

    assert await ask(channel, "li", "请问怎么退货？") == answer("returns", "zh")
    assert await ask(channel, "li", "支持用支付宝付款吗") == answer("payment-methods", "zh")
    assert await ask(channel, "li", "我想修改收货地址") == answer("change-address", "zh")


async def test_an_unrelated_question_is_not_answered(faq_desk: FaqDesk) -> None:
    desk = await faq_desk()
    channel, workspace = doubles(desk)

    reply = await ask(channel, "bob", "Tell me a joke about penguins")
    assert reply not in ALL_ANSWERS
    assert "passing you to a person" in reply and "reply right here" in reply  # says what happens next
    assert await desk.wait_settled()
    assert await state_of("bob") is ConversationState.QUEUED
    assert any("handed over (not in the knowledge base)" in t for t in room_notices(workspace, "bob"))

    reply = await ask(channel, "cy", "What is the capital of France?")
    assert reply not in ALL_ANSWERS  # at most "did you mean" choices, never a guess


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("人工", "正在为您转接人工客服"),
        ("I want a human", "passing you to a person"),
        ("转人工服务", "转接人工客服"),
    ],
)
async def test_asking_for_a_person_hands_over_at_once(faq_desk: FaqDesk, text: str, expected: str) -> None:
    desk = await faq_desk()
    channel, workspace = doubles(desk)

    reply = await ask(channel, "dan", text)
    assert expected in reply
    assert await desk.wait_settled()
    assert await state_of("dan") is ConversationState.QUEUED
    notices = room_notices(workspace, "dan")
    assert any("handed over (asked for a person)" in t for t in notices)
    assert any("Waiting for an agent" in t for t in notices)

    # the conversation is the agents' now: the bot stays quiet (no greeting, no answer)
    await channel.customer_writes("dan", "When are you open?")
    assert await desk.wait_settled()
    assert channel.texts_to("dan") == [reply]


async def test_the_same_reply_is_never_sent_twice_in_a_row(faq_desk: FaqDesk) -> None:
    desk = await faq_desk()
    channel, _ = doubles(desk)

    first = await ask(channel, "eve", "When are you open?")
    assert first == answer("opening-hours")
    second = await ask(channel, "eve", "when are you open??")
    assert second != first
    assert "didn't help" in second and "passing you to a person" in second
    assert await desk.wait_settled()
    assert await state_of("eve") is ConversationState.QUEUED
    texts = channel.texts_to("eve")
    assert all(a != b for a, b in itertools.pairwise(texts))


async def test_did_you_mean_offers_choices_and_a_number_picks_one(faq_desk: FaqDesk) -> None:
    desk = await faq_desk()
    channel, _ = doubles(desk)

    reply = await ask(channel, "fay", "my order number is 12345")
    assert reply.startswith("I'm not sure I understood. Did you mean:")
    assert "1. Where is my order?" in reply
    assert await ask(channel, "fay", "1") == answer("track-order")


async def test_did_you_mean_choices_are_buttons_where_the_channel_has_them(
    sqlite_url: str, make_desk: DeskFactory, kb_file: Path
) -> None:
    yaml_text = faq_yaml(kb_file).replace(
        'use: "bot_core.testing:MemoryChannel"', 'use: "bot_core.testing:MemoryChannel", config: {choices: 3}'
    )
    assert "choices: 3" in yaml_text
    desk = await make_desk(sqlite_url, yaml_text)
    channel, _ = doubles(desk)

    reply = await ask(channel, "fay", "my order number is 12345")
    offered = channel.sent.items[-1]
    assert reply.startswith("I'm not sure I understood. Did you mean:")  # the list stays in the text
    assert offered.choices[0].title == "Where is my order?" and offered.choices[0].id == "faq:1"
    before = len(channel.texts_to("fay"))
    await channel.customer_writes("fay", offered.choices[0].title, choice=offered.choices[0].id)  # pressed
    await channel.sent.wait_for(lambda _: len(channel.texts_to("fay")) > before)
    assert channel.texts_to("fay")[before] == answer("track-order")
    assert await desk.wait_settled()
    [state] = await PluginState.filter(plugin="faq", key="conversation")
    assert (
        cast(dict[str, Any], state.value)["v"]["picked"] == "track-order"
    )  # taken as the pick, not asked as a new question


async def test_unanswered_turns_hand_over_after_the_configured_number(faq_desk: FaqDesk) -> None:
    desk = await faq_desk("      max_unanswered: 2\n")
    channel, _ = doubles(desk)

    assert "Did you mean" in await ask(channel, "gus", "my order number is 12345")
    reply = await ask(channel, "gus", "I paid but my order is missing")  # second turn without an answer
    assert "passing you to a person" in reply
    assert await desk.wait_settled()
    assert await state_of("gus") is ConversationState.QUEUED
    assert faq_of(desk).stats.handed_over == {"unanswered": 1}, faq_of(desk).stats.handed_over


async def test_the_knowledge_base_reloads_after_an_edit(faq_desk: FaqDesk, kb_file: Path) -> None:
    desk = await faq_desk()
    channel, _ = doubles(desk)
    faq = faq_of(desk)

    text = kb_file.read_text(encoding="utf-8")
    kb_file.write_text(
        text
        + "  - id: gift-wrap\n"
        + '    questions: ["Do you offer gift wrapping?", "Can you wrap it as a present?", "可以礼品包装吗？"]\n'
        + '    answer: "Yes, gift wrapping is free: tick the box at checkout."\n',
        encoding="utf-8",
    )
    await faq.wait_for_load(lambda f: f.loaded is not None and "gift-wrap" in f.loaded.kb.entries)
    assert await ask(channel, "hal", "Do you offer gift wrapping?") == (
        "Yes, gift wrapping is free: tick the box at checkout."
    )


async def test_a_broken_file_is_reported_with_its_line_and_the_last_good_one_stays(
    faq_desk: FaqDesk, kb_file: Path
) -> None:
    desk = await faq_desk()
    channel, workspace = doubles(desk)
    faq = faq_of(desk)

    lines = kb_file.read_text(encoding="utf-8").splitlines()
    broken_line = next(i for i, line in enumerate(lines) if "id: shipping-cost" in line) + 1
    lines[broken_line - 1] = lines[broken_line - 1].replace("id: shipping-cost", "id: shipping cost!")
    kb_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    await faq.wait_for_load(lambda f: f.last_error is not None)

    assert f"plugin 'faq': knowledge base {kb_file}:{broken_line}: entry 'shipping cost!': field 'id'" in (
        faq.last_error or ""
    )
    assert await ask(channel, "ida", "What are your opening times?") == answer(
        "opening-hours"
    )  # still answering
    await workspace.agent_writes(workspace.room_of("ida").room_id, "!faq list")
    await workspace.posts.wait_for(
        lambda _: any("FAQ: 14 entries" in t for t in room_notices(workspace, "ida"))
    )
    listing = next(t for t in room_notices(workspace, "ida") if "FAQ: 14 entries" in t)
    assert "last good version" in listing and f"{kb_file}:{broken_line}" in listing

    kb_file.write_text("entries:\n  - id: x\n    questions: [a question]\n", encoding="utf-8")  # no answer
    await faq.wait_for_load(lambda f: "field 'answer'" in (f.last_error or ""))
    assert f"{kb_file}:2: entry 'x': field 'answer': required" in (faq.last_error or "")
    assert faq.loaded is not None and len(faq.loaded.kb.entries) == 14


async def test_a_broken_file_at_start_stops_the_start_with_a_clear_error(
    sqlite_url: str, make_desk: DeskFactory, tmp_path: Path
) -> None:
    kb = tmp_path / "faq.yaml"
    kb.write_text("entries:\n  - id: a\n    questions: [hi]\n    answer: [not, text]\n", encoding="utf-8")
    with pytest.raises(KnowledgeBaseError) as caught:
        await make_desk(sqlite_url, faq_yaml(kb))
    assert f"{kb}:4: entry 'a': field 'answer'" in str(caught.value)


async def test_a_missing_file_lets_messages_through_until_it_appears(
    faq_desk: FaqDesk, tmp_path: Path, kb_file: Path
) -> None:
    missing = tmp_path / "later.yaml"
    desk = await faq_desk(kb=missing)
    channel, workspace = doubles(desk)
    faq = faq_of(desk)
    assert faq.loaded is None and "cannot read the file" in (faq.last_error or "")

    await channel.customer_writes("val", "When are you open?")
    assert await desk.wait_settled()
    assert channel.texts_to("val") == []  # nothing guessed: the agents see it in the room
    assert workspace.texts(workspace.room_of("val").room_id, "customer_message") == ["When are you open?"]

    missing.write_text(kb_file.read_text(encoding="utf-8"), encoding="utf-8")
    await faq.wait_for_load(lambda f: f.loaded is not None)
    assert await ask(channel, "wes", "When are you open?") == answer("opening-hours")


async def test_agents_add_and_learn_entries_from_the_room(faq_desk: FaqDesk, kb_file: Path) -> None:
    desk = await faq_desk()
    channel, workspace = doubles(desk)

    # an agent adds an entry with two phrasings; the bot answers it right away
    await channel.customer_writes("jo", "hello")
    await channel.sent.wait_for(lambda _: len(channel.texts_to("jo")) == 1)
    room = workspace.room_of("jo").room_id
    await workspace.agent_writes(
        room, "!faq add Do you sell gift cards?; 有礼品卡吗？ | Yes, from 10 to 200 EUR."
    )
    await workspace.posts.wait_for(
        lambda _: any("Added FAQ entry" in t for t in workspace.texts(room, "notice"))
    )
    assert "Do you sell gift cards?" in kb_file.read_text(encoding="utf-8")
    assert "# Sample knowledge base" in kb_file.read_text(encoding="utf-8")  # comments are kept
    assert await ask(channel, "ki", "do you sell gift cards") == "Yes, from 10 to 200 EUR."

    # a question the bot could not answer; the agent answers it, then turns the answer into an entry
    handed = await ask(channel, "lu", "Can I pick up my order at your warehouse in Ghent?")
    assert "passing you to a person" in handed or "Did you mean" in handed
    lu_room = workspace.room_of("lu").room_id
    await workspace.agent_writes(
        lu_room, "Yes, pick-ups in Ghent are possible Monday to Friday, 10:00-16:00."
    )
    await channel.sent.wait_for(lambda _: len(channel.texts_to("lu")) == 2)
    await workspace.agent_writes(lu_room, "!faq learn pickup")
    await workspace.posts.wait_for(
        lambda _: any("Learned FAQ entry 'pickup'" in t for t in workspace.texts(lu_room, "notice"))
    )
    assert await ask(channel, "mo", "Can I pick up my order at your warehouse in Ghent?") == (
        "Yes, pick-ups in Ghent are possible Monday to Friday, 10:00-16:00."
    )

    # learn with an existing id adds the customer's question as a phrasing of that entry
    await ask(channel, "ned", "Can I collect it from a parcel locker?")
    ned_room = workspace.room_of("ned").room_id
    await workspace.agent_writes(ned_room, "!faq learn pickup")
    await workspace.posts.wait_for(
        lambda _: any("is now a phrasing of 'pickup'" in t for t in workspace.texts(ned_room, "notice"))
    )
    faq = faq_of(desk)
    assert faq.loaded is not None
    assert "Can I collect it from a parcel locker?" in faq.loaded.kb.entries["pickup"].questions


async def test_only_the_configured_faq_editors_change_the_knowledge_base(
    faq_desk: FaqDesk, kb_file: Path
) -> None:
    desk = await faq_desk('      faq_editors: ["@editor:example.com"]')
    channel, workspace = doubles(desk)
    await channel.customer_writes("pam", "hello")
    await channel.sent.wait_for(lambda _: len(channel.texts_to("pam")) == 1)
    room = workspace.room_of("pam").room_id

    await workspace.agent_writes(room, "!faq add Do you ship to Mars? | Yes, free.", agent="@alice")
    await workspace.posts.wait_for(
        lambda _: any("may not change the FAQ" in t for t in workspace.texts(room, "notice"))
    )
    assert "Mars" not in kb_file.read_text(encoding="utf-8")
    await workspace.agent_writes(room, "!faq list", agent="@alice")  # reading stays open to agents
    await workspace.posts.wait_for(
        lambda _: any("opening-hours" in t for t in workspace.texts(room, "notice"))
    )

    await workspace.agent_writes(room, "!faq add Do you ship to Mars? | No.", agent="@editor:example.com")
    await workspace.posts.wait_for(
        lambda _: any("Added FAQ entry" in t for t in workspace.texts(room, "notice"))
    )
    assert "Mars" in kb_file.read_text(encoding="utf-8")


async def test_stats_in_the_room_and_on_metrics(faq_desk: FaqDesk) -> None:
    desk = await faq_desk()
    channel, workspace = doubles(desk)

    await ask(channel, "oz", "When are you open?")
    await ask(channel, "oz", "Can I pay using PayPal?")
    await ask(channel, "pat", "Do you sell bicycles?")
    await ask(channel, "quin", "do you sell bikes?")
    await ask(channel, "ray", "人工")
    await workspace.agent_writes(workspace.room_of("oz").room_id, "!faq stats")
    room = workspace.room_of("oz").room_id
    await workspace.posts.wait_for(lambda _: any(t.startswith("FAQ since") for t in workspace.texts(room)))
    report = next(t for t in workspace.texts(room, "notice") if t.startswith("FAQ since"))
    assert "5 questions in 4 conversations" in report
    assert "Answered 2 (40%)" in report
    assert "offered choices 0" in report  # nothing about bicycles in the knowledge base: no choices either
    assert "not in the knowledge base 2" in report and "asked for a person 1" in report
    assert "Top entries: opening-hours 1, payment-methods 1" in report
    assert (
        "Hot unanswered questions" in report
        and "2× “Do you sell bicycles?” (+ “do you sell bikes?” …)" in report
    )

    metrics = desk.metrics.render().decode()
    assert 'relaydesk_faq_answered_total{plugin="faq"} 2.0' in metrics
    assert 'relaydesk_faq_entry_hits_total{entry="opening-hours",plugin="faq"} 1.0' in metrics
    assert 'relaydesk_faq_handovers_total{plugin="faq",reason="person"} 1.0' in metrics
    assert 'relaydesk_faq_answer_ratio{plugin="faq"} 0.4' in metrics


@needs_semantic
async def test_the_semantic_matcher_answers_paraphrases_in_a_real_desk(faq_desk: FaqDesk) -> None:
    desk = await faq_desk("      matcher: semantic\n")
    channel, workspace = doubles(desk)

    assert await ask(channel, "xia", "how long does shipping take") == answer("shipping-time")
    assert await ask(channel, "xia", "忘了密码") == answer("reset-password", "zh")
    assert await ask(channel, "yan", "What is the capital of France?") not in ALL_ANSWERS
    await workspace.agent_writes(workspace.room_of("xia").room_id, "!faq ask Can I pay using PayPal?")
    room = workspace.room_of("xia").room_id
    await workspace.posts.wait_for(lambda _: any(t.startswith("Confidence") for t in workspace.texts(room)))
    verdict = next(t for t in workspace.texts(room, "notice") if t.startswith("Confidence"))
    assert ": answer" in verdict and "1. payment-methods" in verdict
    assert "choice confidence" in verdict  # the "did you mean" floor applies to the choices' own confidence


async def test_a_missing_knowledge_base_starts_as_a_copy_of_the_shipped_sample(
    faq_desk: FaqDesk, tmp_path: Path
) -> None:
    kb = tmp_path / "var" / "faq" / "knowledge.yaml"
    desk = await faq_desk(extra="      seed_from: example\n", kb=kb)
    channel, _ = doubles(desk)
    assert kb.read_text(encoding="utf-8") == SAMPLE.read_text(encoding="utf-8")  # agents edit the copy
    assert await ask(channel, "yan", "What are your opening times?") == answer("opening-hours")


async def test_a_seed_file_that_does_not_exist_stops_the_start_naming_the_field(
    sqlite_url: str, make_desk: DeskFactory, tmp_path: Path
) -> None:
    kb, seed = tmp_path / "knowledge.yaml", tmp_path / "nowhere.yaml"
    with pytest.raises(KnowledgeBaseError, match=f"field seed_from: {seed} not found"):
        await make_desk(sqlite_url, faq_yaml(kb, f'      seed_from: "{seed}"\n'))
    assert not kb.exists()
