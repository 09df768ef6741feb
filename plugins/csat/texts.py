"""What the survey says, per language (English and Chinese built in; more in plugins.yaml), and how an
answer is read: ``4``, ``4/5``, ``4 stars``, ``⭐⭐⭐⭐``, full-width digits, ``四``, ``4分``."""

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
    ),
}

_DIGITS = {chr(0xFF10 + n): n for n in range(1, 6)} | {"一": 1, "二": 2, "三": 3, "四": 4, "五": 5}
_ANSWER = re.compile(r"([1-5\uff11-\uff15一二三四五])\s*(?:/\s*5|out of 5|stars?|分|星)?", re.IGNORECASE)
_STARS = re.compile(r"(?:⭐|★|\*){1,5}")


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
