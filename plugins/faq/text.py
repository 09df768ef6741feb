"""Text normalisation and character n-grams that work without spaces between words (Chinese, Japanese).

Latin-script words give the n-grams of `` word `` (with its boundaries), as search engines' "char_wb"
analysers do; a run of CJK characters gives its character 1- to 3-grams, so "怎么退货" and "我想退货"
share "退货" although neither has a space in it.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

_CJK = (
    r"\u3040-\u30ff"  # hiragana, katakana
    r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
    r"\uac00-\ud7af"  # hangul syllables
)
_TOKEN = re.compile(rf"[{_CJK}]+|[^\W{_CJK}]+", re.UNICODE)
_CJK_RUN = re.compile(rf"[{_CJK}]+")


def normalise(text: str) -> str:
    """NFKC (full-width → half-width), lower case, punctuation dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_TOKEN.findall(text))


def tokens(text: str) -> list[str]:
    """Words of Latin-like scripts and runs of CJK characters, normalised."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


def is_cjk(token: str) -> bool:
    """True if ``token`` is a run of CJK characters."""
    return bool(_CJK_RUN.fullmatch(token))


def char_ngrams(text: str, latin: tuple[int, int] = (2, 4), cjk: tuple[int, int] = (1, 3)) -> Counter[str]:
    """Counts of the character n-grams of ``text`` (boundary-marked for words, plain for CJK runs)."""
    grams: Counter[str] = Counter()
    for token in tokens(text):
        if is_cjk(token):
            lo, hi = cjk
            padded = token
        else:
            lo, hi = latin
            padded = f" {token} "
        for n in range(lo, hi + 1):
            if len(padded) < n:
                if n == lo:
                    grams[padded] += 1
                break
            for i in range(len(padded) - n + 1):
                grams[padded[i : i + n]] += 1
    return grams
