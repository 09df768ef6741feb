"""The "did you mean" choices: a choice confidence next to the answer confidence, and its calibrated floor."""

from __future__ import annotations

import math

import pytest

from plugins.faq.calibrate import Observation, choose_threshold
from plugins.faq.matching import Candidate, Match, choice_confidence


def test_a_match_without_a_choice_confidence_offers_choices_on_its_confidence() -> None:
    plain = Match((Candidate("a", 0.4),), 0.4)
    rated = Match((Candidate("a", 0.4),), 0.4, choice_confidence=1.7)
    assert plain.offer_confidence == 0.4
    assert rated.offer_confidence == 1.7


def test_choice_confidence_adds_the_candidates_probabilities_and_the_nearest_phrasing() -> None:
    candidates = [Candidate("a", 0.5), Candidate("b", 0.3), Candidate("c", 0.1)]
    assert choice_confidence(candidates, 0.8, 2.0) == pytest.approx(0.9 + 1.6)
    assert choice_confidence([], 0.0, 2.0) == 0.0


def routine(confidence: float, choice: float | None, in_top: bool) -> Observation:
    """A held-out routine question whose first entry was wrong."""
    return Observation(confidence, False, in_top, False, choice)


def test_the_floor_is_found_on_the_choice_confidence_of_questions_under_the_threshold() -> None:
    answered = [Observation(5.0, True, True, False, 3.0) for _ in range(50)]
    # under the threshold, the answer confidence says nothing about the choices; the choice confidence does
    helped = [routine(1.0 - i / 100, 2.0 + i / 100, True) for i in range(10)]
    missed = [routine(1.0 + i / 100, 0.5 + i / 100, False) for i in range(10)]
    unrelated = [Observation(0.5, False, False, True, 0.2) for _ in range(20)]
    calibration = choose_threshold([*answered, *helped, *missed, *unrelated], unrelated_share=0.2)
    assert calibration.threshold > 1.0  # every helped question is under it
    # ranked by choice confidence the helped questions come first and are offered choices; a few misses are
    # tolerated (60 % of those offered choices must be helped), the unrelated questions are not offered any
    assert 0.2 < calibration.suggest_floor <= 2.0
    # ranked by the answer confidence instead, the misses come first and no floor is worth offering choices
    observations = [*answered, *helped, *missed, *unrelated]
    plain = [Observation(o.confidence, o.correct, o.in_top, o.unrelated) for o in observations]
    old_rule = choose_threshold(plain, unrelated_share=0.2)
    assert old_rule.suggest_floor == pytest.approx(old_rule.threshold)


def test_no_choices_when_none_would_help() -> None:
    answered = [Observation(5.0, True, True, False, 3.0) for _ in range(50)]
    missed = [routine(1.0, 2.0, False) for _ in range(10)]
    calibration = choose_threshold([*answered, *missed], unrelated_share=0.0)
    assert math.isinf(calibration.suggest_floor)
    # without choice confidences the old rule holds: the floor falls back to the threshold
    plain = choose_threshold(
        [Observation(o.confidence, o.correct, o.in_top, o.unrelated) for o in answered + missed]
    )
    assert plain.suggest_floor == pytest.approx(plain.threshold)
