"""The answer threshold's calibration: a margin for the size of the calibration set, and one threshold per language."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bot_core.testing import MemoryChannel
from plugins.faq.calibrate import Observation, choose_threshold, wilson_upper
from plugins.faq.loader import build
from tests.bot_core.test_relay_loop import doubles
from tests.plugins.faq.conftest import FaqDesk, faq_of


def held_out(language: str, routine: int, wrong_at: list[float], unrelated: int = 0) -> list[Observation]:
    """``routine`` routine questions answered correctly at confidences spread over (1, 2], questions
    answered wrongly at the ``wrong_at`` confidences, and ``unrelated`` unrelated ones at low confidence."""
    out = [Observation(1.0 + (i + 1) / routine, True, True, False, language=language) for i in range(routine)]
    out += [Observation(c, False, False, False, language=language) for c in wrong_at]
    out += [
        Observation(0.2 + i / (10 * unrelated), False, False, True, language=language)
        for i in range(unrelated)
    ]
    return out


def test_wilson_bound_is_the_observed_share_without_a_margin_and_shrinks_with_the_sample() -> None:
    assert wilson_upper(3, 100, 0.0) == pytest.approx(0.03)
    assert wilson_upper(0, 100, 1.2816) == pytest.approx(1.2816**2 / (100 + 1.2816**2))
    bounds = [wilson_upper(n // 50, n, 1.2816) for n in (50, 500, 5000, 50_000)]  # 2 % observed each time
    assert bounds == sorted(bounds, reverse=True) and bounds[-1] == pytest.approx(0.02, abs=0.001)
    assert wilson_upper(0, 0, 1.2816) == 1.0


def test_a_small_calibration_set_gets_a_stricter_threshold_than_a_large_one_with_the_same_rates() -> None:
    # the same picture, 1 % of the routine questions answered wrongly at confidence 1.5 and above; the
    # large set has it twenty times over
    small = held_out("en", 99, wrong_at=[1.95])
    large = [o for _ in range(20) for o in small]
    plain_small = choose_threshold(small, unrelated_share=0.0, confidence=0.5)
    plain_large = choose_threshold(large, unrelated_share=0.0, confidence=0.5)
    assert plain_small.threshold == pytest.approx(plain_large.threshold)  # the observed share alone
    assert plain_small.expected_wrong == pytest.approx(0.01)
    bounded_small = choose_threshold(small, unrelated_share=0.0)
    bounded_large = choose_threshold(large, unrelated_share=0.0)
    assert bounded_small.threshold > bounded_large.threshold >= plain_large.threshold
    assert bounded_small.expected_correct < bounded_large.expected_correct
    assert bounded_large.wrong_bound is not None and bounded_large.wrong_bound <= 0.02
    assert bounded_small.threshold > 1.95  # only what is above the wrong answer seen


def test_too_few_held_out_questions_to_show_the_target_answer_only_above_every_wrong_answer_seen() -> None:
    tiny = held_out("en", 60, wrong_at=[1.5])  # 1.6 % observed, but 61 questions cannot show 2 %
    assert choose_threshold(tiny, unrelated_share=0.0, confidence=0.5).threshold < 1.5
    strict = choose_threshold(tiny, unrelated_share=0.0)
    assert strict.threshold > 1.5 and "too few" in strict.source


def test_a_language_whose_held_out_questions_are_noisier_gets_a_stricter_threshold_of_its_own() -> None:
    clean = held_out("en", 600, wrong_at=[1.1, 1.15], unrelated=200)
    noisy = held_out("zh", 600, wrong_at=[1.5 + i / 100 for i in range(30)], unrelated=200)
    calibration = choose_threshold([*clean, *noisy])
    en, zh = calibration.for_language("en"), calibration.for_language("zh")
    assert set(calibration.languages) == {"en", "zh"}
    assert zh.threshold > 1.6 > en.threshold
    # English is not held to Chinese's noise: it gets what it would get alone
    assert en.threshold == pytest.approx(choose_threshold(clean).threshold)
    # a language the knowledge base has no questions in gets the strictest threshold
    assert calibration.for_language("ko") is calibration and calibration.threshold == zh.threshold
    assert "en " in calibration.describe() and "zh " in calibration.describe()


def test_a_language_with_too_few_held_out_questions_is_judged_by_the_strictest_threshold() -> None:
    english = held_out("en", 600, wrong_at=[1.3], unrelated=200)
    few = held_out("zh", 5, wrong_at=[])
    calibration = choose_threshold([*english, *few])
    assert set(calibration.languages) == {"en"}
    assert calibration.for_language("zh").threshold == calibration.for_language("en").threshold


def test_a_configured_threshold_applies_in_every_language() -> None:
    calibration = choose_threshold(
        [*held_out("en", 600, [1.1], 200), *held_out("zh", 600, [1.6], 200)]
    ).overridden(threshold=1.25)
    assert calibration.for_language("en").threshold == calibration.for_language("zh").threshold == 1.25
    assert calibration.source == "config"
    assert math.isfinite(calibration.for_language("zh").suggest_floor)


# English entries told apart by distinct words; Chinese entries that share most of their characters, so that
# the lexical matcher confuses them on held-out phrasings: the Chinese threshold must come out stricter
BILINGUAL = """\
language: en
entries:
"""
_TOPICS = [
    (
        "opening",
        [
            "when do you open",
            "what are your opening hours",
            "opening times please",
            "are you open on sunday",
            "what time do you open in the morning",
            "hours of business",
        ],
    ),
    (
        "refund",
        [
            "how do I get a refund",
            "I want my money back",
            "refund my purchase",
            "can I be reimbursed",
            "money back guarantee",
            "request a refund for my order",
        ],
    ),
    (
        "tracking",
        [
            "where is my parcel",
            "track my package",
            "has my order shipped",
            "tracking number please",
            "my delivery has not arrived",
            "follow my shipment",
        ],
    ),
    (
        "payment",
        [
            "can I pay with paypal",
            "which payment methods do you accept",
            "do you take credit cards",
            "pay by bank transfer",
            "is apple pay accepted",
            "payment options",
        ],
    ),
    (
        "password",
        [
            "I forgot my password",
            "reset my password",
            "cannot log in to my account",
            "change my login",
            "password reset link",
            "locked out of my account",
        ],
    ),
    (
        "invoice",
        [
            "send me an invoice",
            "where do I find my receipt",
            "download my bill",
            "VAT invoice needed",
            "copy of my invoice",
            "billing document",
        ],
    ),
]
_ZH = ["订单", "退款", "发货", "付款", "账户", "发票"]
_ZH_PHRASINGS = [
    "我的{}怎么办",
    "{}有问题",
    "请帮我查一下{}",
    "{}的问题怎么处理",
    "关于{}我想问一下",
    "{}可以吗",
]


def bilingual_kb(path: Path) -> Path:
    """Six entries with English and Chinese phrasings (the Chinese ones nearly alike across entries)."""
    lines = [BILINGUAL]
    for (entry, english), word in zip(_TOPICS, _ZH, strict=True):
        questions = english + [p.format(word) for p in _ZH_PHRASINGS]
        lines.append(
            f"  - id: {entry}\n    questions: {questions!r}\n    answer: {{en: {entry} answer, zh: {word}答复}}\n"
        )
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_a_two_language_knowledge_base_gets_a_threshold_per_language(tmp_path: Path) -> None:
    loaded = build(str(bilingual_kb(tmp_path / "kb.yaml")))
    c = loaded.calibration
    assert set(c.languages) == {"en", "zh"}
    assert c.for_language("zh").threshold > c.for_language("en").threshold
    assert c.threshold == c.for_language("zh").threshold  # the strictest applies to other languages


async def test_a_question_in_each_language_is_judged_by_its_own_threshold(
    faq_desk: FaqDesk, tmp_path: Path
) -> None:
    kb = bilingual_kb(tmp_path / "kb.yaml")
    desk = await faq_desk(kb=kb)
    loaded = faq_of(desk).loaded
    assert loaded is not None
    en, zh = loaded.calibration.for_language("en"), loaded.calibration.for_language("zh")
    # an English question more confident than the English threshold but not the Chinese one is answered
    english = "what are the opening hours on sunday"
    confidence = loaded.matcher.match(english).confidence
    assert en.threshold <= confidence < zh.threshold
    # a Chinese question as confident as that is not: Chinese has its own, stricter threshold
    chinese = next(
        q
        for q in ("发票有问题吗", "请帮我查一下发票", "我的发票", "发票可以吗", "关于发票")
        if en.threshold <= loaded.matcher.match(q).confidence < zh.threshold
    )
    channel, _ = doubles(desk)
    assert await ask(channel, "ann", english) == "opening answer"
    assert await ask(channel, "li", chinese) != "发票答复"


async def ask(channel: MemoryChannel, user: str, text: str) -> str:
    """The customer writes ``text``; returns the bot's next reply to them."""
    before = len(channel.texts_to(user))
    await channel.customer_writes(user, text)
    await channel.sent.wait_for(lambda _: len(channel.texts_to(user)) > before)
    return channel.texts_to(user)[before]
