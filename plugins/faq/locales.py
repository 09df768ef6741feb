"""The FAQ bot's own words per language, one YAML file each (``plugins/faq/locales/<code>.yaml``).

A locale file gives what the bot says (prompts, choice lists, hand-over messages), the phrases it
recognises as whole messages (thanks, "that's not what I asked") and the intents that always go to a
person (patterns and example phrasings). Adding a language is adding a file: the shipped directory and
the plugin's ``locales_dir`` are read, a file there replacing a shipped one of the same code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from plugins.faq.text import normalise

SHIPPED = Path(__file__).parent / "locales"

HANDOVER_TEXTS = ("person", "complaint", "manager", "legal", "off_topic", "unanswered", "repeat")
MESSAGE_TEXTS = ("did_you_mean", "rephrase", "welcome", "next_steps")


class LocaleError(ValueError):
    """A locale file that cannot be used (its path and what is wrong)."""


@dataclass(frozen=True)
class Patterns:
    """Whole-message regular expressions, matched on the normalised text (and on it without spaces)."""

    compiled: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def of(cls, patterns: Iterable[str], where: str) -> Patterns:
        """Compile ``patterns``; a broken one raises :class:`LocaleError` naming ``where``."""
        out = []
        for pattern in patterns:
            try:
                out.append(re.compile(pattern))
            except re.error as exc:
                raise LocaleError(f"{where}: pattern {pattern!r}: {exc}") from None
        return cls(tuple(out))

    def __add__(self, other: Patterns) -> Patterns:
        return Patterns(self.compiled + other.compiled)

    def match(self, text: str) -> bool:
        """True if one pattern matches the whole of ``text`` (normalised, with or without spaces)."""
        clean = normalise(text)
        if not clean:
            return False
        bare = clean.replace(" ", "")
        return any(p.fullmatch(clean) or p.fullmatch(bare) for p in self.compiled)


@dataclass(frozen=True)
class Intent:
    """An intent that always goes to a person, in one language."""

    patterns: Patterns = field(default_factory=Patterns)
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class Locale:
    """Everything language-specific the FAQ bot needs for one language."""

    code: str
    name: str
    script: str
    words: frozenset[str]
    messages: Mapping[str, str]
    handover: Mapping[str, str]
    thanks: Patterns
    not_helped: Patterns
    intents: Mapping[str, Intent]

    def handover_text(self, reason: str) -> str:
        """The customer's hand-over message for ``reason`` (a custom intent gets the "person" text)."""
        return self.handover.get(reason) or self.handover["person"]


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LocaleError(f"{where}: a list of texts is expected")
    return list(value)


def parse_locale(data: Any, path: str) -> Locale:
    """Validate one locale file's content."""
    if not isinstance(data, dict):
        raise LocaleError(f"{path}: a mapping is expected")
    code = data.get("language")
    if not isinstance(code, str) or not re.fullmatch(r"[a-z]{2,3}", code):
        raise LocaleError(f"{path}: field 'language': a language code like 'en' is expected")
    messages = data.get("messages") or {}
    handover = messages.get("handover") or {}
    missing = [m for m in MESSAGE_TEXTS if not isinstance(messages.get(m), str)]
    missing += [f"handover.{h}" for h in HANDOVER_TEXTS if not isinstance(handover.get(h), str)]
    if missing:
        raise LocaleError(f"{path}: messages missing: {', '.join(missing)}")
    if "{choices}" not in messages["did_you_mean"]:
        raise LocaleError(f"{path}: messages.did_you_mean must contain {{choices}}")
    phrases = data.get("phrases") or {}
    intents: dict[str, Intent] = {}
    for name, spec in (data.get("intents") or {}).items():
        where = f"{path}: intents.{name}"
        if not isinstance(spec, dict):
            raise LocaleError(f"{where}: a mapping with patterns and examples is expected")
        intents[str(name)] = Intent(
            Patterns.of(_strings(spec.get("patterns"), where), where),
            tuple(_strings(spec.get("examples"), where)),
        )
    return Locale(
        code=code,
        name=str(data.get("name") or code),
        script=str(data.get("script") or "latin"),
        words=frozenset(normalise(w) for w in str(data.get("words") or "").split()),
        messages={m: messages[m] for m in MESSAGE_TEXTS},
        handover={str(k): str(v) for k, v in handover.items()},
        thanks=Patterns.of(_strings(phrases.get("thanks"), f"{path}: phrases.thanks"), path),
        not_helped=Patterns.of(_strings(phrases.get("not_helped"), f"{path}: phrases.not_helped"), path),
        intents=intents,
    )


def load_locales(extra_dir: str | None = None) -> dict[str, Locale]:
    """The shipped locales, then those of ``extra_dir`` (which add languages or replace shipped ones)."""
    found: dict[str, Locale] = {}
    for directory in [SHIPPED, *([Path(extra_dir)] if extra_dir else [])]:
        if not directory.is_dir():
            raise LocaleError(f"{directory}: not a directory")
        for path in sorted(directory.glob("*.yaml")):
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                raise LocaleError(f"{path}: {exc}") from None
            locale = parse_locale(data, str(path))
            found[locale.code] = locale
    return found
