"""The knowledge base file: load and validate (YAML or CSV), append entries, and notice edits.

YAML::

    language: en                    # the language of answers that do not say (optional)
    entries:
      - id: opening-hours
        questions: [When are you open?, What are your opening hours?, 你们几点开门?]
        answer: We are open Monday to Friday, 9:00-18:00.   # or {en: ..., zh: ...}
        tags: [store]
        links: [{label: Store locator, url: "https://example.com/stores"}]

CSV: a header ``id,question,answer,language,tags,links``; one row per phrasing, rows with the same id
add phrasings to one entry (the answer may be given on the first row only); tags are separated by
``;``, links are ``label=url`` separated by ``;``.

Every problem is reported with ``file:line``, the entry and the field; a file with problems is never
half-loaded.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from plugins.faq.matching import Example
from plugins.faq.text import is_cjk, tokens

_ID = re.compile(r"^[\w.:-]{1,80}$", re.UNICODE)


@dataclass(frozen=True)
class Link:
    """A link shown under an answer (the channels render it as text, or as a button where they can)."""

    label: str
    url: str


@dataclass(frozen=True)
class Entry:
    """One FAQ entry: several ways to ask, one answer (optionally per language)."""

    id: str
    questions: tuple[str, ...]
    answers: dict[str, str]  # language -> text; "" is the language-neutral answer
    language: str = ""
    tags: tuple[str, ...] = ()
    links: tuple[Link, ...] = ()

    def answer_for(self, language: str) -> str:
        """The answer in ``language`` if the entry has one, otherwise its default answer."""
        if language in self.answers:
            return self.answers[language]
        if "" in self.answers:
            return self.answers[""]
        if self.language in self.answers:
            return self.answers[self.language]
        return next(iter(self.answers.values()))

    def render(self, language: str) -> str:
        """The reply text: the answer, then one line per link."""
        lines = [self.answer_for(language)]
        lines += [f"• {link.label}: {link.url}" for link in self.links]
        return "\n".join(lines)

    @property
    def title(self) -> str:
        """How the entry is offered in a "did you mean" list: its first phrasing."""
        return self.questions[0]


@dataclass(frozen=True)
class KnowledgeBase:
    """A validated knowledge base: entries by id, in file order."""

    entries: dict[str, Entry]
    language: str = "en"
    source: str = ""

    def examples(self) -> list[Example]:
        """Every phrasing of every entry, for the matchers."""
        return [Example(e.id, q) for e in self.entries.values() for q in e.questions]


@dataclass
class Problem:
    """One thing wrong with a knowledge base file."""

    line: int | None
    message: str


class KnowledgeBaseError(ValueError):
    """The file could not be loaded; ``str()`` gives one line per problem, with file:line."""

    def __init__(self, path: str, problems: list[Problem], plugin: str = "faq") -> None:
        self.path = path
        self.problems = problems
        self.plugin = plugin
        lines = [
            f"plugin '{plugin}': knowledge base {path}{'' if p.line is None else f':{p.line}'}: {p.message}"
            for p in problems
        ]
        super().__init__("\n".join(lines))


def detect_language(text: str, default: str = "en") -> str:
    """A rough guess good enough to pick an answer's language: zh, ja or ko by script, else ``default``."""
    for token in tokens(text):
        if is_cjk(token):
            if re.search(r"[\u3040-\u30ff]", token):
                return "ja"
            if re.search(r"[\uac00-\ud7af]", token):
                return "ko"
            return "zh"
    return default


# -- validation shared by both formats ---------------------------------------------------------------


@dataclass
class _Draft:
    line: int | None
    id: Any = None
    questions: list[Any] = field(default_factory=list)
    answer: Any = None
    language: Any = None
    tags: Any = None
    links: Any = None
    lines: dict[str, int | None] = field(default_factory=dict)


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (str, int, float)):
        text = str(value).strip()
        return text or None
    return None


def _build(drafts: Iterable[_Draft], problems: list[Problem], default_language: str) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    for n, d in enumerate(drafts, 1):
        where = f"entry {d.id!r}" if _text(d.id) else f"entry #{n}"

        def bad(field_name: str, message: str, where: str = where, d: _Draft = d) -> None:
            problems.append(
                Problem(d.lines.get(field_name, d.line), f"{where}: field '{field_name}': {message}")
            )

        entry_id = _text(d.id)
        if entry_id is None:
            bad("id", "required (a short name such as 'opening-hours')")
        elif not _ID.match(entry_id):
            bad("id", "use letters, digits, '-', '_', '.' or ':' only (no spaces), at most 80 characters")
        elif entry_id in entries:
            bad("id", "this id is used by an earlier entry")
        questions = [_text(q) for q in d.questions]
        if not questions:
            bad("questions", "required: at least one way a customer would ask")
        elif any(q is None for q in questions):
            bad("questions", "every question must be non-empty text")
        answers: dict[str, str] = {}
        if isinstance(d.answer, dict):
            for lang, text in d.answer.items():
                clean = _text(text)
                if clean is None or not isinstance(lang, str):
                    bad("answer", f"the answer for language {lang!r} must be non-empty text")
                else:
                    answers[lang.strip().lower()] = clean
            if not d.answer:
                bad("answer", "required")
        else:
            clean = _text(d.answer)
            if clean is None:
                bad("answer", "required: the text the customer gets")
            else:
                answers[""] = clean
        language = _text(d.language) or ""
        tags: list[str] = []
        if d.tags is not None:
            if isinstance(d.tags, str):
                tags = [t.strip() for t in re.split(r"[;,]", d.tags) if t.strip()]
            elif isinstance(d.tags, list) and all(_text(t) for t in d.tags):
                tags = [str(t).strip() for t in d.tags]
            else:
                bad("tags", "a list of words")
        links: list[Link] = []
        for raw in d.links or []:
            if isinstance(raw, dict) and _text(raw.get("label")) and _text(raw.get("url")):
                links.append(Link(str(raw["label"]).strip(), str(raw["url"]).strip()))
            else:
                bad("links", "each link needs a label and a url")
        if d.links is not None and not isinstance(d.links, list):
            bad("links", "a list of {label, url}")
        if entry_id and entry_id not in entries and answers and questions and None not in questions:
            entries[entry_id] = Entry(
                id=entry_id,
                questions=tuple(q for q in questions if q),
                answers=answers,
                language=(language or default_language).lower(),
                tags=tuple(tags),
                links=tuple(links),
            )
    return entries


# -- YAML --------------------------------------------------------------------------------------------


def _yaml_problem(exc: yaml.YAMLError) -> Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return Problem(mark.line + 1 if mark is not None else None, f"invalid YAML: {problem}")


def _key_lines(node: yaml.MappingNode) -> dict[str, int]:
    return {str(k.value): k.start_mark.line + 1 for k, _v in node.value if isinstance(k, yaml.ScalarNode)}


def parse_yaml(text: str, path: str, plugin: str = "faq") -> KnowledgeBase:
    """Parse and validate a YAML knowledge base; raises :class:`KnowledgeBaseError` listing every problem."""
    problems: list[Problem] = []
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KnowledgeBaseError(path, [_yaml_problem(exc)], plugin) from None
    default_language = "en"
    items: list[Any]
    nodes: list[Any]
    if isinstance(data, dict) and isinstance(root, yaml.MappingNode):
        unknown = set(data) - {"entries", "language"}
        lines = _key_lines(root)
        for key in sorted(unknown, key=str):
            problems.append(
                Problem(
                    lines.get(str(key)), f"unknown top-level key {key!r} (expected 'entries', 'language')"
                )
            )
        default_language = _text(data.get("language")) or "en"
        items = data.get("entries") or []
        entries_node = next((v for k, v in root.value if getattr(k, "value", None) == "entries"), None)
        nodes = list(entries_node.value) if isinstance(entries_node, yaml.SequenceNode) else []
        if not isinstance(items, list):
            problems.append(Problem(lines.get("entries"), "'entries' must be a list of entries"))
            items = []
    elif isinstance(data, list) and isinstance(root, yaml.SequenceNode):
        items, nodes = data, list(root.value)
    elif data is None:
        items, nodes = [], []
    else:
        raise KnowledgeBaseError(
            path, [Problem(1, "expected a list of entries or a mapping with 'entries'")], plugin
        )
    drafts: list[_Draft] = []
    for i, item in enumerate(items):
        node = nodes[i] if i < len(nodes) else None
        line = node.start_mark.line + 1 if node is not None else None
        if not isinstance(item, dict):
            problems.append(
                Problem(line, f"entry #{i + 1}: expected a mapping with id, questions and answer")
            )
            continue
        lines = _key_lines(node) if isinstance(node, yaml.MappingNode) else {}
        for key in sorted(
            set(item) - {"id", "questions", "question", "answer", "language", "tags", "links"}, key=str
        ):
            problems.append(Problem(lines.get(str(key), line), f"entry #{i + 1}: unknown field {key!r}"))
        questions = item.get("questions", item.get("question"))
        if isinstance(questions, str):
            questions = [questions]
        if questions is not None and not isinstance(questions, list):
            problems.append(
                Problem(lines.get("questions", line), f"entry #{i + 1}: field 'questions': a list of texts")
            )
            questions = []
        draft_lines: dict[str, int | None] = dict(lines)
        draft_lines.setdefault("id", line)
        drafts.append(
            _Draft(
                line=line,
                id=item.get("id"),
                questions=list(questions or []),
                answer=item.get("answer"),
                language=item.get("language"),
                tags=item.get("tags"),
                links=item.get("links"),
                lines=draft_lines,
            )
        )
    entries = _build(drafts, problems, default_language)
    if problems:
        raise KnowledgeBaseError(path, problems, plugin)
    return KnowledgeBase(entries, default_language.lower(), path)


# -- CSV ---------------------------------------------------------------------------------------------

CSV_COLUMNS = ("id", "question", "answer", "language", "tags", "links")


def parse_csv(text: str, path: str, plugin: str = "faq") -> KnowledgeBase:
    """Parse and validate a CSV knowledge base (one phrasing per row; rows of one id form one entry)."""
    problems: list[Problem] = []
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    missing = {"id", "question"} - set(header)
    if missing:
        raise KnowledgeBaseError(
            path,
            [
                Problem(
                    1,
                    f"the header needs the columns {', '.join(sorted(missing))} (found: {', '.join(header) or 'nothing'})",
                )
            ],
            plugin,
        )
    drafts: dict[str, _Draft] = {}
    order: list[_Draft] = []
    for row in reader:
        line = reader.line_num
        clean = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
        if None in row:
            problems.append(
                Problem(line, "more cells than header columns (a comma inside an unquoted cell?)")
            )
            continue
        entry_id = clean.get("id", "")
        draft = drafts.get(entry_id) if entry_id else None
        if draft is None:
            draft = _Draft(line=line, id=entry_id or None, lines={"id": line})
            order.append(draft)
            if entry_id:
                drafts[entry_id] = draft
        if clean.get("question"):
            draft.questions.append(clean["question"])
        else:
            problems.append(Problem(line, f"entry {entry_id!r}: field 'question': empty"))
        for name in ("answer", "language", "tags"):
            value = clean.get(name)
            if not value:
                continue
            current = getattr(draft, name)
            if current is not None and current != value:
                problems.append(
                    Problem(
                        line, f"entry {entry_id!r}: field '{name}': differs from line {draft.lines.get(name)}"
                    )
                )
            else:
                setattr(draft, name, value)
                draft.lines[name] = line
        if clean.get("links"):
            parsed: list[dict[str, str]] = []
            for part in clean["links"].split(";"):
                label, sep, url = part.partition("=")
                parsed.append({"label": label.strip(), "url": url.strip()} if sep else {})
            draft.links = (draft.links or []) + parsed
            draft.lines["links"] = line
    entries = _build(order, problems, "en")
    if problems:
        raise KnowledgeBaseError(path, problems, plugin)
    return KnowledgeBase(entries, "en", path)


def load(path: str | os.PathLike[str], plugin: str = "faq") -> KnowledgeBase:
    """Load the knowledge base at ``path`` (``.csv`` is CSV, anything else YAML)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KnowledgeBaseError(str(p), [Problem(None, f"cannot read the file: {exc}")], plugin) from None
    if p.suffix.lower() == ".csv":
        return parse_csv(text, str(p), plugin)
    return parse_yaml(text, str(p), plugin)


def file_signature(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(mtime in ns, size) of the file, or None if it is missing: what the watcher compares."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


# -- editing -----------------------------------------------------------------------------------------


def _yaml_item(entry_id: str, questions: list[str], answer: str, indent: int) -> str:
    body = yaml.safe_dump(
        [{"id": entry_id, "questions": questions, "answer": answer}],
        allow_unicode=True,
        sort_keys=False,
        default_flow_style=False,
        width=10_000,
    )
    pad = " " * indent
    return "".join(pad + line if line.strip() else line for line in body.splitlines(keepends=True))


def add_to_file(
    path: str | os.PathLike[str], entry_id: str, questions: list[str], answer: str | None
) -> None:
    """Write a new entry (``answer`` given) or new phrasings of entry ``entry_id`` (``answer`` None).

    YAML files are edited in place so that comments and layout stay; the result is validated before
    it replaces the file (written to a temporary file, then renamed).
    """
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        header = next(csv.reader(io.StringIO(text)), [])
        columns = [h.strip().lower() for h in header]
        for i, question in enumerate(questions):
            row = {"id": entry_id, "question": question, "answer": answer if (answer and i == 0) else ""}
            writer.writerow([row.get(c, "") for c in columns])
        new = text + ("" if text.endswith("\n") or not text else "\n") + out.getvalue()
        parse_csv(new, str(p))
    else:
        new = _yaml_insert(text, entry_id, questions, answer)
        parse_yaml(new, str(p))
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, p)


def _yaml_insert(text: str, entry_id: str, questions: list[str], answer: str | None) -> str:
    root = yaml.compose(text, Loader=yaml.SafeLoader) if text.strip() else None
    entries_node: Any = None
    if isinstance(root, yaml.MappingNode):
        entries_node = next((v for k, v in root.value if getattr(k, "value", None) == "entries"), None)
    elif isinstance(root, yaml.SequenceNode):
        entries_node = root
    if answer is None:
        target = None
        for item in entries_node.value if isinstance(entries_node, yaml.SequenceNode) else []:
            values = (
                {getattr(k, "value", None): v for k, v in item.value}
                if isinstance(item, yaml.MappingNode)
                else {}
            )
            if getattr(values.get("id"), "value", None) == entry_id:
                target = values.get("questions")
        if isinstance(target, yaml.SequenceNode) and not target.flow_style and target.value:
            last = target.value[-1]
            indent = last.start_mark.column - 2
            lines = "".join(f"\n{' ' * indent}- {_yaml_scalar(q)}" for q in questions)
            return text[: last.end_mark.index] + lines + text[last.end_mark.index :]
        data = yaml.safe_load(text)
        items = data["entries"] if isinstance(data, dict) else data
        for item in items:
            if str(item.get("id")) == entry_id:
                existing = item.get("questions", item.pop("question", []))
                item["questions"] = ([existing] if isinstance(existing, str) else list(existing)) + questions
        return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=10_000)
    if isinstance(entries_node, yaml.SequenceNode) and not entries_node.flow_style and entries_node.value:
        last = entries_node.value[-1]
        indent = last.start_mark.column - 2
        end = last.end_mark.index
        item = _yaml_item(entry_id, questions, answer, indent)
        return text[:end].rstrip("\n") + "\n" + item + text[end:].lstrip("\n")
    data = yaml.safe_load(text) if text.strip() else None
    new = {"id": entry_id, "questions": questions, "answer": answer}
    if isinstance(data, dict):
        data.setdefault("entries", [])
        data["entries"] = [*(data["entries"] or []), new]
    elif isinstance(data, list):
        data.append(new)
    else:
        data = {"entries": [new]}
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=10_000)


def _yaml_scalar(text: str) -> str:
    return yaml.safe_dump(text, allow_unicode=True, width=10_000).removesuffix("\n...\n").strip()
