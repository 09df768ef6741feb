"""Names people choose (display names, file names), made safe to show in someone else's interface.

A customer picks their display name and their files' names: relaydesk puts them in room names,
topics, ghost users' profiles, cards and file captions. :func:`clean_display_name` and
:func:`clean_file_name` drop what could disguise them there: control characters, bidirectional
overrides and isolates (U+202E turns ``exe.pdf`` into ``fdp.exe`` on screen), zero-width and other
invisible format characters, line breaks. HTML is not interpreted: a name like ``<b>Bob</b>`` stays
those characters, and whoever builds HTML from a name escapes it (``html.escape``).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["clean_display_name", "clean_file_name"]

_KEEP_FORMAT = {"\u200d"}  # zero-width joiner: part of emoji sequences (family, flags with tags)
_SPACE_CATEGORIES = {"Zl", "Zp", "Zs"}
_DROP_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}
_SPACES = re.compile(r"\s+")


def _visible(text: str) -> str:
    out: list[str] = []
    for char in text:
        category = unicodedata.category(char)
        if char in "\t\n\r" or category in _SPACE_CATEGORIES:
            out.append(" ")
        elif category not in _DROP_CATEGORIES or char in _KEEP_FORMAT:
            out.append(char)
    return _SPACES.sub(" ", "".join(out)).strip()


def clean_display_name(name: str | None, *, fallback: str = "", max_length: int = 80) -> str:
    """``name`` without control, bidi-override or invisible characters, on one line, at most
    ``max_length`` characters; ``fallback`` when nothing visible is left."""
    cleaned = _visible(name or "")[:max_length].rstrip()
    return cleaned or fallback


def clean_file_name(name: str | None, *, fallback: str = "file", max_length: int = 120) -> str:
    """A file name to show: :func:`clean_display_name` rules, no directories, not hidden (no leading dot)."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _visible(base).lstrip(".").strip()
    if len(cleaned) > max_length:  # keep the extension, which says what the file is
        _stem, dot, ext = cleaned.rpartition(".")
        keep = ext if dot and 0 < len(ext) <= 10 else ""
        cleaned = (
            cleaned[: max_length - len(keep) - 1].rstrip() + "." + keep if keep else cleaned[:max_length]
        )
    return cleaned or fallback
