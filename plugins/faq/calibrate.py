"""One answer threshold per knowledge base, found from the knowledge base itself when it loads.

No labelled traffic is needed: the knowledge base is split into folds. In each fold a fresh matcher is
fitted without some phrasings of every entry and without some entries altogether; the held-out
phrasings play the customers' routine questions (the bot should answer them, and correctly), and the
phrasings of the held-out entries play the questions the knowledge base does not cover (the bot must
not answer them: whatever it picks is wrong). The threshold is the lowest confidence at which the
estimated share of wrong answers, for the expected share of unrelated questions, stays under the target.

Below the threshold the bot offers its best entries as choices ("did you mean") when the match's choice
confidence (:attr:`plugins.faq.matching.Match.offer_confidence`: how sure the matcher is that the right
entry is among the choices; the confidence itself for matchers without one) is at least ``suggest_floor``,
and hands over otherwise. The floor is found on the same held-out questions: the lowest choice confidence
down to which, among the questions under the threshold, enough are offered choices that include the
right entry.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from plugins.faq.matching import Example, Matcher


@dataclass(frozen=True)
class Calibration:
    """The thresholds in force for one knowledge base, and what the held-out folds predict for them."""

    threshold: float
    suggest_floor: float
    expected_correct: float  # share of routine questions answered correctly
    expected_wrong: float  # share of all questions answered wrongly
    samples: int  # held-out questions the estimate rests on
    source: str = "self-calibrated"


@dataclass(frozen=True)
class Observation:
    """One held-out question: the matcher's confidence, whether its first entry was right (always false for
    a question of a held-out entry), whether the right entry was among the choices, which kind it is, and
    the match's choice confidence (None: the matcher has none, the confidence stands in for it)."""

    confidence: float
    correct: bool
    in_top: bool
    unrelated: bool
    choice_confidence: float | None = None

    @property
    def offer_confidence(self) -> float:
        """What the "did you mean" floor is compared with (as :attr:`Match.offer_confidence`)."""
        return self.confidence if self.choice_confidence is None else self.choice_confidence


def observe(
    matcher: Matcher,
    examples: Sequence[Example],
    *,
    folds: int = 3,
    max_questions: int = 1200,
    choices: int = 3,
    seed: int = 0,
) -> list[Observation]:
    """Held-out observations from ``folds`` fits of fresh copies of ``matcher`` (see the module docstring)."""
    rng = random.Random(seed)
    by_entry: dict[str, list[str]] = defaultdict(list)
    for example in examples:
        by_entry[example.entry_id].append(example.text)
    entries = list(by_entry)
    if len(entries) < 3:
        return []
    rng.shuffle(entries)
    left_out_group = {entry: i % folds for i, entry in enumerate(entries)}
    phrasing_fold: dict[tuple[str, int], int] = {}
    for entry, texts in by_entry.items():
        order = list(range(len(texts)))
        rng.shuffle(order)
        for position, index in enumerate(order):
            if len(texts) >= 2:
                phrasing_fold[(entry, index)] = position % folds
    per_fold = max(1, max_questions // folds)
    observations: list[Observation] = []
    for fold in range(folds):
        train: list[Example] = []
        routine: list[Example] = []
        unrelated: list[Example] = []
        for entry, texts in by_entry.items():
            for index, text in enumerate(texts):
                if left_out_group[entry] == fold:
                    unrelated.append(Example(entry, text))
                elif phrasing_fold.get((entry, index)) == fold:
                    routine.append(Example(entry, text))
                else:
                    train.append(Example(entry, text))
        if not train:
            continue
        model = matcher.spawn()
        model.fit(train)
        unrelated = rng.sample(unrelated, min(len(unrelated), per_fold // 2))
        routine = rng.sample(routine, min(len(routine), per_fold - len(unrelated)))
        for question, is_unrelated in [(e, False) for e in routine] + [(e, True) for e in unrelated]:
            match = model.match(question.text, choices)
            ids = [c.entry_id for c in match.candidates]
            observations.append(
                Observation(
                    confidence=match.confidence,
                    correct=not is_unrelated and bool(ids) and ids[0] == question.entry_id,
                    in_top=not is_unrelated and question.entry_id in ids,
                    unrelated=is_unrelated,
                    choice_confidence=match.choice_confidence,
                )
            )
    return observations


def choose_threshold(
    observations: Sequence[Observation],
    *,
    target_wrong: float = 0.02,
    unrelated_share: float = 0.2,
    fallback: float = 1.0,
    suggest_precision: float = 0.6,
) -> Calibration:
    """The lowest threshold whose estimated wrong-answer share stays at or under ``target_wrong``."""
    routine = [o for o in observations if not o.unrelated]
    unrelated = [o for o in observations if o.unrelated]
    if not routine:
        return Calibration(fallback, fallback, 0.0, 0.0, len(observations), "default (too few phrasings)")
    share = unrelated_share if unrelated else 0.0
    ordered = sorted(observations, key=lambda o: -o.confidence)
    best = Calibration(fallback, fallback, 0.0, 0.0, len(observations))
    correct = wrong_routine = answered_unrelated = 0
    for i, obs in enumerate(ordered):
        if obs.unrelated:
            answered_unrelated += 1
        elif obs.correct:
            correct += 1
        else:
            wrong_routine += 1
        if i + 1 < len(ordered) and ordered[i + 1].confidence == obs.confidence:
            continue  # a threshold cannot split equal confidences
        wrong = (1 - share) * wrong_routine / len(routine)
        if unrelated:
            wrong += share * answered_unrelated / len(unrelated)
        if wrong <= target_wrong:
            best = Calibration(
                obs.confidence, obs.confidence, correct / len(routine), wrong, len(observations)
            )
    floor = _suggest_floor(
        observations, best.threshold, share, len(routine), len(unrelated), suggest_precision
    )
    return Calibration(
        best.threshold, floor, best.expected_correct, best.expected_wrong, best.samples, best.source
    )


def _suggest_floor(
    observations: Sequence[Observation],
    threshold: float,
    share: float,
    n_routine: int,
    n_unrelated: int,
    precision: float,
) -> float:
    """The lowest choice confidence down to which choices are worth offering: among the questions under the
    threshold whose choice confidence reaches it, at least ``precision`` (weighted by the expected mix) have
    the right entry in the choices. None qualifies: no choices (the threshold, or infinity for a matcher
    whose choice confidence is on its own scale)."""
    below = sorted((o for o in observations if o.confidence < threshold), key=lambda o: -o.offer_confidence)
    separate = any(o.choice_confidence is not None for o in observations)
    floor = math.inf if separate else threshold
    helped = bothered = 0.0
    for obs in below:
        if obs.unrelated:
            bothered += share / max(n_unrelated, 1)
        elif obs.in_top:
            helped += (1 - share) / max(n_routine, 1)
        else:
            bothered += (1 - share) / max(n_routine, 1)
        if helped + bothered > 0 and helped / (helped + bothered) >= precision:
            floor = obs.offer_confidence
    return floor


def calibrate(
    matcher: Matcher,
    examples: Sequence[Example],
    *,
    target_wrong: float = 0.02,
    unrelated_share: float = 0.2,
    folds: int = 3,
    max_questions: int = 1200,
    seed: int = 0,
) -> Calibration:
    """Observe held-out folds of ``examples`` and choose the threshold (see the module docstring)."""
    observations = observe(matcher, examples, folds=folds, max_questions=max_questions, seed=seed)
    return choose_threshold(observations, target_wrong=target_wrong, unrelated_share=unrelated_share)
