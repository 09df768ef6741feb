"""The download helpers every adapter serves files with: headers and signed expiring links."""

from __future__ import annotations

import pytest
from aiohttp import web

from bot_core.downloads import LinkSigner, download_headers


@pytest.mark.parametrize("mime", ["image/png", "image/jpeg", "image/gif", "image/webp", "IMAGE/PNG; x=y"])
def test_plain_raster_images_are_inline(mime: str) -> None:
    headers = download_headers(mime, "a.png")
    assert headers["Content-Disposition"].startswith("inline;")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"].startswith("sandbox")


@pytest.mark.parametrize(
    "mime", ["image/svg+xml", "text/html", "application/xhtml+xml", "text/xml", "application/pdf", "", None]
)
def test_everything_else_is_an_attachment_in_a_sandbox(mime: str | None) -> None:
    headers = download_headers(mime, "x")
    assert headers["Content-Disposition"].startswith("attachment;")
    assert headers["Content-Security-Policy"].startswith("sandbox")
    assert headers["Content-Type"] == (mime or "application/octet-stream")


def test_file_names_in_the_header_cannot_break_out_of_it() -> None:
    disposition = download_headers("text/plain", 'r\u00e9sum\u00e9 "final"\\.txt')["Content-Disposition"]
    assert disposition == (
        "attachment; filename=\"r?sum? 'final'_.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22%5C.txt"
    )


def test_links_expire_and_their_expiry_and_scope_are_signed() -> None:
    now = [1_000_000.0]
    signer = LinkSigner(b"k" * 32, ttl=60, clock=lambda: now[0])
    query = dict(pair.split("=", 1) for pair in signer.query("file-1", "room-a").split("&"))
    assert query["exp"] == "1000060" and query["c"] == "room-a"
    assert signer.check("file-1", query) == "room-a"
    for changed in ({"c": "room-b"}, {"exp": "1000999"}, {"sig": "0" * 32}, {"exp": "x"}):
        with pytest.raises(web.HTTPForbidden):
            signer.check("file-1", {**query, **changed})
    with pytest.raises(web.HTTPForbidden):
        signer.check("file-2", query)
    now[0] += 61
    with pytest.raises(web.HTTPGone):
        signer.check("file-1", query)


def test_a_lifetime_of_zero_makes_links_that_never_expire() -> None:
    now = [5.0]
    signer = LinkSigner(b"k", ttl=0, clock=lambda: now[0])
    query = dict(pair.split("=", 1) for pair in signer.query("f").split("&"))
    now[0] = 10**12
    assert query["exp"] == "0" and signer.check("f", query) == ""
