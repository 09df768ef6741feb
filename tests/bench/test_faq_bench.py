"""Smoke tests of the FAQ benchmark (bench/faq.py): tiny slices; the scoring is checked, timing is not."""

from __future__ import annotations

import pytest

from bench.faq import (
    DATA,
    DataSet,
    Question,
    banking77,
    clinc150,
    first_phrasings,
    main,
    run,
    score,
    spread,
    table,
)
from plugins.faq.calibrate import Calibration
from plugins.faq.matching import Candidate, Example, Match

KB = [
    Example("hours", "when are you open"),
    Example("hours", "what are your opening hours"),
    Example("hours", "what time do you close"),
    Example("refund", "how do I get my money back"),
    Example("refund", "I want a refund"),
    Example("refund", "refund my order please"),
    Example("track", "where is my parcel"),
    Example("track", "track my order"),
    Example("track", "has my package shipped"),
    Example("pay", "can I pay with paypal"),
    Example("pay", "which payment methods do you take"),
    Example("pay", "do you accept credit cards"),
]


def test_scoring_counts_answers_choices_and_out_of_scope_questions() -> None:
    questions = [Question("a", "x"), Question("b", "y"), Question("c", "z"), Question("d", None)]
    matches = [
        Match((Candidate("x", 0.9), Candidate("y", 0.1)), 0.9),  # answered, right
        Match((Candidate("x", 0.8), Candidate("y", 0.7)), 0.8),  # answered, wrong
        Match((Candidate("x", 0.4), Candidate("z", 0.3)), 0.4),  # choices include the right one
        Match((Candidate("x", 0.3),), 0.3),  # out of scope, not answered
    ]
    shares = score(questions, matches, Calibration(0.5, 0.2, 0, 0, 0))
    assert shares["top1"] == pytest.approx(1 / 3)
    assert shares["correct"] == pytest.approx(1 / 3)
    assert shares["wrong"] == pytest.approx(1 / 4)
    assert shares["oos_answered"] == 0.0
    assert shares["resolved"] == pytest.approx(2 / 3)


def test_a_tiny_data_set_runs_end_to_end_and_prints_a_row() -> None:
    questions = [
        Question("are you open on sunday", "hours"),
        Question("give me my money back", "refund"),
        Question("where is my order", "track"),
        Question("do you take paypal", "pay"),
        Question("what is the weather tomorrow", None),
    ]
    result = run(DataSet("tiny", KB, questions), "lexical")
    assert 0.0 <= result.wrong <= 1.0 and 0.0 <= result.correct <= result.top1 <= 1.0
    assert result.oos_answered is not None and result.qps > 0 and result.load_seconds > 0
    assert "| tiny | en | lexical |" in table([result])


def test_knowledge_base_is_the_first_phrasings_per_intent_in_file_order() -> None:
    rows = [(f"q{i}", "a" if i % 2 else "b") for i in range(30)]
    kb = first_phrasings(rows, per_intent=3)
    assert [e.text for e in kb] == ["q0", "q1", "q2", "q3", "q4", "q5"]
    assert len(spread([Question(str(i), None) for i in range(100)], 10)) == 10


@pytest.mark.skipif(
    not (DATA / "clinc150_data_full.json").exists(), reason=f"intent data not found in {DATA}"
)
def test_the_real_data_on_a_slice() -> None:
    clinc = clinc150()
    assert len({e.entry_id for e in clinc.knowledge}) == 150 and len(clinc.knowledge) == 1500
    assert sum(q.intent is None for q in clinc.questions) == 1000
    lines: list[str] = []
    results = main(
        ["--matcher", "lexical", "--limit", "60", "--no-big", "--datasets", "massive,mixed"], out=lines.append
    )
    assert {r.dataset for r in results} == {"MASSIVE zh-CN", "CLINC150+MASSIVE"}
    text = "\n".join(lines)
    assert "\n| MASSIVE zh-CN | zh | lexical |" in text
    # the two-language knowledge base: a row for all its questions, then one per language
    mixed = next(r for r in results if r.dataset == "CLINC150+MASSIVE")
    assert [r.language for r in mixed.languages] == ["en", "zh"]
    assert "\n| CLINC150+MASSIVE | zh | lexical |" in text


def test_choices_are_offered_on_the_choice_confidence_and_counted_for_out_of_scope_questions() -> None:
    questions = [Question("a", "x"), Question("b", None), Question("c", None)]
    matches = [
        Match((Candidate("y", 0.5), Candidate("x", 0.4)), 0.5, choice_confidence=2.0),  # offered, helps
        Match((Candidate("y", 0.5),), 0.45, choice_confidence=2.0),  # out of scope, offered choices
        Match((Candidate("y", 0.5),), 0.45, choice_confidence=0.5),  # out of scope, handed over
    ]
    shares = score(questions, matches, Calibration(0.9, 1.0, 0, 0, 0))
    assert shares["correct"] == 0.0 and shares["wrong"] == 0.0
    assert shares["resolved"] == pytest.approx(1.0)
    assert shares["oos_offered"] == pytest.approx(0.5)


@pytest.mark.skipif(
    not (DATA / "clinc150_data_full.json").exists(), reason=f"intent data not found in {DATA}"
)
def test_big_only_measures_just_the_large_knowledge_base() -> None:
    lines: list[str] = []
    results = main(["--matcher", "lexical", "--limit", "20", "--big-only"], out=lines.append)
    assert results == []
    text = "\n".join(lines)
    assert "| lexical | 1000 entries / 10000 phrasings |" in text and "| BANKING77 |" not in text


@pytest.mark.skipif(not (DATA / "banking77_train.csv").exists(), reason=f"intent data not found in {DATA}")
def test_the_knowledge_base_can_take_more_phrasings_per_intent() -> None:
    assert len(banking77(phrasings=3).knowledge) == 3 * 77
    assert len(banking77().knowledge) == 10 * 77  # the reported figures' knowledge base
    lines: list[str] = []
    results = main(
        ["--matcher", "lexical", "--limit", "40", "--no-big", "--datasets", "banking77", "--phrasings", "3"],
        out=lines.append,
    )
    assert [r.dataset for r in results] == ["BANKING77"]
    assert any("the first 3 training phrasings per intent" in line for line in lines)
