"""What the widget's endpoints accept from the internet, checked at the edge before anything is stored.

Every check raises :class:`BadInput` with a one-line reason for the client (HTTP 400, or the status it
names) instead of letting a malformed value reach the database or the engine: JSON bodies are read whole
(a body may arrive in several TCP writes), decoded as strict UTF-8 and bounded in nesting depth; texts are
strings of valid Unicode without NUL; integers are bounded so that every database stores them.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from aiohttp import web

MAX_DEPTH = 16  # nesting of a JSON body or frame (the widget's are 1 or 2 deep)
MAX_ID = 2**53 - 1  # the largest id or watermark accepted: exact in JavaScript, fits every database
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadInput(ValueError):
    """A request (or WebSocket frame) the client got wrong; ``str()`` is the one-line reason."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, however many TCP writes it came in; :class:`BadInput` (413) beyond ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise BadInput(f"the body is too large (at most {limit} bytes)", status=413)
    data = bytearray()
    while True:
        chunk = await request.content.read(limit + 1 - len(data))
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > limit:
            raise BadInput(f"the body is too large (at most {limit} bytes)", status=413)


def parse_object(raw: bytes | str, what: str = "the body") -> dict[str, Any]:
    """A JSON object from ``raw`` (strict UTF-8, at most :data:`MAX_DEPTH` deep), or :class:`BadInput`."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput(f"{what} is not valid UTF-8") from None
    try:
        data = json.loads(raw or "{}")
    except RecursionError:
        raise BadInput(f"{what} is nested too deeply") from None
    except ValueError:
        raise BadInput(f"{what} is not JSON") from None
    if not isinstance(data, dict):
        raise BadInput(f"{what} must be a JSON object")
    if _depth(data) > MAX_DEPTH:
        raise BadInput(f"{what} is nested too deeply")
    return data


def _depth(value: Any) -> int:
    """How deeply containers nest in ``value`` (iterative: a deep value must not exhaust the stack)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def text_value(value: Any, name: str, *, single_line: bool = False) -> str:
    """``value`` as a text the database can store: a string of valid Unicode without NUL.

    ``None`` (left out) is an empty string; ``single_line`` also refuses every other control character
    (names, emails, ids).
    """
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadInput(f"{name} must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"{name} is not valid Unicode") from None
    if "\x00" in value:
        raise BadInput(f"{name} must not contain NUL characters")
    if single_line and _CONTROL.search(value):
        raise BadInput(f"{name} must not contain control characters")
    return value


def int_value(value: Any, name: str) -> int | None:
    """A JSON integer between 0 and :data:`MAX_ID`; ``None`` when left out."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise BadInput(f"{name} must be an integer between 0 and {MAX_ID}")
    return value


def int_param(query: Any, name: str) -> int:
    """A query parameter holding an integer between 0 and :data:`MAX_ID` (0 when left out)."""
    raw = query.get(name)
    if raw is None or raw == "":
        return 0
    if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit() or len(raw) > 16:
        raise BadInput(f"{name} must be an integer between 0 and {MAX_ID}")
    value = int(raw)
    if value > MAX_ID:
        raise BadInput(f"{name} must be an integer between 0 and {MAX_ID}")
    return value


def seconds_param(query: Any, name: str, most: float) -> float:
    """A query parameter holding a number of seconds, capped at ``most`` (0 when left out)."""
    raw = query.get(name)
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise BadInput(f"{name} must be a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise BadInput(f"{name} must be a number of seconds")
    return min(most, value)
