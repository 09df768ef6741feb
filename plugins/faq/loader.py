"""A knowledge base ready to answer: loaded, matched (lexical, semantic or tuned) and calibrated, in one step."""

from __future__ import annotations

import time
from dataclasses import dataclass

from plugins.faq.calibrate import Calibration, calibrate
from plugins.faq.knowledge import KnowledgeBase, detect_language, load
from plugins.faq.lexical import LexicalMatcher
from plugins.faq.matching import Matcher
from plugins.faq.semantic import SemanticMatcher


@dataclass(frozen=True)
class Loaded:
    """What answers questions until the next reload."""

    kb: KnowledgeBase
    matcher: Matcher
    calibration: Calibration
    signature: tuple[int, int] | None
    seconds: float


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
) -> Loaded:
    """Load the file, fit the matcher and calibrate, per language (blocking: run it in a thread).

    A configured ``threshold`` / ``suggest_floor`` replaces the calibrated one in every language."""
    started = time.perf_counter()
    kb = load(path, plugin)
    model = make_matcher(matcher, previous)
    examples = kb.examples()
    model.fit(examples)
    found = calibrate(
        model.spawn(),
        examples,
        target_wrong=target_wrong,
        unrelated_share=unrelated_share,
        language_of=lambda text: detect_language(text, kb.language),
    )
    found = found.overridden(threshold, suggest_floor)
    return Loaded(kb, model, found, signature, time.perf_counter() - started)
