"""A knowledge base ready to answer: loaded, matched (lexical, semantic or tuned) and calibrated, in one step."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from plugins.faq.calibrate import Calibration, calibrate
from plugins.faq.knowledge import KnowledgeBase, load
from plugins.faq.lexical import LexicalMatcher
from plugins.faq.matching import Example, Match, Matcher
from plugins.faq.semantic import SemanticMatcher


@dataclass(frozen=True)
class Loaded:
    """What answers questions until the next reload."""

    kb: KnowledgeBase
    matcher: Matcher
    calibration: Calibration
    signature: tuple[int, int] | None
    seconds: float


class WithExtras:
    """A matcher that is always fitted with some extra examples besides those it is given."""

    def __init__(self, inner: Matcher, extras: Sequence[Example]) -> None:
        self.inner = inner
        self.extras = tuple(extras)
        self.name = inner.name

    def spawn(self) -> Matcher:
        """A new, unfitted twin (with the same extras)."""
        return WithExtras(self.inner.spawn(), self.extras)

    def fit(self, examples: Sequence[Example]) -> None:
        """Fit ``examples`` and the extras."""
        self.inner.fit([*examples, *self.extras])

    def match(self, text: str, k: int = 3) -> Match:
        """As the inner matcher."""
        return self.inner.match(text, k)


def make_matcher(kind: str, previous: Matcher | None = None) -> Matcher:
    """A fresh matcher of ``kind`` ("lexical", "semantic" or "tuned"); reuses the previous one's model and caches."""
    if previous is not None and previous.name == kind:
        return previous.spawn()
    if kind == "semantic":
        return SemanticMatcher()
    if kind == "tuned":
        from plugins.faq.tuned import TunedMatcher  # imports torch only when asked for

        return TunedMatcher()
    return LexicalMatcher()


def build(
    path: str,
    *,
    matcher: str = "lexical",
    plugin: str = "faq",
    threshold: float | None = None,
    suggest_floor: float | None = None,
    target_wrong: float = 0.02,
    unrelated_share: float = 0.2,
    signature: tuple[int, int] | None = None,
    previous: Matcher | None = None,
    extra_examples: Sequence[Example] = (),
) -> Loaded:
    """Load the file, fit the matcher and calibrate (blocking: run it in a thread).

    ``extra_examples`` are fitted with the entries' phrasings under ids that are not entries (the FAQ
    plugin's always-human intents), so a question is ranked against both. The calibration folds are
    fitted with them too, but only the entries' phrasings are held out as questions.
    """
    started = time.perf_counter()
    kb = load(path, plugin)
    extras = tuple(e for e in extra_examples if e.entry_id not in kb.entries)
    model = make_matcher(matcher, previous)
    examples = kb.examples()
    model.fit([*examples, *extras])
    folds = WithExtras(model.spawn(), extras) if extras else model.spawn()
    found = calibrate(folds, examples, target_wrong=target_wrong, unrelated_share=unrelated_share)
    if threshold is not None:
        floor = suggest_floor if suggest_floor is not None else found.suggest_floor
        found = Calibration(
            threshold, floor, found.expected_correct, found.expected_wrong, found.samples, "config"
        )
    elif suggest_floor is not None:
        found = Calibration(
            found.threshold,
            suggest_floor,
            found.expected_correct,
            found.expected_wrong,
            found.samples,
            found.source,
        )
    return Loaded(kb, model, found, signature, time.perf_counter() - started)
