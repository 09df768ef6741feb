"""Agents' text (Markdown as typed in Element or Slack) to Telegram's HTML subset; everything else escaped.

Understood: ``**bold**``/``__bold__``, ``*italic*``/``_italic_``, ``~~strike~~``, ``||spoiler||``,
```` `code` ````, fenced code blocks (with a language), ``[label](https://link)`` and ``> quoted`` lines.
Every other ``<``, ``>`` and ``&`` is escaped, so the result always parses: tags are only ever emitted
in balanced pairs around a recursively converted inner text, and link targets are limited to
http(s), mailto and tg URLs.
"""

from __future__ import annotations

import html
import re

FENCE = re.compile(r"```([A-Za-z0-9_+-]*)\n?(.*?)```", re.DOTALL)
CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[([^\]\n]+)\]\(((?:https?://|mailto:|tg://)[^\s()<>]+)\)")
# (pattern, tag): the inner text must not start or end with whitespace; ``_`` only at word edges
INLINE: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", re.DOTALL), "b"),
    (re.compile(r"(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)", re.DOTALL), "b"),
    (re.compile(r"\|\|(?=\S)(.+?)(?<=\S)\|\|", re.DOTALL), "tg-spoiler"),
    (re.compile(r"~~(?=\S)(.+?)(?<=\S)~~", re.DOTALL), "s"),
    (re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])", re.DOTALL), "i"),
    (re.compile(r"(?<!\w)_(?=[^\s_])(.+?)(?<=[^\s_])_(?!\w)", re.DOTALL), "i"),
)


def escape(text: str) -> str:
    """``text`` with ``<``, ``>`` and ``&`` escaped for Telegram HTML."""
    return html.escape(text, quote=False)


def to_telegram_html(text: str) -> str:
    """The Telegram-HTML form of an agent's Markdown-ish ``text``."""
    out: list[str] = []
    position = 0
    for match in FENCE.finditer(text):
        out.append(_blocks(text[position : match.start()]))
        language, body = match.group(1), match.group(2)
        if language:
            out.append(f'<pre><code class="language-{language}">{escape(body)}</code></pre>')
        else:
            out.append(f"<pre>{escape(body)}</pre>")
        position = match.end()
    out.append(_blocks(text[position:]))
    return "".join(out)


def _blocks(text: str) -> str:
    """Quoted lines (``> ``) become blockquotes; other lines are inline-formatted."""
    lines = text.split("\n")
    out: list[str] = []
    index = 0
    while index < len(lines):
        if lines[index].startswith(">"):
            quoted: list[str] = []
            while index < len(lines) and lines[index].startswith(">"):
                quoted.append(lines[index][1:].removeprefix(" "))
                index += 1
            out.append(f"<blockquote>{_inline(chr(10).join(quoted))}</blockquote>")
        else:
            start = index
            while index < len(lines) and not lines[index].startswith(">"):
                index += 1
            out.append(_inline("\n".join(lines[start:index])))
    # blockquotes are block elements: the line breaks around them stay in the text
    return "\n".join(out)


def _inline(text: str) -> str:
    """Code spans first (their content is literal), then links and emphasis."""
    out: list[str] = []
    position = 0
    for match in CODE.finditer(text):
        out.append(_styled(text[position : match.start()]))
        out.append(f"<code>{escape(match.group(1))}</code>")
        position = match.end()
    out.append(_styled(text[position:]))
    return "".join(out)


def _styled(text: str) -> str:
    """The earliest link or emphasis wins; its inner text is converted recursively."""
    best: tuple[int, re.Match[str], str] | None = None
    for pattern, tag in ((LINK, "a"), *INLINE):
        match = pattern.search(text)
        if match is not None and (best is None or match.start() < best[0]):
            best = (match.start(), match, tag)
    if best is None:
        return escape(text)
    _, match, tag = best
    before, after = text[: match.start()], text[match.end() :]
    if tag == "a":
        href = html.escape(match.group(2), quote=True)
        inner = f'<a href="{href}">{_styled(match.group(1))}</a>'
    else:
        inner = f"<{tag}>{_styled(match.group(1))}</{tag}>"
    return escape(before) + inner + _styled(after)
