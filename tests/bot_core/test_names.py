"""Display and file names made safe to show: no control, bidi-override or invisible characters."""

from __future__ import annotations

import pytest

from bot_core.names import clean_display_name, clean_file_name


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("Alice", "Alice"),
        ("Eve\u202egnp.exe", "Evegnp.exe"),  # right-to-left override
        ("Bob\u2066\u2067\u2068x\u2069\u200e\u200f\u061c", "Bobx"),  # isolates and marks
        ("bell\x07 and\x1b[31m escape", "bell and[31m escape"),
        ("two\nlines\r\n\tand tabs", "two lines and tabs"),
        ("zero\u200bwidth\ufeff", "zerowidth"),
        ("<b>Bob</b> & <script>", "<b>Bob</b> & <script>"),  # HTML stays text; HTML output escapes it
        ("family 👨\u200d👩\u200d👧", "family 👨\u200d👩\u200d👧"),  # the joiner of emoji sequences stays
        ("   ", ""),
        (None, ""),
    ],
)
def test_display_names_lose_what_could_disguise_them(raw: str | None, shown: str) -> None:
    assert clean_display_name(raw) == shown


def test_display_names_are_cut_and_fall_back() -> None:
    assert clean_display_name("x" * 500) == "x" * 80
    assert clean_display_name("\u202e\x00", fallback="Customer") == "Customer"


def test_file_names_lose_directories_overrides_and_leading_dots() -> None:
    assert clean_file_name("invoice\u202efdp.exe") == "invoicefdp.exe"
    assert clean_file_name("../../etc/passwd") == "passwd"
    assert clean_file_name("C:\\Users\\x\\.bashrc") == "bashrc"
    assert clean_file_name("\x00") == "file"
    long = clean_file_name("a" * 300 + ".pdf")
    assert len(long) == 120 and long.endswith(".pdf")
