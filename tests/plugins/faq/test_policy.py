"""The conversation policy, the conversation's language and the always-human intents, on their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugins.faq.intents import HandoverIntents, IntentRecogniser, intent_of
from plugins.faq.knowledge import load
from plugins.faq.language import conversation_language, guess
from plugins.faq.locales import LocaleError, load_locales
from plugins.faq.policy import ConversationState, Policy
from tests.plugins.faq.conftest import SAMPLE
from tests.plugins.faq.test_matching import needs_semantic

LOCALES = load_locales()
INTENTS = HandoverIntents.build(LOCALES)


def test_a_reply_is_never_allowed_twice_and_the_state_survives_json() -> None:
    policy, state = Policy(), ConversationState()
    assert policy.may_send(state, "Our team is available Monday to Friday.")
    policy.sent(state, "Our team is available Monday to Friday.")
    assert not policy.may_send(state, "Our team is available Monday to Friday. ")  # same text
    restored = ConversationState.from_json(state.to_json() | {"unknown": 1})
    assert not policy.may_send(restored, "Our team is available Monday to Friday.")
    assert ConversationState.from_json(None) == ConversationState()


def test_two_failures_in_a_row_or_three_in_all_exhaust_whatever_was_answered_between() -> None:
    policy, state = Policy(max_failed_in_a_row=2, max_failed=3), ConversationState()
    policy.fail(state)
    policy.helped(state)  # a confident answer between
    policy.fail(state)
    assert not policy.exhausted(state)
    policy.helped(state)
    policy.fail(state)  # the third in the conversation
    assert policy.exhausted(state)
    state = ConversationState()
    policy.fail(state)
    policy.fail(state)
    assert policy.exhausted(state)


def test_a_picked_choice_helped_only_if_the_customer_thanks() -> None:
    policy = Policy()
    state = ConversationState(picked="track-order")
    policy.follow_up(state, thanks=False, not_helped=False)  # wrote again without thanking
    assert (state.failed_in_a_row, state.failed, state.picked) == (1, 1, None)
    state = ConversationState(picked="track-order", failed_in_a_row=1, failed=1)
    policy.follow_up(state, thanks=True, not_helped=False)
    assert (state.failed_in_a_row, state.failed) == (0, 1)
    state = ConversationState(picked="track-order")
    policy.follow_up(state, thanks=False, not_helped=True)  # one message, one failure
    assert state.failed == 1
    state = ConversationState()
    policy.follow_up(state, thanks=False, not_helped=False)  # a new question after a direct answer
    assert state.failed == 0


def test_the_language_is_set_by_the_first_signal_and_kept_for_numbers_and_short_replies() -> None:
    assert conversation_language(None, "订单怎么还没发货", LOCALES, "en") == "zh"
    for short in ["2", "0", "👍", "ok", "OK thanks", "no"]:
        assert conversation_language("zh", short, LOCALES, "en") == "zh", short
    assert conversation_language(None, "3", LOCALES, "en") is None  # nothing said yet
    assert conversation_language(None, "3", LOCALES, "en", channel="zh-CN") == "zh"  # the channel's locale
    assert conversation_language(None, "3", LOCALES, "en", channel="pt-BR") is None  # no locale file
    # a clear switch: a whole sentence in the other language
    assert conversation_language("zh", "Where is my order?", LOCALES, "en") == "en"
    assert conversation_language("en", "我的订单到哪了", LOCALES, "en") == "zh"
    assert conversation_language("en", "好的", LOCALES, "en") == "en"  # too short to switch
    assert (
        conversation_language("zh", "iPhone 的订单怎么退货", LOCALES, "en") == "zh"
    )  # mixed: the main script


def test_a_language_is_added_with_a_file(tmp_path: Path) -> None:
    german = (Path(__file__).resolve().parents[3] / "plugins/faq/locales/en.yaml").read_text(encoding="utf-8")
    german = german.replace("language: en", "language: de").replace(
        "words: >-\n", "words: >-\n  ich ist wo mein meine der die das und nicht wie was\n"
    )
    (tmp_path / "de.yaml").write_text(german, encoding="utf-8")
    locales = load_locales(str(tmp_path))
    assert set(locales) == {"en", "zh", "de"}
    found = guess("Wo ist meine Bestellung?", locales, "en")
    assert found is not None and found.language == "de"
    found = guess("Where is my order?", locales, "en")
    assert found is not None and found.language == "en"
    (tmp_path / "de.yaml").write_text("language: de\nmessages: {}\n", encoding="utf-8")
    with pytest.raises(LocaleError, match=r"de\.yaml: messages missing: did_you_mean"):
        load_locales(str(tmp_path))


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("agent", "person"),
        ("人工", "person"),
        ("转人工", "person"),
        ("I want a human", "person"),
        ("Can I talk to a person please?", "person"),
        ("我要投诉你们的快递员", "complaint"),
        ("I want to make a complaint", "complaint"),
        ("let me talk to your manager", "manager"),
        ("叫你们经理出来", "manager"),
        ("I'm going to sue you", "legal"),
        ("我要起诉你们", "legal"),
    ],
)
def test_always_human_intents_are_whole_messages(text: str, intent: str) -> None:
    assert INTENTS.by_pattern(text) == intent


@pytest.mark.parametrize(
    "text",
    [
        "What are your customer service hours?",
        "客服几点上班？",
        "你们是人工智能吗",
        "Is the agent fee included?",
        "humanity",
        "reagent",
        "工人",
    ],
)
def test_a_word_inside_a_question_is_no_request_for_a_person(text: str) -> None:
    assert INTENTS.by_pattern(text) is None


def test_intent_examples_get_ids_that_are_no_entries() -> None:
    examples = INTENTS.examples()
    assert {intent_of(e.entry_id) for e in examples} == {"person", "complaint", "manager", "legal"}
    assert intent_of("opening-hours") is None
    custom = HandoverIntents.build(LOCALES, {"refund-dispute": (["chargeback.*"], ["I filed a chargeback"])})
    assert custom.by_pattern("Chargeback!") == "refund-dispute"
    assert "person" not in HandoverIntents.build(LOCALES, disabled=["person"]).specs


@pytest.mark.parametrize("kind", ["lexical", pytest.param("semantic", marks=needs_semantic)])
def test_intents_are_recognised_by_meaning_next_to_the_knowledge_base(kind: str) -> None:
    entries = load(SAMPLE).examples()
    recogniser = IntentRecogniser.fit(kind, entries, INTENTS.examples())
    assert recogniser is not None
    assert recogniser.intent("我对你们的客服很不满意") == "complaint"  # no pattern says so: the examples do
    for question in ["What are your customer service hours?", "How do I return an item?", "客服几点上班？"]:
        assert recogniser.intent(question) is None, question
    if kind == "semantic":
        assert recogniser.intent("I'm really unhappy with how your courier treated me") == "complaint"
    assert IntentRecogniser.fit(kind, entries, []) is None
