"""Answer thresholds per knowledge base and language, found from the knowledge base itself when it loads.

No labelled traffic is needed: the knowledge base is split into folds. In each fold a fresh matcher is
fitted without some phrasings of every entry and without some entries altogether; the held-out
phrasings play the customers' routine questions (the bot should answer them, and correctly), and the
phrasings of the held-out entries play the questions the knowledge base does not cover (the bot must
not answer them: whatever it picks is wrong). The threshold is the lowest confidence at which the
estimated share of wrong answers, for the expected share of unrelated questions, stays under the target.

Two things keep that promise on questions the calibration never saw:

- **A margin for the sample size.** The share of wrong answers is not the one observed on the held-out
  questions but an upper confidence bound on it (Wilson score interval, one-sided, at ``confidence``): each
  part, wrong answers to routine questions and answers to unrelated ones, is replaced by its bound, so a
  knowledge base with few phrasings (few held-out questions) gets a stricter threshold than a large one
  with the same observed rates. ``confidence`` 0.5 gives the plain observed share. When no threshold's
  bound meets the target (too few held-out questions to show it), the threshold is the lowest one above
  every wrong answer seen.
- **One threshold per language.** Each held-out question's language is detected as the plugin detects a
  customer's (:func:`plugins.faq.knowledge.detect_language`), and every language with at least
  ``min_routine`` routine held-out questions gets its own threshold from its own questions (the unrelated
  ones of all languages stand in when it has none of its own). A language whose phrasings match less
  cleanly (shorter texts, a weaker encoder) thus gets a stricter threshold, without making the others
  stricter. A question in a language without its own threshold is judged by the strictest one
  (:meth:`Calibration.for_language`).

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from statistics import NormalDist

from plugins.faq.knowledge import detect_language
from plugins.faq.matching import Example, Matcher

DEFAULT_CONFIDENCE = 0.9
"""One-sided level of the upper bound on the wrong-answer share (chosen on development data, see
docs/benchmarks-history.md, "FAQ: calibration per language")."""
MIN_ROUTINE = 20
"""Routine held-out questions a language needs for a threshold of its own."""


@dataclass(frozen=True)
class Calibration:
    """The thresholds in force for one knowledge base, and what the held-out folds predict for them.

    The top-level figures are the strictest language's threshold and floor (what applies to a language
    without its own) and the estimates over all held-out questions at that threshold; ``languages`` holds
    each language's own calibration (empty: one threshold for all).
    """

    threshold: float
    suggest_floor: float
    expected_correct: float  # share of routine questions answered correctly
    expected_wrong: float  # share of all questions answered wrongly (as observed on the held-out questions)
    samples: int  # held-out questions the estimate rests on
    source: str = "self-calibrated"
    wrong_bound: float | None = None  # the upper confidence bound on expected_wrong the threshold was held to
    languages: Mapping[str, Calibration] = field(default_factory=dict)

    def for_language(self, language: str) -> Calibration:
        """The calibration a question in ``language`` is judged by: its own, else the strictest."""
        return self.languages.get(language, self)

    def overridden(self, threshold: float | None = None, suggest_floor: float | None = None) -> Calibration:
        """These thresholds replaced by configured ones, in every language (None: keep the calibrated one)."""
        if threshold is None and suggest_floor is None:
            return self
        languages = {k: v.overridden(threshold, suggest_floor) for k, v in self.languages.items()}
        return replace(
            self,
            threshold=self.threshold if threshold is None else threshold,
            suggest_floor=self.suggest_floor if suggest_floor is None else suggest_floor,
            source=self.source if threshold is None else "config",
            languages=languages,
        )

    def describe(self) -> str:
        """One line for logs and ``!faq stats``: the thresholds per language."""
        if len(self.languages) <= 1:
            return f"threshold {self.threshold:.3f} ({self.source})"
        parts = ", ".join(f"{k} {v.threshold:.3f}" for k, v in sorted(self.languages.items()))
        return f"thresholds {parts}; other languages {self.threshold:.3f} ({self.source})"


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
    language: str = ""

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
    language_of: Callable[[str], str] | None = None,
) -> list[Observation]:
    """Held-out observations from ``folds`` fits of fresh copies of ``matcher`` (see the module docstring).

    ``language_of`` tells a question's language (default: :func:`detect_language` with English as default);
    at most ``max_questions`` held-out questions are asked per language.
    """
    language_of = language_of or detect_language
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
        asked: list[tuple[Example, bool]] = []
        for language in dict.fromkeys(language_of(e.text) for e in [*routine, *unrelated]):
            # ``max_questions`` per language: a language with a small share of the phrasings still gets
            # all of its held-out questions (a monolingual knowledge base samples as before)
            own = [e for e in unrelated if language_of(e.text) == language]
            own = rng.sample(own, min(len(own), per_fold // 2))
            mine = [e for e in routine if language_of(e.text) == language]
            mine = rng.sample(mine, min(len(mine), per_fold - len(own)))
            asked += [(e, False) for e in mine] + [(e, True) for e in own]
        for question, is_unrelated in asked:
            match = model.match(question.text, choices)
            ids = [c.entry_id for c in match.candidates]
            observations.append(
                Observation(
                    confidence=match.confidence,
                    correct=not is_unrelated and bool(ids) and ids[0] == question.entry_id,
                    in_top=not is_unrelated and question.entry_id in ids,
                    unrelated=is_unrelated,
                    choice_confidence=match.choice_confidence,
                    language=language_of(question.text),
                )
            )
    return observations


def wilson_upper(events: int, trials: int, z: float) -> float:
    """One-sided upper bound of the Wilson score interval for ``events`` out of ``trials`` (z: its quantile).

    Unlike the normal approximation it stays above zero when nothing was observed (about z² / n), which is
    what a small calibration set needs; z = 0 gives the observed share.
    """
    if trials <= 0:
        return 1.0
    p = events / trials
    z2 = z * z
    centre = p + z2 / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    return min(1.0, (centre + spread) / (1 + z2 / trials))


def choose_threshold(
    observations: Sequence[Observation],
    *,
    target_wrong: float = 0.02,
    unrelated_share: float = 0.2,
    fallback: float = 1.0,
    suggest_precision: float = 0.6,
    confidence: float = DEFAULT_CONFIDENCE,
    min_routine: int = MIN_ROUTINE,
) -> Calibration:
    """Per language, the lowest threshold whose bound on the wrong-answer share stays at or under
    ``target_wrong`` (see the module docstring); the strictest applies to the other languages."""
    if not any(not o.unrelated for o in observations):
        return Calibration(fallback, fallback, 0.0, 0.0, len(observations), "default (too few phrasings)")
    z = NormalDist().inv_cdf(confidence) if confidence > 0.5 else 0.0

    def one(sample: Sequence[Observation]) -> Calibration:
        return _calibrate_one(sample, target_wrong, unrelated_share, fallback, suggest_precision, z)

    unrelated = [o for o in observations if o.unrelated]
    languages: dict[str, Calibration] = {}
    for language in sorted({o.language for o in observations if not o.unrelated}):
        own = [o for o in observations if o.language == language]
        if sum(not o.unrelated for o in own) < min_routine:
            continue
        if not any(o.unrelated for o in own):
            own += unrelated
        languages[language] = one(own)
    if len(languages) <= 1 and len({o.language for o in observations if not o.unrelated}) <= 1:
        only = one(observations)
        return replace(only, languages={k: only for k in languages})
    if not languages:  # no language has enough questions alone: one threshold over all of them
        return one(observations)
    strictest = max(languages.values(), key=lambda c: (c.threshold, c.suggest_floor))
    floor = max(c.suggest_floor for c in languages.values())
    correct, wrong, bound = _estimate(observations, strictest.threshold, unrelated_share, z)
    source = next(
        (f"{k}: {c.source}" for k, c in languages.items() if c.source != "self-calibrated"), "self-calibrated"
    )
    return Calibration(
        strictest.threshold, floor, correct, wrong, len(observations), source, bound, languages
    )


def _estimate(
    observations: Sequence[Observation], threshold: float, unrelated_share: float, z: float
) -> tuple[float, float, float]:
    """Share of routine questions answered correctly, share of all answered wrongly, and its bound."""
    routine = [o for o in observations if not o.unrelated]
    unrelated = [o for o in observations if o.unrelated]
    share = unrelated_share if unrelated else 0.0
    answered = [o for o in observations if o.confidence >= threshold]
    correct = sum(1 for o in answered if o.correct)
    wrong_routine = sum(1 for o in answered if not o.unrelated and not o.correct)
    answered_unrelated = sum(1 for o in answered if o.unrelated)
    n_routine, n_unrelated = max(len(routine), 1), max(len(unrelated), 1)
    wrong = (1 - share) * wrong_routine / n_routine + share * answered_unrelated / n_unrelated
    bound = (1 - share) * wilson_upper(wrong_routine, len(routine), z)
    if unrelated:
        bound += share * wilson_upper(answered_unrelated, len(unrelated), z)
    return correct / n_routine, wrong, bound


def _calibrate_one(
    observations: Sequence[Observation],
    target_wrong: float,
    unrelated_share: float,
    fallback: float,
    suggest_precision: float,
    z: float,
) -> Calibration:
    """The threshold and floor for one set of held-out questions (one language, or all of them)."""
    routine = [o for o in observations if not o.unrelated]
    unrelated = [o for o in observations if o.unrelated]
    if not routine:
        return Calibration(fallback, fallback, 0.0, 0.0, len(observations), "default (too few phrasings)")
    share = unrelated_share if unrelated else 0.0
    ordered = sorted(observations, key=lambda o: -o.confidence)
    best: Calibration | None = None
    strict = math.nextafter(ordered[0].confidence, math.inf)  # above every wrong answer seen
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
        bound = (1 - share) * wilson_upper(wrong_routine, len(routine), z)
        if unrelated:
            wrong += share * answered_unrelated / len(unrelated)
            bound += share * wilson_upper(answered_unrelated, len(unrelated), z)
        if wrong_routine == answered_unrelated == 0:
            strict = obs.confidence
        if bound <= target_wrong:
            best = Calibration(
                obs.confidence,
                obs.confidence,
                correct / len(routine),
                wrong,
                len(observations),
                wrong_bound=bound,
            )
    if best is None:
        c, w, b = _estimate(observations, strict, unrelated_share, z)
        best = Calibration(
            strict,
            strict,
            c,
            w,
            len(observations),
            f"self-calibrated, strict: {len(observations)} held-out questions, too few to show "
            f"≤ {100 * target_wrong:g} % wrong",
            b,
        )
    floor = _suggest_floor(
        observations, best.threshold, share, len(routine), len(unrelated), suggest_precision
    )
    return replace(best, suggest_floor=floor)


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
    confidence: float = DEFAULT_CONFIDENCE,
    language_of: Callable[[str], str] | None = None,
) -> Calibration:
    """Observe held-out folds of ``examples`` and choose the thresholds (see the module docstring)."""
    observations = observe(
        matcher, examples, folds=folds, max_questions=max_questions, seed=seed, language_of=language_of
    )
    return choose_threshold(
        observations, target_wrong=target_wrong, unrelated_share=unrelated_share, confidence=confidence
    )
