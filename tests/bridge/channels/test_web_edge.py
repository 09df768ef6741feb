"""The web channel's edge against what anyone on the internet can send (issue 16): one test per finding.

Each test failed on the code before the hardening: identities vouched for field by field and for a
limited time, clients told apart behind a reverse proxy, sizes and times bounded, input the database
cannot store refused with 400, malformed requests answered 4xx and logged in one line.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from pathlib import Path

import aiohttp
import pytest

from bridge.workspaces.matrix.devserver import free_port
from storage.models import Identity, InboundReceipt
from tests.bridge.channels.web_site import ENVIRON, WebSite, backend_claim, site_yaml
from tests.conftest import DeskFactory

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


async def start(
    make_desk: DeskFactory, url: str, tmp_path: Path, *, web: str = "", server: str = ""
) -> WebSite:
    port = free_port()
    yaml_text = site_yaml(tmp_path, port, web=web, server=server)
    desk = await make_desk(url, yaml_text, serve_http=True, http_port=port, environ=ENVIRON)
    return WebSite(desk, port, tmp_path / "uploads")


def subject_of(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])


async def read_status(reader: asyncio.StreamReader, timeout: float = 10) -> int:
    """The status code of the response on a raw connection."""
    line = await asyncio.wait_for(reader.readline(), timeout)
    assert line.startswith(b"HTTP/1."), line
    return int(line.split()[1])


# -- 3. identity -------------------------------------------------------------------------------


async def test_a_claim_counts_only_for_the_fields_the_backend_signed_and_only_for_a_while(
    sqlite_url: str, make_desk: DeskFactory, tmp_path: Path
) -> None:
    site = await start(make_desk, sqlite_url, tmp_path, web="      identity_max_age_seconds: 600")
    claim = backend_claim(user_id="42", name="Alice", email="alice@shop.example")
    old_form = {  # the hash of the user id alone, which used to vouch for anything sent with it
        "user_id": "42",
        "email": "ceo@shop.example",
        "user_hash": backend_claim(user_id="42")["user_hash"],
    }
    async with aiohttp.ClientSession() as http:
        session_url = f"{site.base}/web/api/session"
        async with http.post(session_url, json=claim) as resp:
            assert resp.status == 200
            body = await resp.json()
            assert (body["verified"], body["name"]) == (True, "Alice")
            token = body["token"]
        for forged in (
            {**claim, "email": "ceo@shop.example"},  # another email under Alice's hash
            {**claim, "name": "Support team"},  # another name
            {k: v for k, v in claim.items() if k != "email"},  # a field left out
            {**backend_claim(user_id="42"), "email": "ceo@shop.example"},  # a field added
            old_form,
            {**claim, "issued_at": claim["issued_at"] + 1},
            backend_claim(user_id="42", issued_at=int(time.time()) - 601),  # older than the maximum age
            backend_claim(user_id="42", issued_at=int(time.time()) + 3600),  # from the future
        ):
            async with http.post(session_url, json=forged) as resp:
                assert resp.status == 401, forged
                assert (await resp.json())["error"].startswith("Identity not verified")
        # the verified session itself is renewed with its token (the page's claim may be old by then)
        async with http.post(session_url, json={"token": token}) as resp:
            assert resp.status == 200 and (await resp.json())["verified"] is True


# -- 4. behind a reverse proxy ------------------------------------------------------------------


async def test_behind_a_trusted_proxy_clients_have_their_own_session_limit_and_renewals_are_free(
    sqlite_url: str, make_desk: DeskFactory, tmp_path: Path
) -> None:
    site = await start(
        make_desk,
        sqlite_url,
        tmp_path,
        web="      sessions_per_minute: 2",
        server=', trusted_proxies: ["127.0.0.1", "10.0.0.0/8"]',
    )
    url = f"{site.base}/web/api/session"

    def via(chain: str) -> dict[str, str]:
        return {"X-Forwarded-For": chain}

    async with aiohttp.ClientSession() as http:
        tokens = []
        for _ in range(2):
            async with http.post(url, json={}, headers=via("203.0.113.7")) as resp:
                assert resp.status == 200
                tokens.append((await resp.json())["token"])
        # the same client: over its limit, whatever it writes in front of its address
        for chain in ("203.0.113.7", "198.51.100.1, 203.0.113.7", "203.0.113.7, 10.1.2.3"):
            async with http.post(url, json={}, headers=via(chain)) as resp:
                assert resp.status == 429, chain
        # another client behind the same proxy is not held back
        async with http.post(url, json={}, headers=via("203.0.113.8")) as resp:
            assert resp.status == 200
        # a visitor coming back renews its session as often as it needs
        for _ in range(5):
            async with http.post(url, json={"token": tokens[0]}, headers=via("203.0.113.7")) as resp:
                assert resp.status == 200
        # the live connection works through the proxy too
        ws_url = f"{site.base}/web/ws?token={tokens[0]}"
        async with http.ws_connect(ws_url, headers=via("203.0.113.7")) as ws:
            await ws.send_json({"type": "ping"})
            assert await ws.receive_json(timeout=10) == {"type": "pong"}


# -- 5. limits ---------------------------------------------------------------------------------


async def test_an_upload_field_over_its_limit_is_refused_while_it_streams(
    sqlite_url: str, make_desk: DeskFactory, tmp_path: Path
) -> None:
    site = await start(make_desk, sqlite_url, tmp_path)
    async with aiohttp.ClientSession() as http:
        token = await site.token(http)
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    part = b'--b\r\nContent-Disposition: form-data; name="text"\r\n\r\n'
    writer.write(
        b"POST /web/api/upload HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Length: {4 * 1024 * 1024}\r\n\r\n".encode()
        + part
        + b"x" * (200 * 1024)
    )
    await writer.drain()
    # answered while most of the announced 4 MB have not been sent: the field is not read whole
    assert await read_status(reader) == 413
    writer.close()
    assert not site.upload_dir.exists() or not any(site.upload_dir.iterdir())


async def test_one_visitor_holds_at_most_the_connection_cap(
    sqlite_url: str, make_desk: DeskFactory, tmp_path: Path
) -> None:
    site = await start(make_desk, sqlite_url, tmp_path, web="      max_connections_per_visitor: 2")
    async with aiohttp.ClientSession() as http:
        token = await site.token(http)
        other = await site.token(http)
        first = await http.ws_connect(f"{site.base}/web/ws?token={token}")
        second = await http.ws_connect(f"{site.base}/web/ws?token={token}")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{site.base}/web/ws?token={token}")
        assert refused.value.status == 429
        auth = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{site.base}/web/api/messages?wait=5", headers=auth) as resp:
            assert resp.status == 429  # a long poll is a connection too
        async with http.ws_connect(f"{site.base}/web/ws?token={other}"):
            pass  # another visitor is not affected
        await first.close()
        for _ in range(250):  # until the server saw it closed (at most 5 s)
            if site.web.connected(subject_of(token)) < 2:
                break
            await asyncio.sleep(0.02)
        third = await http.ws_connect(f"{site.base}/web/ws?token={token}")
        await third.close()
        await second.close()


async def test_slow_clients_are_timed_out_on_headers_and_on_bodies(
    sqlite_url: str, make_desk: DeskFactory, tmp_path: Path
) -> None:
    site = await start(make_desk, sqlite_url, tmp_path, server=", header_timeout: 0.5, body_timeout: 0.5")

    # slowloris: 20 connections sending a header line every 0.1 s, never finishing
    async def trickle() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(100):  # 10 s
                writer.write(b"X-Slow: 1\r\n")
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(reader.read(), 0.1)  # the server closed: EOF
            return b"still open"
        finally:
            writer.close()

    assert await asyncio.gather(*(trickle() for _ in range(20))) == [b""] * 20

    # a body that trickles: 408, and the connection is closed
    async with aiohttp.ClientSession() as http:
        token = await site.token(http)
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    writer.write(
        b"POST /web/api/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n".encode()
        + b'{"client_id": '
    )
    assert await read_status(reader) == 408
    await asyncio.wait_for(reader.read(), 10)  # the server closes the connection
    writer.close()

    # a file that trickles: 408, and what had arrived of it is removed from disk
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    writer.write(
        b"POST /web/api/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Length: 100000\r\n\r\n".encode()
        + b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        + b"Content-Type: image/png\r\n\r\n"
        + PNG
    )
    assert await read_status(reader) == 408
    writer.close()
    assert not any(site.upload_dir.iterdir())


def png_form(client_id: str, data: bytes = PNG, text: str = "") -> aiohttp.FormData:
    """The widget's upload form with a PNG file."""
    form = aiohttp.FormData()
    form.add_field("client_id", client_id)
    if text:
        form.add_field("text", text)
    form.add_field("file", data, filename="a.png", content_type="image/png")
    return form


async def test_refused_uploads_leave_nothing_on_disk(
    sqlite_url: str, make_desk: DeskFactory, tmp_path: Path
) -> None:
    site = await start(make_desk, sqlite_url, tmp_path, web="      max_text_length: 10")
    async with aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {await site.token(http)}"}
        url = f"{site.base}/web/api/upload"
        for refused in (png_form("bad"), png_form("client-1", text="far too long a caption")):
            async with http.post(url, data=refused, headers=auth) as resp:
                assert resp.status == 400
        assert not site.upload_dir.exists() or not any(site.upload_dir.iterdir())
        async with http.post(url, data=png_form("client-2"), headers=auth) as resp:
            assert resp.status == 200
        assert len(list(site.upload_dir.iterdir())) == 2  # the file and its description
    assert await site.desk.wait_settled(10)
    assert await InboundReceipt.filter(source="web").count() == 1


async def test_the_upload_directory_has_a_quota(
    sqlite_url: str, make_desk: DeskFactory, tmp_path: Path
) -> None:
    site = await start(make_desk, sqlite_url, tmp_path, web="      upload_quota_bytes: 4000")
    async with aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {await site.token(http)}"}
        url = f"{site.base}/web/api/upload"
        async with http.post(url, data=png_form("client-1"), headers=auth) as resp:
            assert resp.status == 200
        async with http.post(url, data=png_form("client-2", PNG + b"\0" * 4000), headers=auth) as resp:
            assert resp.status == 507  # it would take the directory over its quota
            assert "cannot accept files right now" in (await resp.json())["error"]
        assert len(list(site.upload_dir.iterdir())) == 2
    assert await site.desk.wait_settled(10)
    assert await InboundReceipt.filter(source="web").count() == 1


# -- 6. input validation -----------------------------------------------------------------------


@pytest.mark.postgres
async def test_text_the_database_cannot_store_is_refused_with_400(
    database_url: str, make_desk: DeskFactory, tmp_path: Path
) -> None:
    site = await start(make_desk, database_url, tmp_path)
    async with aiohttp.ClientSession() as http:
        token = await site.token(http)
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        before = await site.snapshot()
        for n, text in enumerate(["lone \ud800 surrogate", "nul \x00 inside", "\udfff"]):
            body = json.dumps({"client_id": f"client-{n}", "text": text})  # escapes: valid JSON
            async with http.post(f"{site.base}/web/api/messages", data=body, headers=auth) as resp:
                assert resp.status == 400, text
        claim = json.dumps({**backend_claim(user_id="42"), "name": "Al\x00ice"})
        async with http.post(f"{site.base}/web/api/session", data=claim, headers=auth) as resp:
            assert resp.status == 400
        async with http.ws_connect(f"{site.base}/web/ws?token={token}") as ws:
            await ws.send_str(json.dumps({"type": "send", "client_id": "client-ws", "text": "\ud800"}))
            frame = await ws.receive_json(timeout=10)
            assert frame["type"] == "error" and "Unicode" in frame["message"]
        assert await site.snapshot() == before
        # what every database stores still goes through
        async with http.post(
            f"{site.base}/web/api/messages",
            data=json.dumps({"client_id": "client-ok", "text": "emoji 😀 and tab\tfine"}),
            headers=auth,
        ) as resp:
            assert resp.status == 200
    assert await site.desk.wait_settled(10)
    assert await Identity.filter(channel="web").count() == 1


async def test_values_of_the_wrong_json_type_are_refused_not_stored(
    sqlite_url: str, make_desk: DeskFactory, tmp_path: Path
) -> None:
    site = await start(make_desk, sqlite_url, tmp_path)
    async with aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {await site.token(http)}"}
        before = await site.snapshot()
        for body in (
            {"client_id": "client-1", "text": None},
            {"client_id": "client-2", "text": {"a": 1}},
            {"client_id": "client-3", "text": 5},
            {"client_id": "client-4", "text": ["hello"]},
            {"client_id": "client-5", "text": True},
            {"client_id": 12345678, "text": "hello"},
            {"client_id": None, "text": "hello"},
        ):
            async with http.post(f"{site.base}/web/api/messages", json=body, headers=auth) as resp:
                assert resp.status == 400, body
        for receipt in ({"read": "5"}, {"delivered": 1.5}, {"read": True}, {"read": -1}):
            async with http.post(f"{site.base}/web/api/receipts", json=receipt, headers=auth) as resp:
                assert resp.status == 400, receipt
        for session in ({"token": 5}, {"user_id": 42, "user_hash": "x"}, {"issued_at": "yesterday"}):
            async with http.post(f"{site.base}/web/api/session", json=session) as resp:
                assert resp.status == 400, session
        assert await site.snapshot() == before


async def test_malformed_input_gets_a_4xx_never_a_500(
    sqlite_url: str, make_desk: DeskFactory, tmp_path: Path
) -> None:
    site = await start(make_desk, sqlite_url, tmp_path)
    huge = str(2**63)
    async with aiohttp.ClientSession() as http:
        token = await site.token(http)
        auth = {"Authorization": f"Bearer {token}"}
        before = await site.snapshot()
        deep = "[" * 30_000 + "]" * 30_000
        for path in ("/web/api/messages", "/web/api/receipts", "/web/api/session"):
            async with http.post(f"{site.base}{path}", data=deep, headers=auth) as resp:
                assert resp.status == 400, path
        deep_object = json.dumps(
            {"client_id": "client-1", "text": "x", "extra": [[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]}
        )
        async with http.post(f"{site.base}/web/api/messages", data=deep_object, headers=auth) as resp:
            assert resp.status == 400
        for query in (f"after={huge}", f"after=1&newest={huge}&wait=1", "after=-5", "wait=nan", "after=1e3"):
            async with http.get(f"{site.base}/web/api/messages?{query}", headers=auth) as resp:
                assert resp.status == 400, query
        async with http.post(f"{site.base}/web/api/receipts", json={"read": 2**63}, headers=auth) as resp:
            assert resp.status == 400
        multipart = {"Content-Type": "multipart/form-data; boundary=xx", **auth}
        for body in (
            b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a\x01b.txt"\r\n\r\nhello\r\n--xx--\r\n',
            b"--xx\r\ngarbage\r\n\r\n--yy",
            b"--xx\r\n\r\n",
            b"not multipart at all",
        ):
            async with http.post(f"{site.base}/web/api/upload", data=body, headers=multipart) as resp:
                assert resp.status == 400, body
        async with http.ws_connect(f"{site.base}/web/ws?token={token}") as ws:
            for frame in ({"type": "sync", "after": 2**63}, {"type": "receipt", "read": 2**64}):
                await ws.send_json(frame)
                answer = await ws.receive_json(timeout=10)
                assert answer["type"] == "error", answer
            await ws.send_str("[" * 10_000 + "]" * 10_000)
            assert (await ws.receive_json(timeout=10))["type"] == "error"
            await ws.send_json({"type": "ping"})
            assert (await ws.receive_json(timeout=10)) == {"type": "pong"}  # still connected
        assert await site.snapshot() == before


async def test_a_json_body_arriving_in_two_tcp_writes_is_read_whole(
    sqlite_url: str, make_desk: DeskFactory, tmp_path: Path
) -> None:
    site = await start(make_desk, sqlite_url, tmp_path)
    async with aiohttp.ClientSession() as http:
        token = await site.token(http)
    body = json.dumps({"client_id": "client-split", "text": "one message, two segments"}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    writer.write(
        b"POST /web/api/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[:20]
    )
    await writer.drain()
    with pytest.raises(TimeoutError):  # nothing is answered before the body is complete
        await asyncio.wait_for(reader.readline(), 0.5)
    writer.write(body[20:])
    await writer.drain()
    assert await read_status(reader) == 200
    writer.close()
    assert await site.desk.wait_settled(10)
    assert await InboundReceipt.filter(source="web").count() == 1


# -- logs --------------------------------------------------------------------------------------


async def test_malformed_requests_are_logged_once_in_one_line_without_a_traceback(
    sqlite_url: str, make_desk: DeskFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    site = await start(make_desk, sqlite_url, tmp_path)
    async with aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {await site.token(http)}"}
        caplog.clear()
        with caplog.at_level(logging.INFO):
            async with http.post(f"{site.base}/web/api/messages", data="[" * 5000, headers=auth) as resp:
                assert resp.status == 400
            async with http.get(f"{site.base}/web/api/messages?after={2**63}", headers=auth) as resp:
                assert resp.status == 400
            reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nBroken header line\r\n\r\n")
            assert await read_status(reader) == 400  # aiohttp's own parser refuses it
            writer.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 3, [r.getMessage() for r in caplog.records]
    assert all(r.levelno in (logging.INFO, logging.WARNING) for r in refusals)
