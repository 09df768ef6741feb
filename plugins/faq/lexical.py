"""The default matcher: TF-IDF over character n-grams, pure Python (no dependency at all).

Each phrasing is a sparse vector of sublinear-TF × IDF weights, L2-normalised; a question is scored
against every phrasing sharing an n-gram with it through an inverted index, and an entry scores as its
best phrasing. Character n-grams need no word segmentation, so Chinese works as well as English.

N-grams found in more than ``stop_share`` (and at least ``stop_min``) of a large knowledge base's
phrasings (" th", "the", "you") are left out of the inverted index: they weigh little (low IDF) but make
up most of the postings a question would walk. The ``rescore`` best phrasings found through the other
n-grams get their common n-grams' share added back from a small per-phrasing table, so the final
scores are exact cosines while a 1,000-entry knowledge base is matched about six times faster.
"""

from __future__ import annotations

import math
from array import array
from collections import defaultdict
from collections.abc import Sequence

from plugins.faq.matching import Candidate, Example, Match, margin_confidence
from plugins.faq.text import char_ngrams


class LexicalMatcher:
    """TF-IDF character n-gram nearest phrasing; light, fast to fit, no model."""

    name = "lexical"

    def __init__(
        self, margin_weight: float = 2.0, stop_share: float = 0.05, stop_min: int = 500, rescore: int = 100
    ) -> None:
        self.margin_weight = margin_weight
        self.stop_share = stop_share
        self.stop_min = stop_min
        self.rescore = rescore
        self._common: list[dict[str, float]] = []
        self._entry_of: list[str] = []
        self._postings: dict[str, tuple[array[int], array[float]]] = {}
        self._idf: dict[str, float] = {}
        self._default_idf = 0.0

    def spawn(self) -> LexicalMatcher:
        """A new, unfitted matcher with the same settings."""
        return LexicalMatcher(self.margin_weight, self.stop_share, self.stop_min, self.rescore)

    def fit(self, examples: Sequence[Example]) -> None:
        """Index the phrasings."""
        grams = [char_ngrams(e.text) for e in examples]
        df: dict[str, int] = defaultdict(int)
        for g in grams:
            for gram in g:
                df[gram] += 1
        n = len(examples)
        idf = {gram: math.log((1 + n) / (1 + d)) + 1.0 for gram, d in df.items()}
        stop = max(self.stop_min, int(self.stop_share * n))
        postings: dict[str, tuple[array[int], array[float]]] = {}
        common: list[dict[str, float]] = []
        for index, g in enumerate(grams):
            common.append({})
            for gram, weight in self._weigh(g, idf).items():
                if df[gram] > stop:
                    common[index][gram] = weight
                    continue
                if gram not in postings:
                    postings[gram] = (array("i"), array("f"))
                ids, weights = postings[gram]
                ids.append(index)
                weights.append(weight)
        self._entry_of = [e.entry_id for e in examples]
        self._postings = postings
        self._common = common if any(common) else []
        self._idf = idf
        self._default_idf = math.log(1 + n) + 1.0

    @staticmethod
    def _weigh(grams: dict[str, int], idf: dict[str, float], default: float = 0.0) -> dict[str, float]:
        vector = {g: (1.0 + math.log(c)) * idf.get(g, default) for g, c in grams.items()}
        norm = math.sqrt(sum(w * w for w in vector.values())) or 1.0
        return {g: w / norm for g, w in vector.items() if w}

    def vector(self, text: str) -> dict[str, float]:
        """The normalised TF-IDF vector of ``text`` (n-grams never seen get the highest IDF)."""
        return self._weigh(char_ngrams(text), self._idf, self._default_idf)

    def match(self, text: str, k: int = 3) -> Match:
        """The ``k`` best entries by their best phrasing's cosine similarity."""
        scores: dict[int, float] = defaultdict(float)
        query = self.vector(text)
        common_query: dict[str, float] = {}
        for gram, weight in query.items():
            found = self._postings.get(gram)
            if found is None:
                if self._common:
                    common_query[gram] = weight
                continue
            for index, w in zip(*found, strict=True):
                scores[index] += weight * w
        if common_query:
            top = sorted(scores.items(), key=lambda item: -item[1])[: self.rescore]
            scores = defaultdict(float)
            for index, score in top:
                table = self._common[index]
                scores[index] = score + sum(w * table.get(g, 0.0) for g, w in common_query.items())
        best: dict[str, float] = {}
        for index, score in scores.items():
            entry = self._entry_of[index]
            if score > best.get(entry, 0.0):
                best[entry] = score
        ranked = sorted(best.items(), key=lambda item: -item[1])[:k]
        candidates = tuple(Candidate(entry, min(score, 1.0)) for entry, score in ranked)
        return Match(candidates, margin_confidence(candidates, self.margin_weight))


def cosine(a: dict[str, float], b: dict[str, float]) -> float:
    """Cosine similarity of two normalised sparse vectors."""
    if len(a) > len(b):
        a, b = b, a
    return sum(w * b.get(g, 0.0) for g, w in a.items())
