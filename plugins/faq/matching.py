"""What every matcher returns, and the interface the plugin, the calibration and the benchmark rely on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Candidate:
    """One knowledge-base entry and how well it matches a question (higher is better)."""

    entry_id: str
    score: float


@dataclass(frozen=True)
class Match:
    """The best entries for a question, best first, and the confidences the thresholds are applied to.

    ``confidence`` says whether the first entry is right (the answer threshold is applied to it);
    ``choice_confidence``, when a matcher gives one, says whether the right entry is among the candidates
    (the "did you mean" floor is applied to it). Without one, the floor applies to ``confidence``.
    """

    candidates: tuple[Candidate, ...]
    confidence: float
    choice_confidence: float | None = None

    @property
    def best(self) -> Candidate | None:
        """The best candidate, if any entry matched at all."""
        return self.candidates[0] if self.candidates else None

    @property
    def offer_confidence(self) -> float:
        """What the "did you mean" floor is compared with: the choice confidence, else the confidence."""
        return self.confidence if self.choice_confidence is None else self.choice_confidence


@dataclass(frozen=True)
class Example:
    """One phrasing of one entry: what a matcher is fitted on."""

    entry_id: str
    text: str


class Matcher(Protocol):
    """Ranks knowledge-base entries for a question. ``fit`` may take a while; ``match`` must be fast."""

    name: str

    def spawn(self) -> Matcher:
        """A new, unfitted matcher with the same settings (sharing caches and models)."""
        ...

    def fit(self, examples: Sequence[Example]) -> None:
        """Learn the entries from their phrasings (replaces what was learned before)."""
        ...

    def match(self, text: str, k: int = 3) -> Match:
        """The ``k`` best entries for ``text`` and a confidence in the first one."""
        ...


def margin_confidence(candidates: Sequence[Candidate], margin_weight: float) -> float:
    """Best score plus ``margin_weight`` times its lead over the second-best entry.

    A question that matches two entries about equally well is ambiguous even when both scores are
    high; the lead over the runner-up is what tells the bot it may answer.
    """
    if not candidates:
        return 0.0
    best = candidates[0].score
    second = candidates[1].score if len(candidates) > 1 else 0.0
    return best + margin_weight * (best - second)


def choice_confidence(candidates: Sequence[Candidate], similarity: float, similarity_weight: float) -> float:
    """How sure a probabilistic matcher is that the right entry is among ``candidates``.

    The candidates' probabilities added up (the share of belief the choices cover) plus
    ``similarity_weight`` times ``similarity``, the cosine between the question and the nearest phrasing
    of any candidate: a question close to a phrasing of one of the choices is usually about one of them,
    even when the classifier cannot tell which (see :mod:`plugins.faq.phrasings`).
    """
    return sum(c.score for c in candidates) + similarity_weight * similarity
