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
    """The best entries for a question, best first, and the confidence the threshold is applied to."""

    candidates: tuple[Candidate, ...]
    confidence: float

    @property
    def best(self) -> Candidate | None:
        """The best candidate, if any entry matched at all."""
        return self.candidates[0] if self.candidates else None


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
