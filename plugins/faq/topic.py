"""Whether a question is about any of some knowledge-base entries at all: do they share a topic word?

The lexical matcher's "did you mean" floor is set on its answer confidence, which any question sharing
a few frequent n-grams with the knowledge base reaches ("do you sell kayak poles?" and "do you ship
internationally?" share "do you"). A choice is plausible only if the question shares a topic word with
it: a Latin-script word, or a pair of CJK characters, that is not one of the locale files' frequent
words ("do", "you", "你们", "怎么").
"""

from __future__ import annotations

from collections.abc import Iterable

from plugins.faq.knowledge import KnowledgeBase
from plugins.faq.text import is_cjk, tokens


def topic_units(text: str, frequent: frozenset[str]) -> set[str]:
    """The words (Latin-like scripts) and character pairs (CJK runs) of ``text`` that carry a topic."""
    units: set[str] = set()
    for token in tokens(text):
        if is_cjk(token):
            pairs = {token[i : i + 2] for i in range(len(token) - 1)}
            units |= {p for p in pairs if p not in frequent and not (p[0] in frequent and p[1] in frequent)}
        elif len(token) > 1 and not token.isdigit() and token not in frequent:
            units.add(token)
    return units


class TopicIndex:
    """The topic words of every entry of a knowledge base (its phrasings and its answers)."""

    def __init__(self, kb: KnowledgeBase, frequent: frozenset[str]) -> None:
        self.frequent = frequent
        self.units = {
            entry.id: set().union(
                *(topic_units(text, frequent) for text in (*entry.questions, *entry.answers.values()))
            )
            for entry in kb.entries.values()
        }

    def related(self, question: str, entry_ids: Iterable[str]) -> bool:
        """True if ``question`` shares a topic word with one of the entries."""
        asked = topic_units(question, self.frequent)
        return any(asked & self.units.get(entry_id, set()) for entry_id in entry_ids)
