"""Property-based fuzzing of every public route of the web channel and of its WebSocket protocol.

Whatever a client sends, relaydesk answers below 500 (a refusal is a 4xx with a reason), keeps the
WebSocket open, and a refusal changes nothing: no event stored, no watermark moved, no file left on
disk. One desk serves the whole module; examples are few (the module runs in well under 30 s).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot_core.config import parse_config
from bot_core.desk import Desk
from bridge.workspaces.matrix.devserver import free_port
from tests.bridge.channels.web_site import ENVIRON, WebSite, backend_claim, site_yaml
from tests.conftest import FAST_OUTBOX, MigratedDatabases

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,  # nothing written into the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# -- strategies ----------------------------------------------------------------------------------

NASTY = st.sampled_from(
    ["", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "\u202e", "😀", "\r\n", "<script>", "9" * 40, "é" * 300]
)
TEXT = st.text(st.characters(categories=["Cs", "Cc", "L", "N", "P", "S", "Z"]), max_size=30) | NASTY
INTEGERS = st.integers(-(2**70), 2**70) | st.sampled_from([0, 1, 2**53 - 1, 2**53, 2**63 - 1, 2**63, -1])
SCALARS = st.none() | st.booleans() | INTEGERS | st.floats() | TEXT
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
CLIENT_ID = st.from_regex(r"[A-Za-z0-9_-]{8,16}", fullmatch=True)
DEEP = st.integers(1, 50_000).map(lambda n: "[" * n + "]" * n) | st.integers(1, 5_000).map(
    lambda n: '{"a":' * n + "1" + "}" * n
)


def encode(value: Any) -> bytes:
    """JSON text of ``value`` (lone surrogates escaped, NaN as JSON's extension: both still parse)."""
    return json.dumps(value).encode()


def body_of(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes]:
    """A JSON body with some of ``fields`` (or any JSON), raw bytes, or JSON nested very deep."""
    objects = st.fixed_dictionaries({}, optional=fields).map(encode)
    return objects | objects | JSON.map(encode) | st.binary(max_size=80) | DEEP.map(str.encode)


def _long_wait(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value > 0.05


QUERY_NUMBER = (TEXT | INTEGERS.map(str) | st.floats().map(str)).filter(lambda t: not _long_wait(t))

MESSAGE_BODY = body_of({"client_id": CLIENT_ID | JSON, "text": TEXT | JSON})
SESSION_BODY = body_of(
    {
        "token": TEXT | JSON,
        "user_id": TEXT | JSON,
        "email": TEXT | JSON,
        "name": TEXT | JSON,
        "issued_at": INTEGERS | JSON,
        "user_hash": TEXT | JSON,
    }
)
RECEIPT_BODY = body_of({"delivered": INTEGERS | JSON, "read": INTEGERS | JSON})


@st.composite
def multipart(draw: st.DrawFn) -> tuple[str, bytes]:
    """A Content-Type and a body that is multipart, nearly multipart, or not at all."""
    printable = st.characters(min_codepoint=0x21, max_codepoint=0x7E)  # what a header line can carry
    boundary = draw(st.sampled_from(["b0undary", "x", ""]) | st.text(printable, max_size=8))
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(["client_id", "text", "file", "other"]) | TEXT)
        head = f'Content-Disposition: form-data; name="{name}"'
        if draw(st.booleans()):
            head += f'; filename="{draw(TEXT)}"'
        if draw(st.booleans()):
            head += f"\r\nContent-Type: {draw(st.sampled_from(['image/png', 'text/plain', 'x/y']) | TEXT)}"
        value = draw(
            st.binary(max_size=40) | CLIENT_ID.map(str.encode) | st.just(b"\x89PNG\r\n\x1a\n" + b"\0" * 8)
        )
        parts.append(f"--{boundary}\r\n{head}\r\n\r\n".encode("utf-8", "surrogatepass") + value + b"\r\n")
    body = b"".join(parts) + (f"--{boundary}--\r\n".encode() if draw(st.booleans()) else b"")
    if draw(st.integers(0, 5)) == 0:
        body = draw(st.binary(max_size=200))
    content_type = f"multipart/form-data; boundary={boundary}"
    if draw(st.integers(0, 5)) == 0:
        content_type = draw(st.sampled_from(["multipart/form-data", "application/json", "multipart/mixed"]))
    return content_type, body


FRAME = (
    st.fixed_dictionaries(
        {"type": st.sampled_from(["sync", "send", "receipt", "typing", "ping", "other"]) | JSON},
        optional={
            "after": INTEGERS | JSON,
            "client_id": CLIENT_ID | JSON,
            "text": TEXT | JSON,
            "delivered": INTEGERS | JSON,
            "read": INTEGERS | JSON,
            "active": JSON,
        },
    ).map(json.dumps)
    | JSON.map(json.dumps)
    | st.integers(1, 29_000).map(lambda n: "[" * n + "]" * n)  # within the frame size limit
    | TEXT.map(lambda t: t.encode("utf-8", "replace").decode())
)


# -- the desk and the checks ----------------------------------------------------------------------


@pytest.fixture(scope="module")
async def site(
    tmp_path_factory: pytest.TempPathFactory, migrated: MigratedDatabases
) -> AsyncIterator[WebSite]:
    """One desk for the module, with limits high enough that the fuzzer reaches the checks behind them."""
    tmp = tmp_path_factory.mktemp("web-fuzz")
    url = await migrated.sqlite(tmp / "relaydesk.db")
    port = free_port()
    settings_yaml = "\n".join(
        f"      {line}"
        for line in (
            "messages_per_minute: 1000000",
            "sessions_per_minute: 1000000",
            "max_upload_bytes: 4096",
            "max_connections_per_visitor: 1000",
        )
    )
    config = parse_config(site_yaml(tmp, port, web=settings_yaml), "plugins.yaml", environ=ENVIRON)
    config = config.model_copy(update={"storage": config.storage.model_copy(update={"database": url})})
    desk = Desk(config, outbox_settings=FAST_OUTBOX, scheduler_poll=0.1)
    await desk.start()
    yield WebSite(desk, port, tmp / "uploads")
    await desk.stop(timeout=5)


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """One HTTP client for the module."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="module")
async def token(site: WebSite, http: aiohttp.ClientSession) -> str:
    """A visitor who has written once (so that a long poll finds news and returns at once)."""
    value = await site.token(http)
    async with http.post(
        f"{site.base}/web/api/messages",
        json={"client_id": "first-message", "text": "hello"},
        headers={"Authorization": f"Bearer {value}"},
    ) as resp:
        assert resp.status == 200
    return value


async def request(
    site: WebSite, http: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, str]:
    """Send one request; assert it is not a server error and that a refusal changed nothing."""
    before = await site.snapshot()
    async with http.request(method, f"{site.base}{path}", **kwargs) as resp:
        status, text = resp.status, await resp.text()
    assert status < 500, (status, text)
    if status >= 400:
        assert await site.snapshot() == before, (status, text)
        if status != 404 and path.startswith("/web/api/"):
            assert "error" in json.loads(text), text
    return status, text


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- routes ----------------------------------------------------------------------------------------


@FUZZ
@given(body=SESSION_BODY | st.sampled_from([b""]), valid_claim=st.booleans())
async def test_session(site: WebSite, http: aiohttp.ClientSession, body: bytes, valid_claim: bool) -> None:
    if valid_claim:  # a real claim with one field changed or added by the fuzzer, or none
        claim = backend_claim(user_id="fuzz-42", name="Fuzz")
        try:
            extra = json.loads(body)
        except (ValueError, RecursionError):
            extra = {}
        body = encode({**claim, **(extra if isinstance(extra, dict) else {})})
    status, _ = await request(site, http, "POST", "/web/api/session", data=body)
    assert status in (200, 400, 401, 413)


@FUZZ
@given(
    query=st.dictionaries(
        st.sampled_from(["after", "newest", "wait", "token", "x"]), QUERY_NUMBER, max_size=4
    )
)
async def test_history_and_long_poll(
    site: WebSite, http: aiohttp.ClientSession, token: str, query: dict[str, str]
) -> None:
    safe = {k: v.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for k, v in query.items()}
    headers = {} if "token" in safe else auth(token)
    status, _ = await request(site, http, "GET", f"/web/api/messages?{urlencode(safe)}", headers=headers)
    assert status in (200, 400, 401)


@FUZZ
@given(body=MESSAGE_BODY)
async def test_post_message(site: WebSite, http: aiohttp.ClientSession, token: str, body: bytes) -> None:
    headers = {**auth(token), "Content-Type": "application/json"}
    status, _ = await request(site, http, "POST", "/web/api/messages", data=body, headers=headers)
    assert status in (200, 400, 413)


@FUZZ
@given(form=multipart())
async def test_upload(
    site: WebSite, http: aiohttp.ClientSession, token: str, form: tuple[str, bytes]
) -> None:
    content_type, body = form
    headers = {**auth(token), "Content-Type": content_type}
    status, _ = await request(site, http, "POST", "/web/api/upload", data=body, headers=headers)
    assert status in (200, 400, 413, 415)


@FUZZ
@given(body=RECEIPT_BODY)
async def test_receipts(site: WebSite, http: aiohttp.ClientSession, token: str, body: bytes) -> None:
    headers = {**auth(token), "Content-Type": "application/json"}
    status, _ = await request(site, http, "POST", "/web/api/receipts", data=body, headers=headers)
    assert status in (200, 400, 413)


@FUZZ
@given(file_id=TEXT, name=TEXT, sig=TEXT)
async def test_file_links(
    site: WebSite, http: aiohttp.ClientSession, file_id: str, name: str, sig: str
) -> None:
    def segment(text: str) -> str:
        return quote(text.encode("utf-8", "surrogatepass"), safe="") or "x"

    path = f"/web/files/{segment(file_id)}/{segment(name)}?sig={segment(sig)}"
    status, _ = await request(site, http, "GET", path)
    assert status in (403, 404)


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]), tail=TEXT)
async def test_any_other_request_under_web(
    site: WebSite, http: aiohttp.ClientSession, method: str, tail: str
) -> None:
    path = "/web/" + quote(tail.encode("utf-8", "surrogatepass"), safe="/")
    await request(site, http, method, path, data=b"{}")


# -- the WebSocket ---------------------------------------------------------------------------------


@FUZZ
@given(query_token=TEXT)
async def test_websocket_handshake(site: WebSite, http: aiohttp.ClientSession, query_token: str) -> None:
    url = f"{site.base}/web/ws?token={quote(query_token.encode('utf-8', 'surrogatepass'), safe='')}"
    try:
        async with http.ws_connect(url):
            pass
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status in (401, 403, 429)


@FUZZ
@given(frame=FRAME)
async def test_websocket_frames(site: WebSite, http: aiohttp.ClientSession, token: str, frame: str) -> None:
    before = await site.snapshot()
    async with http.ws_connect(f"{site.base}/web/ws?token={token}") as ws:
        await ws.send_str(frame)
        await ws.send_json({"type": "ping"})
        answers = []
        while True:  # the connection survives whatever the frame was: the ping is answered
            message = await ws.receive(timeout=10)
            assert message.type is aiohttp.WSMsgType.TEXT, message
            answer = json.loads(message.data)
            if answer == {"type": "pong"}:
                break
            answers.append(answer)
    if any(a.get("type") == "error" for a in answers):
        assert await site.snapshot() == before, answers


# -- raw requests: header bytes no HTTP client would send ------------------------------------------

HEADER_VALUE = st.binary(max_size=24).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@FUZZ
@given(
    route=st.sampled_from(
        [
            b"POST /web/api/session",
            b"GET /web/api/messages?after=0",
            b"POST /web/api/messages",
            b"POST /web/api/upload",
            b"POST /web/api/receipts",
            b"GET /web/ws",
            b"OPTIONS /web/api/messages",
        ]
    ),
    authorization=HEADER_VALUE,
    origin=HEADER_VALUE,
    content_type=HEADER_VALUE,
    body=st.binary(max_size=60),
)
async def test_raw_header_bytes(
    site: WebSite, route: bytes, authorization: bytes, origin: bytes, content_type: bytes, body: bytes
) -> None:
    before = await site.snapshot()
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    writer.write(
        route
        + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        + b"Authorization: Bearer "
        + authorization
        + b"\r\nOrigin: "
        + origin
        + b"\r\nContent-Type: "
        + content_type
        + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    status = int(status_line.split()[1])
    assert status < 500, status_line
    if status >= 400:
        assert await site.snapshot() == before
