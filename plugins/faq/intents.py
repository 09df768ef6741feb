"""Intents that always go to a person: asking for one, a complaint, a manager, a legal threat.

Recognised by meaning, not by a word inside a question, in two ways that work with every matcher:

* short whole-message patterns per language ("agent", "转人工", "let me talk to your manager"), from the
  locale files and the plugin's config;
* example phrasings of each intent, learned next to the knowledge base's phrasings under ids that are
  not entries (``@complaint``) by a second matcher (:class:`IntentRecogniser`): a message it ranks
  closest to an intent's examples, with a confidence above its own calibrated threshold, is that intent,
  while "What are your customer service hours?" stays closest to the hours entry. The knowledge base's
  matcher and its calibration are left as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from plugins.faq.calibrate import calibrate
from plugins.faq.loader import make_matcher
from plugins.faq.locales import Locale, Patterns
from plugins.faq.matching import Example, Matcher

INTENT_PREFIX = "@"
_SENTENCE_END = re.compile(r"[.!?;\n\u3002\uff01\uff1f\uff1b]+")  # also the full-width 。！？；


def intent_of(entry_id: str) -> str | None:
    """The intent a matcher candidate stands for, or None for a knowledge-base entry."""
    return entry_id[len(INTENT_PREFIX) :] if entry_id.startswith(INTENT_PREFIX) else None


@dataclass(frozen=True)
class IntentSpec:
    """One intent across languages: its whole-message patterns and its example phrasings."""

    name: str
    patterns: Patterns
    examples: tuple[str, ...]


class HandoverIntents:
    """The always-human intents of a plugin instance (locale files merged with the config)."""

    def __init__(self, specs: Iterable[IntentSpec]) -> None:
        self.specs = {spec.name: spec for spec in specs}

    @classmethod
    def build(
        cls,
        locales: Mapping[str, Locale],
        extra: Mapping[str, tuple[Sequence[str], Sequence[str]]] | None = None,
        disabled: Iterable[str] = (),
    ) -> HandoverIntents:
        """Merge every locale's intents with ``extra`` (name → (patterns, examples)) minus ``disabled``."""
        patterns: dict[str, Patterns] = {}
        examples: dict[str, list[str]] = {}
        for locale in locales.values():
            for name, intent in locale.intents.items():
                patterns[name] = patterns.get(name, Patterns()) + intent.patterns
                examples.setdefault(name, []).extend(intent.examples)
        for name, (more_patterns, more_examples) in (extra or {}).items():
            patterns[name] = patterns.get(name, Patterns()) + Patterns.of(more_patterns, f"intent {name}")
            examples.setdefault(name, []).extend(more_examples)
        off = set(disabled)
        return cls(
            IntentSpec(name, patterns[name], tuple(dict.fromkeys(examples.get(name, []))))
            for name in patterns
            if name not in off
        )

    def by_pattern(self, text: str) -> str | None:
        """The intent whose whole-message pattern ``text``, or one of its sentences, is ("My tent broke.
        Can I talk to an agent?"); a request for a person is checked last. A word inside a sentence
        ("What are your customer service hours?") is never enough."""
        parts = [text, *(p for p in _SENTENCE_END.split(text) if p.strip())]
        ordered = sorted(self.specs.values(), key=lambda s: s.name == "person")
        return next((spec.name for spec in ordered if any(spec.patterns.match(p) for p in parts)), None)

    def is_only(self, intent: str, text: str) -> bool:
        """True when the whole of ``text`` is ``intent``'s pattern ("agent"), with no question beside it."""
        spec = self.specs.get(intent)
        return spec is not None and bool(spec.patterns.match(text))

    def examples(self) -> list[Example]:
        """The intents' example phrasings, under their matcher ids (see :func:`intent_of`)."""
        return [
            Example(f"{INTENT_PREFIX}{spec.name}", text)
            for spec in self.specs.values()
            for text in spec.examples
        ]


@dataclass(frozen=True)
class IntentRecogniser:
    """A matcher fitted on the knowledge base's phrasings and the intents' examples, and its threshold."""

    matcher: Matcher
    threshold: float

    @classmethod
    def fit(
        cls,
        kind: str,
        entries: Sequence[Example],
        intents: Sequence[Example],
        previous: Matcher | None = None,
    ) -> IntentRecogniser | None:
        """Fit and calibrate one (blocking). ``kind`` is the FAQ's matcher: the recogniser is lexical for
        lexical, semantic for semantic and tuned (multilingual and quick to fit: no second fine-tuning);
        ``previous`` shares its model and caches. None without intent examples."""
        if not intents:
            return None
        matcher = make_matcher("lexical" if kind == "lexical" else "semantic", previous)
        examples = [*entries, *intents]
        matcher.fit(examples)
        # the intents' few example phrasings: the plain empirical rule, not the small-sample margin
        # (with a handful of examples per intent the margin would refuse every match)
        return cls(matcher, calibrate(matcher.spawn(), examples, confidence=0.5).threshold)

    def intent(self, text: str) -> str | None:
        """The intent ``text`` confidently means, or None (an entry, or not sure)."""
        match = self.matcher.match(text)
        best = match.best
        if best is None or match.confidence < self.threshold:
            return None
        return intent_of(best.entry_id)
