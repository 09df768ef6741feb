"""A transaction pushed with the right hs_token but a body that is not a transaction gets a 4xx, not a 500."""

from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp

from storage.models import InboundReceipt
from tests.conftest import DeskFactory
from tests.matrix_server import SynapseInfo


async def test_a_malformed_transaction_body_is_refused_with_400_and_changes_nothing(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory
) -> None:
    yaml_text = f"""
server: {{host: 127.0.0.1, port: {synapse.appservice_port}}}
plugins:
  - customers: {{use: "bot_core.testing:MemoryChannel"}}{synapse.matrix_plugin_yaml()}
"""
    desk = await make_desk(sqlite_url, yaml_text, serve_http=True, http_port=synapse.appservice_port)
    base = f"http://127.0.0.1:{synapse.appservice_port}/_matrix/app/v1/transactions/txn-{uuid.uuid4().hex}"
    auth = {"Authorization": f"Bearer {synapse.registration.hs_token}"}
    async with aiohttp.ClientSession() as http:
        for n, body in enumerate(
            [
                b"not json",
                b"\xff\xfe{}",
                b"[1, 2]",
                b'{"events": "not a list"}',
                b'{"events": [], "ephemeral": {"a": 1}}',
                ("[" * 30_000 + "]" * 30_000).encode(),
            ]
        ):
            async with http.put(f"{base}-{n}", data=body, headers=auth) as resp:
                assert resp.status == 400, body
                assert (await resp.json())["errcode"] == "M_NOT_JSON"
        # entries that are not events are skipped; the transaction itself is fine
        odd = {"events": [1, "event", None, {"type": "m.room.message", "content": "not an object"}]}
        async with http.put(f"{base}-odd", data=json.dumps(odd), headers=auth) as resp:
            assert resp.status == 200
        # events with fields of the wrong shape (from an agent, in a room) are skipped, not a 500
        agent = synapse.agent_user_id
        shapes = [
            {"m.relates_to": "not an object", "msgtype": "m.text", "body": "x"},
            {
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$e"},
                "msgtype": "m.text",
                "m.new_content": 7,
            },
            {"msgtype": "m.text", "body": {"not": "text"}},
            {"msgtype": "m.image", "url": ["mxc://x/y"], "body": "f"},
        ]
        malformed = {
            "events": [
                {
                    "type": "m.room.message",
                    "room_id": "!r:localhost",
                    "sender": agent,
                    "event_id": f"$bad{n}",
                    "origin_server_ts": "yesterday" if n == 0 else 1,
                    "content": content,
                }
                for n, content in enumerate(shapes)
            ]
        }
        async with http.put(f"{base}-shapes", data=json.dumps(malformed), headers=auth) as resp:
            assert resp.status == 200, await resp.text()
    # a token header of bytes that are not UTF-8 is a wrong token, not a server error
    reader, writer = await asyncio.open_connection("127.0.0.1", synapse.appservice_port)
    writer.write(
        b"PUT /_matrix/app/v1/transactions/raw HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Authorization: Bearer \xff\xfe\r\n\r\n{}"
    )
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert status_line.split()[1] == b"403"
    assert await desk.wait_settled(10)
    assert [(r.source, r.external_id) for r in await InboundReceipt.all()] == []
