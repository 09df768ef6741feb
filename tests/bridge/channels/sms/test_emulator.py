"""The Twilio emulator checked against the official twilio library: its client sends through it, and its
``RequestValidator`` accepts the emulator's webhook signatures (and refuses them for another URL or token)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from bridge.workspaces.matrix.devserver import free_port
from tests.emulators.twilio import TwilioEmulator, segments

SID = "AC" + "1" * 32
TOKEN = "twilio-test-auth-token-0123456789"


@pytest.fixture
async def emulator() -> AsyncIterator[TwilioEmulator]:
    """A Twilio API on loopback."""
    twilio = TwilioEmulator(SID, TOKEN)
    await twilio.start()
    yield twilio
    await twilio.stop()


async def test_the_official_client_creates_and_fetches_messages_and_sees_twilio_errors(
    emulator: TwilioEmulator,
) -> None:
    client = Client(SID, TOKEN)
    client.api.base_url = emulator.base_url

    def create(body: str, to: str = "+4915112345678") -> str:
        return str(client.messages.create(to=to, from_=emulator.number, body=body).sid)

    sid = await asyncio.to_thread(create, "Grüße aus dem Laden")
    assert sid.startswith("SM") and emulator.texts_to("+4915112345678") == ["Grüße aus dem Laden"]
    fetched = await asyncio.to_thread(lambda: client.messages(sid).fetch())
    assert fetched.num_segments == "1" and fetched.to == "+4915112345678"

    emulator.opted_out.add("+4915100000001")
    with pytest.raises(TwilioRestException) as opted_out:
        await asyncio.to_thread(create, "hi", "+4915100000001")
    assert (opted_out.value.status, opted_out.value.code) == (400, 21610)
    emulator.fail(429)
    with pytest.raises(TwilioRestException) as limited:
        await asyncio.to_thread(create, "hi")
    assert (limited.value.status, limited.value.code) == (429, 20429)
    bad = Client(SID, "wrong-token")
    bad.api.base_url = emulator.base_url
    with pytest.raises(TwilioRestException) as refused:
        await asyncio.to_thread(lambda: bad.messages.create(to="+491", from_=emulator.number, body="x"))
    assert (refused.value.status, refused.value.code) == (401, 20003)


async def test_webhook_signatures_pass_twilios_request_validator(emulator: TwilioEmulator) -> None:
    seen: list[tuple[str, dict[str, str], str]] = []

    async def hook(request: web.Request) -> web.Response:
        form = await request.post()
        seen.append(
            (str(request.url), {k: str(v) for k, v in form.items()}, request.headers["X-Twilio-Signature"])
        )
        return web.Response(text="<Response/>", content_type="text/xml")

    app = web.Application()
    app.router.add_post("/sms/webhook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        emulator.webhook_url = f"http://127.0.0.1:{port}/sms/webhook?tenant=1"
        await emulator.customer_sends("+4915112345678", "STOP")
        await emulator.customer_sends("+4915112345678", "Photo 📷", media=[(b"\x89PNG...", "image/png")])
    finally:
        await runner.cleanup()
    validator = RequestValidator(TOKEN)
    assert len(seen) == 2
    for url, params, sig in seen:
        assert validator.validate(url, params, sig)
        assert not validator.validate(url.replace("tenant=1", "tenant=2"), params, sig)
        assert not RequestValidator("another-token").validate(url, params, sig)
    assert seen[0][1]["OptOutType"] == "STOP" and "+4915112345678" in emulator.opted_out
    assert seen[1][1]["NumMedia"] == "1" and seen[1][1]["MediaContentType0"] == "image/png"


def test_segment_counts_follow_gsm7_and_ucs2_limits() -> None:
    assert segments("a" * 160) == 1 and segments("a" * 161) == 2 and segments("a" * 306) == 2
    assert segments("€" * 80) == 1 and segments("€" * 81) == 2  # extension characters count twice
    assert segments("ä" * 70) == 1  # in GSM-7
    assert segments("😀" * 35) == 1 and segments("😀" * 36) == 2  # UCS-2: two units each, 70/67
    assert segments("ж" * 135) == 3
