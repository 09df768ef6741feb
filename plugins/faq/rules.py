"""Picking a "did you mean" choice: "2", "第二个", "0" or "none of these" (for a person)."""

from __future__ import annotations

import re

from plugins.faq.text import normalise

_CHINESE_ORDINALS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5}


def picked_choice(text: str, count: int) -> int | None:
    """The 1-based choice a reply picks ("2", "２", "#2", "第二个", "2." ...), 0 for "none of these", else None."""
    clean = normalise(text)
    match = re.fullmatch(r"(?:#|no |number |option )?(\d)", clean)
    if match:
        number = int(match.group(1))
        return number if number <= count else None
    match = re.fullmatch(r"第?([一二两三四五])(?:个|条)?", clean.replace(" ", ""))
    if match:
        number = _CHINESE_ORDINALS[match.group(1)]
        return number if number <= count else None
    if clean in {"none", "none of these", "none of them", "no", "都不是", "都不对", "不是"}:
        return 0
    return None
