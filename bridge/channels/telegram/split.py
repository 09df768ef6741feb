"""Long texts cut into messages under Telegram's limit, at the best boundary available.

Boundaries, best first: a blank line, a line break, the end of a sentence, a space; a word longer than
a whole message is cut where it must be. Lengths are counted in UTF-16 code units, as the Bot API counts
them. A cut inside a fenced code block closes the fence and reopens it in the next part.
"""

from __future__ import annotations

import re

# Latin sentence ends need a space after them; CJK full stops (U+3002, U+FF01, U+FF1F) do not
SENTENCE_END = re.compile(r"[.!?\u2026][\"')\]\u00bb\u201d\u2019]*(?=\s)|[\u3002\uff01\uff1f]")
FENCE = "```"
FENCE_RESERVE = 8  # room for closing and reopening a code fence


def utf16_len(text: str) -> int:
    """The length of ``text`` in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _prefix_within(text: str, limit: int) -> int:
    """The largest index ``i`` with ``utf16_len(text[:i]) <= limit``."""
    if utf16_len(text) <= limit:
        return len(text)
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)


def _cut_point(window: str) -> int:
    """Where to end a part taken from ``window`` (the text that would fit)."""
    floor = len(window) // 3  # a boundary this early would make many tiny parts: look for a later one
    for separator in ("\n\n", "\n"):
        at = window.rfind(separator)
        if at > floor:
            return at
    ends = [m.end() for m in SENTENCE_END.finditer(window)]
    if ends and ends[-1] > floor:
        return ends[-1]
    at = max(window.rfind(" "), window.rfind("\t"))
    if at > 0:
        return at
    return len(window)


def split_text(text: str, limit: int) -> list[str]:
    """``text`` as parts of at most ``limit`` UTF-16 units each (one part if it fits)."""
    if utf16_len(text) <= limit:
        return [text]
    budget = max(limit - FENCE_RESERVE, 1)
    parts: list[str] = []
    rest = text
    reopen = ""
    while rest:
        rest = reopen + rest
        if utf16_len(rest) <= limit:
            parts.append(rest)
            break
        window = rest[: _prefix_within(rest, budget)]
        cut = _cut_point(window)
        part, rest = rest[:cut].rstrip(), rest[cut:].lstrip()
        reopen = ""
        if part.count(FENCE) % 2 == 1:  # the cut fell inside a code block
            part += "\n" + FENCE
            reopen = FENCE + "\n"
        if part.strip():
            parts.append(part)
    return parts
