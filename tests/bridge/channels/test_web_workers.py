"""The web channel with two worker processes (PostgreSQL + Redis): a push reaches the worker holding the
visitor, and a visitor's rate limit counts the requests every worker served."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import aiohttp

from bot_core.adapters import Delivery
from bot_core.desk import Desk
from bridge.channels.web.channel import WebChannel
from bridge.workspaces.matrix.devserver import free_port
from storage.bus.redis_streams import RedisStreamsBus
from storage.fanout import RedisFanout
from storage.ratelimit import RedisRateLimits
from tests.conftest import DeskFactory


async def _frames_until(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    """The next frame of type ``kind`` (the first sync's history and acks come before it)."""
    while True:
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        frame = json.loads(msg.data)
        if frame.get("type") == kind:
            return cast(dict[str, Any], frame)


async def _two_workers(
    make_desk: DeskFactory,
    postgres_url: str,
    redis_prefix: tuple[str, str],
    tmp_path: Path,
    web_extra: str = "",
) -> tuple[list[Desk], list[int]]:
    """Two desks on one database and one Redis (bus, fan-out, rate limits), each serving HTTP; and their ports."""
    redis_url, prefix = redis_prefix
    yaml_text = f"""
plugins:
  - desk: {{use: "bot_core.testing:MemoryWorkspace"}}
  - web:
      dev_secret_file: "{tmp_path / "web-secret"}"
      upload_dir: "{tmp_path / "uploads"}"
{web_extra}"""
    ports = [free_port(), free_port()]
    desks = [
        await make_desk(
            postgres_url,
            yaml_text,
            serve_http=True,
            http_port=port,
            redis=redis_url,
            bus=RedisStreamsBus(redis_url, prefix=prefix),
            fanout=RedisFanout(redis_url, prefix=prefix),
            rate_limits=RedisRateLimits(redis_url, prefix=prefix),
        )
        for port in ports
    ]
    return desks, ports


async def test_an_answer_sent_by_another_worker_reaches_the_visitors_live_connection(
    postgres_url: str, redis_prefix: tuple[str, str], make_desk: DeskFactory, tmp_path: Path
) -> None:
    (holding, other), ports = await _two_workers(make_desk, postgres_url, redis_prefix, tmp_path)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{ports[0]}/web/api/session", json={}) as resp:
            assert resp.status == 200
            token = (await resp.json())["token"]
        subject = cast(WebChannel, holding.plugins["web"])._signer.verify(token).subject
        async with http.ws_connect(f"http://127.0.0.1:{ports[0]}/web/ws?token={token}") as ws:
            await ws.send_json({"type": "sync"})
            await _frames_until(ws, "history")

            web_there = cast(WebChannel, other.plugins["web"])
            assert cast(WebChannel, holding.plugins["web"]).connected(subject) == 1
            assert web_there.connected(subject) == 0  # the visitor is not connected to this worker
            await web_there.typing(subject, "Bob", True)
            assert (await _frames_until(ws, "typing"))["agent"] == "Bob"
            await web_there.send(
                Delivery(
                    outbox_id=1,
                    channel="web",
                    external_user_id=subject,
                    text="Hi, Bob here",
                    agent_name="Bob",
                )
            )
            message = (await _frames_until(ws, "message"))["message"]
            assert (message["text"], message["author"], message["side"]) == ("Hi, Bob here", "Bob", "agent")


async def test_a_visitors_rate_limit_counts_every_workers_requests(
    postgres_url: str, redis_prefix: tuple[str, str], make_desk: DeskFactory, tmp_path: Path
) -> None:
    _desks, ports = await _two_workers(
        make_desk, postgres_url, redis_prefix, tmp_path, web_extra="      messages_per_minute: 3\n"
    )
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{ports[0]}/web/api/session", json={}) as resp:
            assert resp.status == 200
            auth = {"Authorization": f"Bearer {(await resp.json())['token']}"}
        statuses = []
        for n in range(4):  # a load balancer spreads the visitor's requests over both workers
            url = f"http://127.0.0.1:{ports[n % 2]}/web/api/messages"
            async with http.post(
                url, json={"client_id": f"client-{n}", "text": f"hello {n}"}, headers=auth
            ) as resp:
                statuses.append(resp.status)
                retry_after = resp.headers.get("Retry-After")
    assert statuses == [200, 200, 200, 429]  # 3 a minute in all, not 3 per worker
    assert retry_after == "20"
