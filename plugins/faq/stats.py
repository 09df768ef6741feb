"""What the FAQ plugin did: answer and hand-over rates, hits per entry, and the "hot" unanswered questions.

Counts are kept in memory since the plugin started (one process); they are exported on ``/metrics`` by
:class:`FaqCollector` and summarised by ``!faq stats`` in the room. Unanswered questions are grouped by
character n-gram similarity, so that "do you ship to Canada?" and "shipping to canada" count as one
question an admin should add.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from plugins.faq.lexical import cosine
from plugins.faq.text import char_ngrams

HANDOVER_REASONS = {
    "person": "asked for a person",
    "complaint": "complaint",
    "manager": "asked for a manager",
    "legal": "legal threat",
    "off_topic": "not in the knowledge base",
    "unanswered": "not helped after several tries",
    "repeat": "would have repeated a reply",
}


def reason_label(reason: str) -> str:
    """What agents read for a hand-over reason (a custom intent: its name)."""
    return HANDOVER_REASONS.get(reason, reason)


@dataclass
class HotQuestion:
    """A group of similar unanswered questions."""

    example: str
    count: int
    variants: list[str] = field(default_factory=list)


def _vector(text: str) -> dict[str, float]:
    grams = char_ngrams(text)
    norm = sum(c * c for c in grams.values()) ** 0.5 or 1.0
    return {g: c / norm for g, c in grams.items()}


@dataclass
class FaqStats:
    """Counters of one FAQ plugin instance (thread-safe: the collector reads them from the scrape)."""

    keep_unanswered: int = 500
    since: datetime = field(default_factory=lambda: datetime.now(UTC))
    questions: int = 0
    answered: int = 0
    suggested: int = 0
    conversations: int = 0
    handed_over: Counter[str] = field(default_factory=Counter)
    hits: Counter[str] = field(default_factory=Counter)
    unanswered: deque[str] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def question(self, *, new_conversation: bool) -> None:
        """A customer message reached the FAQ."""
        with self._lock:
            self.questions += 1
            self.conversations += int(new_conversation)

    def answer(self, entry_id: str) -> None:
        """The FAQ answered with ``entry_id``."""
        with self._lock:
            self.answered += 1
            self.hits[entry_id] += 1

    def suggest(self, text: str) -> None:
        """The FAQ offered choices instead of answering ``text``."""
        with self._lock:
            self.suggested += 1
        self.not_answered(text)

    def not_answered(self, text: str) -> None:
        """Remember a question the FAQ could not answer (for the hot questions)."""
        with self._lock:
            self.unanswered.append(text)
            while len(self.unanswered) > self.keep_unanswered:
                self.unanswered.popleft()

    def hand_over(self, reason: str) -> None:
        """The FAQ handed the conversation to the agents for ``reason`` (HANDOVER_REASONS, or a custom intent)."""
        with self._lock:
            self.handed_over[reason] += 1

    @property
    def answer_rate(self) -> float:
        """Answered questions over questions seen."""
        return self.answered / self.questions if self.questions else 0.0

    @property
    def handover_rate(self) -> float:
        """Handed-over conversations over conversations seen."""
        return sum(self.handed_over.values()) / self.conversations if self.conversations else 0.0

    def hot_questions(self, limit: int = 5, similarity: float = 0.5) -> list[HotQuestion]:
        """Unanswered questions grouped by similarity, the biggest groups first."""
        with self._lock:
            texts = list(self.unanswered)
        groups: list[tuple[dict[str, float], HotQuestion]] = []
        for text in texts:
            vector = _vector(text)
            best = max(groups, key=lambda g: cosine(vector, g[0]), default=None)
            if best is not None and cosine(vector, best[0]) >= similarity:
                best[1].count += 1
                if text not in best[1].variants and text != best[1].example:
                    best[1].variants.append(text)
            else:
                groups.append((vector, HotQuestion(text, 1)))
        ranked = sorted((g[1] for g in groups), key=lambda h: -h.count)
        return ranked[:limit]


class FaqCollector:
    """Exports a plugin's :class:`FaqStats` to Prometheus, read at scrape time."""

    def __init__(
        self, instance: str, stats: Callable[[], FaqStats], info: Callable[[], dict[str, float]]
    ) -> None:
        self.instance = instance
        self._stats = stats
        self._info = info

    def collect(self) -> Iterator[Metric]:
        """The metric families of the plugin instance."""
        s = self._stats()
        labels = ["plugin"]
        for name, doc, value in [
            ("relaydesk_faq_questions", "Customer messages the FAQ looked at", s.questions),
            ("relaydesk_faq_answered", "Questions the FAQ answered", s.answered),
            ("relaydesk_faq_suggested", "Questions answered with 'did you mean' choices", s.suggested),
            ("relaydesk_faq_conversations", "Conversations the FAQ saw", s.conversations),
        ]:
            family = CounterMetricFamily(name, doc, labels=labels)
            family.add_metric([self.instance], value)
            yield family
        handovers = CounterMetricFamily(
            "relaydesk_faq_handovers", "Conversations handed to agents, by reason", labels=[*labels, "reason"]
        )
        for reason in dict.fromkeys([*HANDOVER_REASONS, *sorted(s.handed_over)]):
            handovers.add_metric([self.instance, reason], s.handed_over.get(reason, 0))
        yield handovers
        hits = CounterMetricFamily(
            "relaydesk_faq_entry_hits", "Answers given, per entry", labels=[*labels, "entry"]
        )
        for entry, count in sorted(s.hits.items()):
            hits.add_metric([self.instance, entry], count)
        yield hits
        ratios: list[tuple[str, str, float]] = [
            ("relaydesk_faq_answer_ratio", "Answered questions over questions seen", s.answer_rate),
            (
                "relaydesk_faq_handover_ratio",
                "Handed-over conversations over conversations seen",
                s.handover_rate,
            ),
            (
                "relaydesk_faq_unanswered_kept",
                "Unanswered questions kept for the hot-question report",
                len(s.unanswered),
            ),
        ]
        for name, doc, ratio in ratios:
            gauge = GaugeMetricFamily(name, doc, labels=labels)
            gauge.add_metric([self.instance], ratio)
            yield gauge
        for key, info_value in self._info().items():
            gauge = GaugeMetricFamily(
                f"relaydesk_faq_{key}", f"FAQ knowledge base: {key.replace('_', ' ')}", labels=labels
            )
            gauge.add_metric([self.instance], info_value)
            yield gauge
