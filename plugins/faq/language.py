"""The customer's language as a property of the conversation, not a guess per message.

The first message with a signal sets it (or the channel's locale, when the channel gives one); numbers,
emoji and short replies keep it; only a whole sentence clearly in another language changes it. A
language is recognised by its script (Han, kana, hangul, Latin...), and languages sharing a script by
their frequent words, both taken from the locale files (:mod:`plugins.faq.locales`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from plugins.faq.locales import Locale

_SCRIPTS = {
    "kana": re.compile(r"[\u3040-\u30ff]"),
    "hangul": re.compile(r"[\uac00-\ud7af]"),
    "han": re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"),
    "cyrillic": re.compile(r"[\u0400-\u04ff]"),
    "arabic": re.compile(r"[\u0600-\u06ff]"),
    "latin": re.compile(r"[a-zà-ÿ]"),
}
_WORD = re.compile(r"[^\W\d_]+")
_CLEAR_WORDS = 3  # Latin-like scripts: words in a whole sentence
_CLEAR_CHARS = 4  # scripts written without spaces: characters in a whole sentence


@dataclass(frozen=True)
class Guess:
    """The language a message is written in, and whether it is a clear, whole sentence of it."""

    language: str
    clear: bool


def _script_counts(text: str) -> dict[str, int]:
    """Letters per script (kana counts as Japanese even among Han characters)."""
    lowered = unicodedata.normalize("NFKC", text).lower()
    counts = {name: len(pattern.findall(lowered)) for name, pattern in _SCRIPTS.items()}
    if counts["kana"]:
        counts["kana"] += counts.pop("han")
    return {name: n for name, n in counts.items() if n}


def guess(text: str, locales: Mapping[str, Locale], default: str) -> Guess | None:
    """The language of ``text`` among ``locales``, or None when it carries no signal (numbers, emoji)."""
    counts = _script_counts(text)
    if not counts:
        return None
    words = _WORD.findall(unicodedata.normalize("NFKC", text).lower())
    spaced = {"latin", "cyrillic", "arabic"}
    # a script written with spaces counts by words, the others by characters
    weight = {
        s: (sum(1 for w in words if _SCRIPTS[s].search(w)) * 2 if s in spaced else n)
        for s, n in counts.items()
    }
    script = max(weight, key=lambda s: weight[s])
    candidates = [loc for loc in locales.values() if loc.script == script]
    if not candidates:
        return None
    if len(candidates) == 1:
        chosen = candidates[0]
    else:
        hits = {loc.code: sum(1 for w in words if w in loc.words) for loc in candidates}
        chosen = max(candidates, key=lambda loc: (hits[loc.code], loc.code == default))
    if script in spaced:
        size = sum(1 for w in words if _SCRIPTS[script].search(w))
        clear = size >= _CLEAR_WORDS
    else:
        clear = counts[script] >= _CLEAR_CHARS
    mixed = sum(v for s, v in weight.items() if s != script)
    return Guess(chosen.code, clear and weight[script] >= 3 * mixed)


def channel_language(locale: str | None, locales: Mapping[str, Locale]) -> str | None:
    """The language of a channel locale ("zh-CN", "en_GB", "de") when a locale file exists for it."""
    if not locale:
        return None
    code = re.split(r"[-_]", locale.strip().lower())[0]
    return code if code in locales else None


def conversation_language(
    current: str | None, text: str, locales: Mapping[str, Locale], default: str, channel: str | None = None
) -> str | None:
    """The conversation's language after the customer wrote ``text`` (see the module docstring).

    None while nothing said it yet (a first message of digits or emoji on a channel without a locale).
    """
    start = current or channel_language(channel, locales)
    found = guess(text, locales, start or default)
    if found is None:
        return start
    if start is None or (found.clear and found.language != start):
        return found.language
    return start
