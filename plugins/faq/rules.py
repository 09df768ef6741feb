"""Conversation rules that do not depend on matching: asking for a person, picking a "did you mean" choice."""

from __future__ import annotations

import re
from collections.abc import Sequence

from plugins.faq.text import is_cjk, normalise, tokens

DEFAULT_HANDOVER_PHRASES = (
    "human",
    "agent",
    "real person",
    "a person",
    "operator",
    "representative",
    "customer service",
    "talk to someone",
    "speak to someone",
    "人工",
    "人工服务",
    "转人工",
    "客服",
    "真人",
)

_CHINESE_ORDINALS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5}


class HandoverPhrases:
    """Recognises a request for a person: whole words for Latin scripts, substrings for CJK phrases."""

    def __init__(self, phrases: Sequence[str]) -> None:
        latin = [normalise(p) for p in phrases if p.strip() and not any(is_cjk(t) for t in tokens(p))]
        self._cjk = [normalise(p).replace(" ", "") for p in phrases if any(is_cjk(t) for t in tokens(p))]
        self._latin = (
            re.compile(
                r"(?:^| )(?:"
                + "|".join(re.escape(p) for p in sorted(latin, key=len, reverse=True))
                + r")s?(?: |$)"
            )
            if latin
            else None
        )

    def asks_for_person(self, text: str) -> bool:
        """True if ``text`` contains one of the phrases."""
        clean = normalise(text)
        if self._latin is not None and self._latin.search(clean):
            return True
        squeezed = clean.replace(" ", "")
        return any(p in squeezed for p in self._cjk)


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
