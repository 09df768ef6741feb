"""How many SMS parts a text costs: GSM-7 160 characters (153 per part when concatenated); once any
character is outside GSM-7 (most emoji, Chinese, Cyrillic) UCS-2, 70 UTF-16 units (67 per part)."""

from __future__ import annotations

from dataclasses import dataclass

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")  # two septets each (escape + character)


@dataclass(frozen=True)
class SegmentCount:
    """A text's cost: its encoding, the parts it takes, and the first character that forced UCS-2."""

    encoding: str  # "GSM-7" or "UCS-2"
    parts: int
    first_wide: str = ""


def count(text: str) -> SegmentCount:
    """The segments ``text`` takes as one SMS (concatenated when longer than one part)."""
    wide = next((c for c in text if c not in GSM7_BASIC and c not in GSM7_EXTENSION), "")
    if not wide:
        septets = sum(2 if c in GSM7_EXTENSION else 1 for c in text)
        return SegmentCount("GSM-7", 1 if septets <= 160 else -(-septets // 153))
    units = len(text.encode("utf-16-le")) // 2
    return SegmentCount("UCS-2", 1 if units <= 70 else -(-units // 67), wide)
