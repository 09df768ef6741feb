"""How close a question comes to the nearest phrasing of one entry: a confidence signal next to the classifier's.

A softmax classifier over the entries says which entry a question is most like, relative to the others; it
says little about whether the question is like any of them at all. A question that is close to one of the
chosen entry's own phrasings (cosine of the embeddings) is far more often answered correctly than one the
classifier only prefers because the other entries are even further away. The semantic and tuned matchers
add ``weight`` × this similarity to their margin confidence (on held-out training phrasings of BANKING77 and
CLINC150's validation split this let the calibrated threshold answer 4–7 points more questions correctly at
the same share of wrong answers).

Only the phrasings of the entry the classifier ranked first are compared, so a question costs a few dot
products however large the knowledge base is. The same similarity over the phrasings of all offered
entries feeds the choice confidence ("did you mean", see :func:`plugins.faq.matching.choice_confidence`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from plugins.faq.matching import Candidate, Match, choice_confidence, margin_confidence


class PhrasingIndex:
    """L2-normalised phrasing embeddings grouped by entry (entries numbered as the classifier numbers them)."""

    def __init__(self, embeddings: Any, entry_of_row: Sequence[int], entries: int) -> None:
        import numpy as np

        rows = np.asarray(embeddings, dtype=np.float32)
        if len(rows):
            norms = np.linalg.norm(rows, axis=1, keepdims=True)
            rows = rows / np.maximum(norms, 1e-12)
        order = np.argsort(np.asarray(entry_of_row, dtype=np.int64), kind="stable")
        self._rows = np.ascontiguousarray(rows[order]) if len(rows) else rows
        counts = np.bincount(np.asarray(entry_of_row, dtype=np.int64), minlength=entries)
        self._start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def best_similarity_among(self, entries: Sequence[int], query: Any) -> float:
        """The highest cosine between ``query`` and a phrasing of any of ``entries``; 0 if none has one."""
        return max((self.best_similarity(entry, query) for entry in entries), default=0.0)

    def best_similarity(self, entry: int, query: Any) -> float:
        """The highest cosine between ``query`` (an embedding) and a phrasing of ``entry``; 0 if it has none."""
        import numpy as np

        rows = self._rows[self._start[entry] : self._start[entry + 1]]
        if not len(rows):
            return 0.0
        vector = np.asarray(query, dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        if norm == 0.0:
            return 0.0
        return float((rows @ vector).max()) / norm


def classifier_match(
    logits: Any,
    entries: Sequence[str],
    k: int,
    *,
    margin_weight: float,
    phrasings: PhrasingIndex | None,
    query: Any,
    phrasing_weight: float,
    choice_weight: float,
) -> Match:
    """The ``k`` most probable of ``entries`` under a softmax over ``logits``, with the confidences.

    The confidence is the margin confidence plus ``phrasing_weight`` × the cosine between ``query`` and the
    best entry's nearest phrasing; the choice confidence (when ``choice_weight`` is set) adds up the
    candidates' probabilities plus ``choice_weight`` × the cosine to the nearest phrasing of any candidate.
    """
    import numpy as np

    shifted = np.asarray(logits) - np.max(logits)
    probs = np.exp(shifted)
    probs /= probs.sum()
    top = np.argsort(-probs)[:k]
    candidates = tuple(Candidate(entries[i], float(probs[i])) for i in top)
    confidence = margin_confidence(candidates, margin_weight)
    choice = None
    if phrasings is not None:
        if phrasing_weight:
            confidence += phrasing_weight * phrasings.best_similarity(int(top[0]), query)
        if choice_weight:
            similarity = phrasings.best_similarity_among([int(i) for i in top], query)
            choice = choice_confidence(candidates, similarity, choice_weight)
    return Match(candidates, confidence, choice)
