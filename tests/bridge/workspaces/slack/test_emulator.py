"""The Slack emulator against slack_sdk itself: shapes, errors, limits, uploads and signed requests."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from tests.emulators.slack import Limit, SlackEmulator, mentions, rendered


@pytest.fixture
async def slack() -> AsyncIterator[SlackEmulator]:
    emulator = SlackEmulator()
    await emulator.start()
    yield emulator
    await emulator.stop()


def client_for(slack: SlackEmulator, token: str | None = None) -> AsyncWebClient:
    return AsyncWebClient(token=token or slack.token, base_url=slack.api_url)


async def test_auth_and_error_shapes(slack: SlackEmulator) -> None:
    client = client_for(slack)
    who = await client.auth_test()
    assert who["user_id"] == slack.bot_user_id and who["bot_id"] == slack.bot_id
    with pytest.raises(SlackApiError) as bad:
        await client_for(slack, "xoxb-wrong").auth_test()
    assert bad.value.response["error"] == "invalid_auth" and bad.value.response.status_code == 200
    with pytest.raises(SlackApiError) as missing:
        await client.chat_postMessage(channel="C404", text="hi")
    assert missing.value.response["error"] == "channel_not_found"
    with pytest.raises(SlackApiError) as retired:
        await client.api_call("files.upload", data={"channels": "C1"})
    assert retired.value.response["error"] == "method_deprecated"


async def test_private_channel_lifecycle(slack: SlackEmulator) -> None:
    slack.add_user("U1", "ann")
    client = client_for(slack)
    for bad, error in (("Has Caps", "invalid_name_specials"), ("x" * 81, "invalid_name_maxlength")):
        with pytest.raises(SlackApiError) as exc:
            await client.conversations_create(name=bad, is_private=True)
        assert exc.value.response["error"] == error
    made = await client.conversations_create(name="support-ann", is_private=True)
    channel = made["channel"]["id"]
    with pytest.raises(SlackApiError) as taken:
        await client.conversations_create(name="support-ann", is_private=True)
    assert taken.value.response["error"] == "name_taken"
    await client.conversations_invite(channel=channel, users="U1")
    with pytest.raises(SlackApiError) as again:
        await client.conversations_invite(channel=channel, users="U1")
    assert again.value.response["error"] == "already_in_channel"
    await client.conversations_archive(channel=channel)
    assert (await client.conversations_info(channel=channel))["channel"]["is_archived"] is True
    with pytest.raises(SlackApiError) as archived:
        await client.chat_postMessage(channel=channel, text="hello")
    assert archived.value.response["error"] == "is_archived"
    await client.conversations_unarchive(channel=channel)
    posted = await client.chat_postMessage(
        channel=channel, text="hello", username="Ann", icon_url="https://x/a.png"
    )
    await client.chat_update(channel=channel, ts=posted["ts"], text="hello again")
    assert slack.messages(channel)[0]["text"] == "hello again"
    await client.chat_postEphemeral(channel=channel, user="U1", text="only you")
    assert slack.ephemerals[-1]["user"] == "U1"
    await client.chat_delete(channel=channel, ts=posted["ts"])
    assert slack.messages(channel) == []
    assert "chat:write.customize" in slack.scopes_needed


async def test_missing_scope_names_what_is_needed() -> None:
    slack = SlackEmulator(scopes=frozenset({"chat:write"}))
    await slack.start()
    try:
        channel = slack.add_channel("team", [slack.bot_user_id])
        with pytest.raises(SlackApiError) as exc:
            await client_for(slack).chat_postMessage(channel=channel, text="x", username="Ann")
        assert exc.value.response["error"] == "missing_scope"
        assert exc.value.response["needed"] == "chat:write.customize"
    finally:
        await slack.stop()


async def test_rate_limit_answers_429_with_retry_after(slack: SlackEmulator) -> None:
    slack.limit("conversations.create", Limit(per_minute=20, burst=2))
    client = client_for(slack)
    await client.conversations_create(name="a", is_private=True)
    await client.conversations_create(name="b", is_private=True)
    with pytest.raises(SlackApiError) as limited:
        await client.conversations_create(name="c", is_private=True)
    assert limited.value.response.status_code == 429
    assert limited.value.response["error"] == "ratelimited"
    assert int(limited.value.response.headers["Retry-After"]) == 3  # 3 s per call at 20/min, whole seconds
    assert slack.rate_limited == {"conversations.create": 1}
    await client.auth_test()  # other methods have their own limits


async def test_external_upload_flow(slack: SlackEmulator) -> None:
    channel = slack.add_channel("team", [slack.bot_user_id])
    client = client_for(slack)
    step = await client.files_getUploadURLExternal(filename="a.txt", length=5)
    async with aiohttp.ClientSession() as http:
        async with http.post(step["upload_url"], data=b"hello") as response:
            assert response.status == 200
    done = await client.files_completeUploadExternal(
        files=[{"id": step["file_id"], "title": "a.txt"}], channel_id=channel, initial_comment="here"
    )
    assert done["files"][0]["id"] == step["file_id"]
    assert slack.files[step["file_id"]]["data"] == b"hello"
    assert slack.messages(channel)[0]["files"] == [step["file_id"]]
    # the SDK's own helper drives the same flow
    await client.files_upload_v2(channel=channel, content=b"abc", filename="b.bin")
    assert len(slack.messages(channel)) == 2
    assert (done["files"][0]["filetype"], done["files"][0]["mimetype"]) == ("text", "text/plain")

    # an image into two channels at once (``channels``), its type read from its bytes; with an initial
    # comment, blocks are ignored (as Slack's docs say); alt text is kept
    other = slack.add_channel("ops", [slack.bot_user_id])
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 24
    step = await client.files_getUploadURLExternal(filename="chart", length=len(png), alt_txt="a chart")
    async with aiohttp.ClientSession() as http:
        async with http.post(step["upload_url"], data=png) as response:
            assert response.status == 200
    done = await client.files_completeUploadExternal(
        files=[{"id": step["file_id"]}],
        channels=[channel, other],
        initial_comment="the chart",
        blocks=json.dumps([{"type": "section", "text": {"type": "plain_text", "text": "ignored"}}]),
    )
    assert (done["files"][0]["filetype"], done["files"][0]["mimetype"]) == ("png", "image/png")
    for where in (channel, other):
        (message, file), *_ = slack.shared_files(where)[-1:]
        assert (message["text"], message["blocks"], file["alt_txt"]) == ("the chart", None, "a chart")
    with pytest.raises(SlackApiError) as threaded:
        await client.files_completeUploadExternal(
            files=[{"id": step["file_id"]}], channels=[channel, other], thread_ts="1.000001"
        )
    assert threaded.value.response["error"] == "invalid_arguments"


async def test_views_open_and_user_lookups(slack: SlackEmulator) -> None:
    slack.add_user("U1", "ann", real_name="Ann Agent")
    slack.add_usergroup("S1", ["U1"])
    client = client_for(slack)
    assert (await client.users_info(user="U1"))["user"]["real_name"] == "Ann Agent"
    assert (await client.usergroups_users_list(usergroup="S1"))["users"] == ["U1"]
    with pytest.raises(SlackApiError) as exc:
        await client.usergroups_users_list(usergroup="S404")
    assert exc.value.response["error"] == "no_such_subgroup"
    await client.views_open(
        trigger_id="1.t", view={"type": "modal", "title": {"type": "plain_text", "text": "x"}}
    )
    assert slack.views[0]["type"] == "modal"


def test_mentions_and_rendering() -> None:
    assert mentions("hi <!channel> and <@U123|ann>") == ["!channel", "@U123"]
    assert mentions("@here plain") == []
    assert mentions("@here plain", link_names=True) == ["!here"]
    assert mentions("&lt;!channel&gt; <https://x|y>") == []
    assert rendered("&lt;!channel&gt; &amp; <https://evil|click>") == "<!channel> & click"


async def test_signed_requests_verify_and_slow_answers_are_retried(slack: SlackEmulator) -> None:
    slack.ack_timeout = 0.3
    seen: list[tuple[str | None, bool]] = []
    verifier = SignatureVerifier(slack.signing_secret)

    async def app(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(
            (request.headers.get("X-Slack-Retry-Num"), verifier.is_valid_request(body, dict(request.headers)))
        )
        if len(seen) == 1:
            await _slow()
        return web.Response(text="")

    server = web.Application()
    server.router.add_post("/slack/events", app)
    runner = web.AppRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    slack.request_url = f"http://127.0.0.1:{port}/slack/events"
    try:
        attempts = await slack.deliver_event({"type": "app_mention", "text": "x"})
        assert [a.status for a in attempts] == [0, 200]
        assert seen == [(None, True), ("1", True)]
        old = await slack.deliver(
            json.dumps({"x": 1}).encode(), "application/json", timestamp=time.time() - 400
        )
        assert old[0].status == 200 and not seen[-1][1]  # signed with an old time: a verifier refuses it
    finally:
        await runner.cleanup()


async def _slow() -> None:
    import asyncio

    await asyncio.sleep(0.6)
