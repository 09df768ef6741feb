"""Knowledge base files: YAML and CSV, every problem with file:line, edits that keep the file's comments."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugins.faq.knowledge import KnowledgeBaseError, add_to_file, detect_language, load
from plugins.faq.rules import picked_choice
from plugins.faq.text import char_ngrams
from tests.plugins.faq.conftest import SAMPLE


def test_the_sample_loads_with_answers_per_language_and_links() -> None:
    kb = load(SAMPLE)
    returns = kb.entries["returns"]
    assert "怎么退货？" in returns.questions
    assert returns.render("zh").startswith("所有商品 30 天内可退货")
    assert returns.render("en").endswith("• Start a return: https://shop.example.com/returns")
    assert returns.render("fr") == returns.render("en")  # no French: the knowledge base's language


def test_every_problem_is_listed_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "kb.yaml"
    path.write_text(
        "entries:\n"
        "  - id: ok\n"
        "    questions: [hi]\n"
        "    answer: hello\n"
        "  - id: ok\n"  # line 5: duplicate id
        "    questions: [hey]\n"
        "    answer: hello\n"
        "  - id: no-questions\n"  # line 8
        "    answer: text\n"
        "  - id: x\n"
        "    questions: [q]\n"
        "    answr: typo\n",  # line 12
        encoding="utf-8",
    )
    with pytest.raises(KnowledgeBaseError) as caught:
        load(path, plugin="shop_faq")
    lines = str(caught.value).splitlines()
    assert f"plugin 'shop_faq': knowledge base {path}:12: entry #4: unknown field 'answr'" in lines
    assert (
        f"plugin 'shop_faq': knowledge base {path}:5: entry 'ok': field 'id': this id is used by an earlier entry"
        in lines
    )
    assert any(
        line.startswith(
            f"plugin 'shop_faq': knowledge base {path}:8: entry 'no-questions': field 'questions'"
        )
        for line in lines
    )
    assert any(f"{path}:10: entry 'x': field 'answer': required" in line for line in lines)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "kb.yaml"
    path.write_text("entries:\n  - id: a\n    questions: [hi\n    answer: x\n", encoding="utf-8")
    with pytest.raises(KnowledgeBaseError, match=rf"{path}:\d+: invalid YAML"):
        load(path)


def test_csv_rows_of_one_id_form_one_entry_and_errors_name_the_row(tmp_path: Path) -> None:
    path = tmp_path / "kb.csv"
    path.write_text(
        "id,question,answer,language,tags,links\n"
        "hours,When are you open?,9 to 5,en,store,Hours=https://example.com/hours\n"
        "hours,营业时间？,,,,\n"
        "refund,How do I get a refund?,Within 5 days,,,\n",
        encoding="utf-8",
    )
    kb = load(path)
    assert kb.entries["hours"].questions == ("When are you open?", "营业时间？")
    assert kb.entries["hours"].render("en") == "9 to 5\n• Hours: https://example.com/hours"
    assert kb.entries["hours"].tags == ("store",)

    path.write_text(
        path.read_text(encoding="utf-8") + "refund,Money back?,Within 10 days,,,\n", encoding="utf-8"
    )
    with pytest.raises(
        KnowledgeBaseError, match=rf"{path}:5: entry 'refund': field 'answer': differs from line 4"
    ):
        load(path)


def test_added_entries_and_phrasings_keep_the_comments(tmp_path: Path) -> None:
    path = tmp_path / "kb.yaml"
    path.write_text(
        "# our FAQ\nentries:\n  - id: hours  # the hours\n    questions:\n      - When are you open?\n"
        "    answer: 9 to 5\n# end of the list\n",
        encoding="utf-8",
    )
    add_to_file(path, "gift-cards", ["Do you sell gift cards?", "有礼品卡吗？"], "Yes: 10 to 200 EUR")
    add_to_file(path, "hours", ["what time do you open"], None)
    text = path.read_text(encoding="utf-8")
    assert "# our FAQ" in text and "# the hours" in text and "# end of the list" in text
    kb = load(path)
    assert kb.entries["gift-cards"].questions == ("Do you sell gift cards?", "有礼品卡吗？")
    assert kb.entries["gift-cards"].render("en") == "Yes: 10 to 200 EUR"
    assert kb.entries["hours"].questions == ("When are you open?", "what time do you open")

    csv_path = tmp_path / "kb.csv"
    csv_path.write_text("id,question,answer\nhours,When are you open?,9 to 5\n", encoding="utf-8")
    add_to_file(csv_path, "refund", ["Money back, please?"], "Within 5 days")
    assert load(csv_path).entries["refund"].questions == ("Money back, please?",)


def test_chinese_needs_no_spaces_and_languages_are_told_apart() -> None:
    assert {"退货", "怎么退"} <= set(char_ngrams("怎么退货"))
    assert "退货" in char_ngrams("我想退货")
    assert " ref" in char_ngrams("Refund!")
    assert detect_language("怎么退货？") == "zh"
    assert detect_language("When are you open?") == "en"
    assert detect_language("返品できますか") == "ja"


def test_choices_are_picked_by_number_or_ordinal() -> None:
    assert picked_choice("2", 3) == 2
    assert picked_choice("２", 3) == 2
    assert picked_choice("第三个", 3) == 3
    assert picked_choice("4", 3) is None
    assert picked_choice("none of these", 3) == 0
    assert picked_choice("2 more questions", 3) is None
