"""Telegram's ``parse_mode=HTML`` parser, as strict as the Bot API: text + entities, or the 400 it answers.

Only the documented tags are accepted (b, strong, i, em, u, ins, s, strike, del, span class="tg-spoiler",
tg-spoiler, a href, code, pre, blockquote, tg-emoji); every ``<`` must open or close one of them and every
``&`` must start one of the four named entities or a numeric one. Entity offsets and lengths are counted in
UTF-16 code units, as the Bot API does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

ENTITY_OF_TAG = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
TAG = re.compile(
    r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z-]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>]+))?)*)\s*>"
)
ATTR = re.compile(r"([a-zA-Z-]+)(?:\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>]+)))?")
ENTITY = re.compile(r"&(?:(lt|gt|amp|quot)|#(\d{1,7})|#[xX]([0-9a-fA-F]{1,6}));")


class EntityParseError(ValueError):
    """The text is not valid Telegram HTML; ``str()`` is the Bot API's description after "Bad Request: "."""


def utf16_len(text: str) -> int:
    """The length of ``text`` in UTF-16 code units (how the Bot API counts)."""
    return len(text.encode("utf-16-le")) // 2


@dataclass
class _Open:
    tag: str
    offset: int
    attrs: dict[str, str] = field(default_factory=dict)


def _unescape(raw: str, at: int) -> str:
    out: list[str] = []
    index = 0
    while index < len(raw):
        char = raw[index]
        if char != "&":
            out.append(char)
            index += 1
            continue
        match = ENTITY.match(raw, index)
        if match is None:
            raise EntityParseError(
                f"can't parse entities: Character '&' is reserved at byte offset {at + index}"
            )
        name, dec, hexa = match.groups()
        out.append(NAMED[name] if name else chr(int(dec) if dec else int(hexa, 16)))
        index = match.end()
    return "".join(out)


def parse_html(source: str) -> tuple[str, list[dict[str, Any]]]:
    """The visible text and the message entities of ``source``; raises :class:`EntityParseError`."""
    text: list[str] = []
    length = 0  # UTF-16 units emitted so far
    entities: list[dict[str, Any]] = []
    stack: list[_Open] = []
    index = 0
    while index < len(source):
        lt = source.find("<", index)
        chunk = source[index : len(source) if lt < 0 else lt]
        if chunk:
            plain = _unescape(chunk, len(source[:index].encode()))
            text.append(plain)
            length += utf16_len(plain)
        if lt < 0:
            break
        byte_offset = len(source[:lt].encode())
        match = TAG.match(source, lt)
        if match is None:
            raise EntityParseError(
                f"can't parse entities: Unexpected end of name token at byte offset {byte_offset}"
            )
        closing, name, attr_text = match.group(1) == "/", match.group(2).lower(), match.group(3)
        if name not in ENTITY_OF_TAG:
            kind = "end" if closing else "start"
            raise EntityParseError(
                f'can\'t parse entities: Unsupported {kind} tag "{name}" at byte offset {byte_offset}'
            )
        if closing:
            if not stack:
                raise EntityParseError(
                    f"can't parse entities: Unexpected end tag at byte offset {byte_offset}"
                )
            top = stack.pop()
            if top.tag != name:
                raise EntityParseError(
                    f'can\'t parse entities: Unmatched end tag at byte offset {byte_offset}, expected "</{top.tag}>", found "</{name}>"'
                )
            entity = _entity(top, length)
            if entity is not None:
                entities.append(entity)
        else:
            attrs = {
                m.group(1).lower(): _unescape(
                    next((g for g in m.groups()[1:] if g is not None), ""), byte_offset
                )
                for m in ATTR.finditer(attr_text)
            }
            if name == "span" and attrs.get("class") != "tg-spoiler":
                raise EntityParseError(
                    f'can\'t parse entities: Tag "span" must have class "tg-spoiler" at byte offset {byte_offset}'
                )
            if name == "a" and not attrs.get("href"):
                raise EntityParseError(
                    f'can\'t parse entities: Tag "a" must have href at byte offset {byte_offset}'
                )
            stack.append(_Open(name, length, attrs))
        index = match.end()
    if stack:
        raise EntityParseError(
            f"can't parse entities: Can't find end tag corresponding to start tag \"{stack[-1].tag}\""
        )
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(text), entities


def _entity(opened: _Open, end: int) -> dict[str, Any] | None:
    if end == opened.offset:
        return None  # empty entities are dropped
    kind = ENTITY_OF_TAG[opened.tag]
    entity: dict[str, Any] = {"type": kind, "offset": opened.offset, "length": end - opened.offset}
    if kind == "text_link":
        entity["url"] = opened.attrs["href"]
    if kind == "blockquote" and "expandable" in opened.attrs:
        entity["type"] = "expandable_blockquote"
    if kind == "code" and opened.attrs.get("class", "").startswith("language-"):
        entity["language"] = opened.attrs["class"].removeprefix("language-")
    return entity
