"""The web channel's input checks and upload store, on their own (the routes are covered by the edge tests)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bridge.channels.web.uploads import PARTIAL_PREFIX, FileStore, UploadRefused
from bridge.channels.web.validation import (
    MAX_DEPTH,
    MAX_ID,
    BadInput,
    int_param,
    int_value,
    parse_object,
    seconds_param,
    text_value,
)


def test_json_objects_are_parsed_strictly_and_shallowly() -> None:
    assert parse_object(b'{"a": [1, {"b": "\\u00e9"}]}') == {"a": [1, {"b": "é"}]}
    assert parse_object(b"") == {}
    nested: str = "1"
    for _ in range(MAX_DEPTH - 1):
        nested = f"[{nested}]"
    assert parse_object(f'{{"a": {nested}}}')  # exactly MAX_DEPTH deep
    for raw, reason in (
        (f'{{"a": [{nested}]}}', "nested too deeply"),
        ("[" * 100_000, "nested too deeply"),
        (b"\xff{}", "not valid UTF-8"),
        ("{'a': 1}", "not JSON"),
        ("[1]", "must be a JSON object"),
    ):
        with pytest.raises(BadInput, match=reason):
            parse_object(raw)


def test_texts_must_be_storable_strings() -> None:
    assert text_value("tab\tand newline\n 😀", "text") == "tab\tand newline\n 😀"
    assert text_value(None, "text") == ""
    for value, reason in ((5, "must be a string"), ("\ud800", "valid Unicode"), ("a\x00", "NUL")):
        with pytest.raises(BadInput, match=reason):
            text_value(value, "text")
    with pytest.raises(BadInput, match="control characters"):
        text_value("Al\x1bice", "name", single_line=True)


def test_integers_are_bounded_for_every_database() -> None:
    assert int_value(MAX_ID, "read") == MAX_ID and int_value(None, "read") is None
    for value in (MAX_ID + 1, 2**63, -1, True, 1.0, "1"):
        with pytest.raises(BadInput):
            int_value(value, "read")
    assert int_param({"after": "42"}, "after") == 42 and int_param({}, "after") == 0
    for text in ("-1", str(2**63), "1e3", "٣", " 1"):
        with pytest.raises(BadInput):
            int_param({"after": text}, "after")
    assert seconds_param({"wait": "99"}, "wait", 30) == 30
    for text in ("nan", "inf", "-1", "soon"):
        with pytest.raises(BadInput):
            seconds_param({"wait": text}, "wait", 30)


def test_the_upload_store_keeps_its_quota_and_sweeps_what_a_crash_left(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "uploads", quota_bytes=1000)
    kept = store.save("a.txt", "text/plain", b"x" * 500)
    with pytest.raises(UploadRefused) as refused:
        store.save("b.txt", "text/plain", b"x" * 500)
    assert refused.value.status == 507
    assert sorted(p.name for p in store.root.iterdir()) == sorted([kept.file_id, f"{kept.file_id}.json"])
    store.remove(kept.file_id)
    assert not any(store.root.iterdir())
    assert store.save("b.txt", "text/plain", b"x" * 500).size == 500  # the space is free again

    old, fresh = store.begin(), store.begin()
    old.write(b"half an upload")
    old.close()
    an_hour_ago = time.time() - 3700
    os.utime(old.path, (an_hour_ago, an_hour_ago))
    assert store.sweep_partials() == 1
    assert [p.name for p in store.root.glob(f"{PARTIAL_PREFIX}*")] == [fresh.path.name]
    fresh.discard()
