"""What the survey says, per language (English and Chinese built in; more in plugins.yaml), and how an
answer is read: ``4``, ``4/5``, ``4 stars``, ``⭐⭐⭐⭐``, full-width digits, ``四``, ``4分``, or a pressed button
(:func:`pressed_score`)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict


class SurveyTexts(BaseModel):
    """The survey's texts in one language."""

    model_config = ConfigDict(extra="forbid")
    question: str
    scale: str  # the numbered choices, for channels without buttons
    ask_comment: str
    thanks: str
    nps_question: str = "How likely are you to recommend us to a friend? Reply with a number from 0 to 10."
    nps_scale: str = "0 not at all likely … 10 extremely likely"
    menu: str = "Rate"  # the label of the button that opens the scores, where the channel needs one

    def labels(self) -> list[str]:
        """The five scores' button titles: the parts of ``scale`` (``1 very unhappy``), else the digits."""
        parts = [p.strip() for p in self.scale.split("·")]
        return parts if len(parts) == 5 and all(parts) else [str(n) for n in range(1, 6)]


BUILT_IN: dict[str, SurveyTexts] = {
    "en": SurveyTexts(
        question="How happy are you with the help you got? Reply with a number from 1 to 5.",
        scale="1 very unhappy · 2 unhappy · 3 okay · 4 happy · 5 very happy",
        ask_comment="Thank you! Anything you would like to add? Just write it here (optional).",
        thanks="Thank you for your feedback!",
    ),
    "zh": SurveyTexts(
        question="您对本次服务满意吗？请回复 1 到 5 的数字。",  # noqa: RUF001
        scale="1 非常不满意 · 2 不满意 · 3 一般 · 4 满意 · 5 非常满意",
        ask_comment="谢谢！还有什么想补充的吗？直接在这里回复即可（可选）。",  # noqa: RUF001
        thanks="感谢您的反馈！",  # noqa: RUF001
        nps_question="您有多大可能向朋友推荐我们？请回复 0 到 10 的数字。",  # noqa: RUF001
        nps_scale="0 完全不可能 … 10 非常可能",
        menu="评分",
    ),
}

_DIGITS = {chr(0xFF10 + n): n for n in range(1, 6)} | {"一": 1, "二": 2, "三": 3, "四": 4, "五": 5}
_ANSWER = re.compile(r"([1-5\uff11-\uff15一二三四五])\s*(?:/\s*5|out of 5|stars?|分|星)?", re.IGNORECASE)
_STARS = re.compile(r"(?:⭐|★|\*){1,5}")


_NPS = re.compile(r"(10|[0-9]|\uff11\uff10|[\uff10-\uff19])\s*(?:/\s*10|out of 10|分)?", re.IGNORECASE)


def parse_nps(text: str) -> int | None:
    """The 0-10 likelihood a reply gives (NPS), or None when the reply is not (only) an answer."""
    match = _NPS.fullmatch(text.strip().rstrip(".!。！ "))  # noqa: RUF001
    if match is None:
        return None
    digits = "".join(chr(ord(c) - 0xFEE0) if "\uff10" <= c <= "\uff19" else c for c in match.group(1))
    return int(digits)


def parse_score(text: str) -> int | None:
    """The 1-5 score a reply gives, or None when the reply is not (only) an answer."""
    cleaned = text.replace("\ufe0f", "").strip().rstrip(".!。！ ")  # noqa: RUF001
    if _STARS.fullmatch(cleaned):
        return len(cleaned)
    match = _ANSWER.fullmatch(cleaned)
    if match is None:
        return None
    digit = match.group(1)
    return _DIGITS.get(digit) or int(digit)


def pressed_score(choice: str | None, scale: str) -> int | None:
    """The score of a pressed survey button (choice id ``csat:4`` or ``nps:9``), else None."""
    prefix, _, value = (choice or "").partition(":")
    if prefix != scale or not value.isdigit():
        return None
    score = int(value)
    return score if (1 <= score <= 5 if scale == "csat" else 0 <= score <= 10) else None
