"""Agents' Markdown to Telegram HTML, and long texts cut at the limit: checked against the emulator's
parser, which is as strict as the Bot API's."""

from __future__ import annotations

import pytest

from bridge.channels.telegram.formatting import to_telegram_html
from bridge.channels.telegram.inbound import start_attributes
from bridge.channels.telegram.split import split_text, utf16_len
from tests.emulators.telegram_html import EntityParseError, parse_html


def visible(markdown: str) -> tuple[str, list[tuple[str, str]]]:
    """What the customer sees: the text and each entity as (type, covered text)."""
    text, entities = parse_html(to_telegram_html(markdown))
    units = text.encode("utf-16-le")
    covered = [
        (e["type"], units[2 * e["offset"] : 2 * (e["offset"] + e["length"])].decode("utf-16-le"))
        for e in entities
    ]
    return text, covered


@pytest.mark.parametrize(
    ("markdown", "text", "entities"),
    [
        ("plain <b>not bold</b> & 1 < 2 > 0", "plain <b>not bold</b> & 1 < 2 > 0", []),
        ("**bold** and __also__", "bold and also", [("bold", "bold"), ("bold", "also")]),
        (
            "*it* _it_ ~~gone~~ ||secret||",
            "it it gone secret",
            [("italic", "it"), ("italic", "it"), ("strikethrough", "gone"), ("spoiler", "secret")],
        ),
        ("snake_case_name and 2*3*4", "snake_case_name and 2*3*4", []),
        ("**bold _nested_ text**", "bold nested text", [("bold", "bold nested text"), ("italic", "nested")]),
        ("`a **b** <c>`", "a **b** <c>", [("code", "a **b** <c>")]),
        ('[docs](https://x.example/?q="1"&r=2)', "docs", [("text_link", "docs")]),
        ("[bad](javascript:alert(1))", "[bad](javascript:alert(1))", []),
        ("**unclosed and <tag>", "**unclosed and <tag>", []),
        ("> quoted **bold**\nafter", "quoted bold\nafter", [("blockquote", "quoted bold"), ("bold", "bold")]),
        ("emoji 😀 **after**", "emoji 😀 after", [("bold", "after")]),
    ],
)
def test_markdown_becomes_valid_telegram_html(
    markdown: str, text: str, entities: list[tuple[str, str]]
) -> None:
    assert visible(markdown) == (text, entities)


def test_any_text_at_all_converts_to_html_telegram_accepts() -> None:
    nasty = [
        "<<>>&&;",
        "**_~~||`",
        "&amp; &lt;",
        "[x](https://a.b/<script>)",
        "```\n<pre>\n",
        "a__b__c **",
        "> > >",
    ]
    for sample in nasty:
        parse_html(to_telegram_html(sample))  # raises on anything Telegram would refuse


def test_the_emulator_refuses_what_telegram_refuses() -> None:
    for bad in ("<script>x</script>", "<b>open", "<b><i>x</b></i>", "a & b", '<span class="x">s</span>'):
        with pytest.raises(EntityParseError):
            parse_html(bad)


def test_a_long_text_is_cut_at_paragraphs_then_lines_then_sentences() -> None:
    paragraph = "A sentence here. " * 100
    parts = split_text(f"{paragraph.strip()}\n\n{paragraph.strip()}", 2000)
    assert parts == [paragraph.strip(), paragraph.strip()]
    sentences = " ".join(f"Step {n} is done." for n in range(400))
    parts = split_text(sentences, 1000)
    assert all(utf16_len(p) <= 1000 and p.endswith(".") for p in parts)
    assert " ".join(parts) == sentences


def test_a_word_longer_than_the_limit_is_cut_and_emoji_count_double() -> None:
    parts = split_text("x" * 25, 10)
    assert all(utf16_len(p) <= 10 for p in parts) and "".join(parts) == "x" * 25
    parts = split_text("😀" * 3000, 4096)  # 6000 UTF-16 units
    assert len(parts) == 2 and all(utf16_len(p) <= 4096 for p in parts) and "".join(parts) == "😀" * 3000


def test_a_cut_inside_a_code_block_closes_and_reopens_the_fence() -> None:
    code = "\n".join(f"line_{n} = {n}" for n in range(400))
    parts = split_text(f"Here:\n```\n{code}\n```", 1500)
    assert len(parts) > 1
    for part in parts:
        assert part.count("```") % 2 == 0 and utf16_len(part) <= 1500
        parse_html(to_telegram_html(part))


@pytest.mark.parametrize(
    ("text", "attributes"),
    [
        ("/start b3JkZXJfaWQ9QS0xMDQy", {"order_id": "A-1042"}),
        ("/start summer_sale", {"start": "summer_sale"}),
        ("/start@relaydesk_test_bot abc-123", {"start": "abc-123"}),
        ("/start", {}),
        ("start order", {}),
        ("/started x", {}),
    ],
)
def test_start_payloads(text: str, attributes: dict[str, str]) -> None:
    assert start_attributes(text, "start") == attributes
