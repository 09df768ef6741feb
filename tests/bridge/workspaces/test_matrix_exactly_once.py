"""Nothing lost, nothing doubled on the Matrix side (issue 14), against a real Synapse.

The homeserver restarting (and numbering its transactions from 1 again), transaction ids reused,
relaydesk crashing between creating a room and storing it or between a post and its sent mark,
customers' text mentioning agents, and the orphan rooms older versions left behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from nio import JoinedRoomsResponse

from bot_core.adapters import MessageView, RoomRef
from bot_core.context import StateStore
from bot_core.desk import Desk
from bot_core.testing import MemoryChannel
from bridge.workspaces.matrix.appservice import MatrixWorkspace
from bridge.workspaces.matrix.devserver import DevHomeserver, free_port, write_registration
from bridge.workspaces.matrix.portal import PORTAL_STATE, STATE_SCOPE, intent_key
from storage.models import OutboxItem, OutboxStatus, Room
from tests.bridge.workspaces.matrix_agent import Agent, mark_unsent, room_of
from tests.conftest import DeskFactory
from tests.matrix_server import SynapseInfo, require_synapse_for_tests

WORKTREE = Path(__file__).resolve().parents[3]


def desk_yaml(synapse: SynapseInfo, homeserver: str | None = None) -> str:
    return f"""
server: {{host: 127.0.0.1, port: {synapse.appservice_port}}}
plugins:
  - customers: {{use: "bot_core.testing:MemoryChannel"}}
  - matrix:
      use: "bridge.workspaces.matrix.appservice:MatrixWorkspace"
      config:
        homeserver: "{homeserver or synapse.base_url}"
        server_name: "{synapse.server_name}"
        registration: "{synapse.registration_path}"
        agents: ["{synapse.agent_user_id}"]
"""


async def start_desk(
    make_desk: DeskFactory, url: str, synapse: SynapseInfo, homeserver: str | None = None
) -> Desk:
    return await make_desk(
        url, desk_yaml(synapse, homeserver), serve_http=True, http_port=synapse.appservice_port
    )


async def bot_rooms(synapse: SynapseInfo, http: aiohttp.ClientSession) -> list[str]:
    """The rooms the appservice's bot is in."""
    headers = {"Authorization": f"Bearer {synapse.registration.as_token}"}
    async with http.get(f"{synapse.base_url}/_matrix/client/v3/joined_rooms", headers=headers) as resp:
        assert resp.status == 200
        return list((await resp.json())["joined_rooms"])


async def rooms_named(synapse: SynapseInfo, name: str) -> list[str]:
    """The bot's rooms called ``name`` (a customer's portal rooms are named after them)."""
    headers = {"Authorization": f"Bearer {synapse.registration.as_token}"}
    found = []
    async with aiohttp.ClientSession() as http:
        for room_id in await bot_rooms(synapse, http):
            url = f"{synapse.base_url}/_matrix/client/v3/rooms/{room_id}/state/m.room.name/"
            async with http.get(url, headers=headers) as resp:
                if resp.status == 200 and (await resp.json()).get("name") == name:
                    found.append(room_id)
    return found


# -- transactions -----------------------------------------------------------------------------------


async def test_a_transaction_id_reused_with_new_events_is_handled_and_replays_are_logged(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, caplog: pytest.LogCaptureFixture
) -> None:
    desk = await start_desk(make_desk, sqlite_url, synapse)
    channel = cast(MemoryChannel, desk.plugins["customers"])
    user = f"kai-{uuid.uuid4().hex[:6]}"
    await channel.customer_writes(user, "hello", name="Kai")
    assert await desk.wait_settled(30)
    room_id = await room_of(user)

    def agent_event(text: str) -> dict[str, Any]:
        return {
            "type": "m.room.message",
            "room_id": room_id,
            "sender": synapse.agent_user_id,
            "event_id": f"$ev-{uuid.uuid4().hex}",
            "content": {"msgtype": "m.text", "body": text},
        }

    base = f"http://127.0.0.1:{synapse.appservice_port}/_matrix/app/v1/transactions"
    txn = f"{base}/reused-{uuid.uuid4().hex}"
    first, second = agent_event("first answer"), agent_event("second answer, same transaction id")
    auth = {"Authorization": f"Bearer {synapse.registration.hs_token}"}
    caplog.set_level(logging.DEBUG)

    async def push(url: str, events: list[dict[str, Any]]) -> None:
        async with aiohttp.ClientSession() as http:
            async with http.put(url, data=json.dumps({"events": events}), headers=auth) as resp:
                assert resp.status == 200

    await push(txn, [first])
    await push(txn, [first])  # a replay: Synapse retries what it did not see acknowledged
    await push(txn, [second])  # the same id with a new event (a homeserver numbering from 1 again)
    await channel.sent.wait_for(lambda items: len(items) >= 2, 20)
    await push(f"{txn}-b", [first, second])  # both seen before, under a new id
    assert await desk.wait_settled(10)
    assert channel.texts_to(user) == ["first answer", "second answer, same transaction id"]
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.name.endswith("matrix")]
    assert (logging.DEBUG, "replayed transaction") in logged
    assert (logging.INFO, "transaction of events seen before") in logged


# -- room creation ----------------------------------------------------------------------------------


class CrashAfterCreateRoom:
    """A proxy in front of Synapse that, when armed, lets one createRoom through but loses its answer.

    To relaydesk this is a crash right after the homeserver made the room, before relaydesk stored it.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.armed = False
        self.lost: list[str] = []  # ids of the rooms whose answer was lost
        self.hit = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self._http = aiohttp.ClientSession(auto_decompress=False)
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._http.request(
            request.method, self.upstream + request.path_qs, data=await request.read(), headers=headers
        ) as upstream:
            body = await upstream.read()
            kept = {
                k: v for k, v in upstream.headers.items() if k.lower() in ("content-type", "content-encoding")
            }
            if self.armed and request.path.endswith("/createRoom") and upstream.status == 200:
                self.armed = False
                self.lost.append(json.loads(body)["room_id"])
                self.hit.set()
                return web.json_response({"errcode": "M_UNKNOWN", "error": "crash injected"}, status=500)
            return web.Response(status=upstream.status, body=body, headers=kept)


async def test_a_crash_between_creating_the_room_and_storing_it_leaves_one_room(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent
) -> None:
    proxy = CrashAfterCreateRoom(synapse.base_url)
    await proxy.start()
    try:
        proxy.armed = True
        desk = await start_desk(make_desk, sqlite_url, synapse, proxy.url)
        name = f"Lou {uuid.uuid4().hex[:6]}"
        user = f"lou-{uuid.uuid4().hex[:6]}"
        await cast(MemoryChannel, desk.plugins["customers"]).customer_writes(
            user, "is anyone there?", name=name
        )
        await asyncio.wait_for(proxy.hit.wait(), 20)
        await desk.stop(timeout=10)  # relaydesk "crashed": the room exists, nothing stored it

        desk = await start_desk(make_desk, sqlite_url, synapse, proxy.url)  # a fresh process, same database
        assert await desk.wait_settled(30)
        room_id = await room_of(user)
        assert room_id == proxy.lost[0]  # the room made before the crash was adopted
        assert await rooms_named(synapse, f"{name} (Customers)") == [room_id]
        await agent.sync_until(lambda: any(t == "is anyone there?" for _, t in agent.texts(room_id)))
    finally:
        await proxy.stop()


# -- posts ------------------------------------------------------------------------------------------


async def test_a_post_resent_after_a_crash_by_a_new_process_shows_once(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent
) -> None:
    desk = await start_desk(make_desk, sqlite_url, synapse)
    user = f"max-{uuid.uuid4().hex[:6]}"
    await cast(MemoryChannel, desk.plugins["customers"]).customer_writes(user, "my order is late", name="Max")
    assert await desk.wait_settled(30)
    room_id = await room_of(user)
    row = next(
        r
        for r in await OutboxItem.filter(conversation__room__external_id=room_id)
        if r.payload.get("text") == "my order is late"
    )
    await desk.stop(timeout=10)
    mark_unsent(sqlite_url, [row.id])  # the crash came after Synapse took the post, before the sent mark

    desk = await start_desk(make_desk, sqlite_url, synapse)  # the new process's ghost logs in again
    assert await desk.wait_settled(30)
    assert (await OutboxItem.get(id=row.id)).status == OutboxStatus.SENT
    await cast(MemoryChannel, desk.plugins["customers"]).customer_writes(user, "any news?", name="Max")
    await agent.sync_until(lambda: any(t == "any news?" for _, t in agent.texts(room_id)))
    assert [t for _, t in agent.texts(room_id)].count("my order is late") == 1


async def test_ghost_posts_mention_no_one_so_customer_text_never_highlights_an_agent(
    synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, agent: Agent
) -> None:
    desk = await start_desk(make_desk, sqlite_url, synapse)
    channel = cast(MemoryChannel, desk.plugins["customers"])
    matrix = cast(MatrixWorkspace, desk.plugins["matrix"])
    user = f"noa-{uuid.uuid4().hex[:6]}"
    await channel.customer_writes(user, "hello", name="Noa")
    assert await desk.wait_settled(30)
    room_id = await room_of(user)
    await agent.sync_until(lambda: any(t == "hello" for _, t in agent.texts(room_id)))  # joined

    text = f"agent, {synapse.agent_user_id} please answer @room"
    await channel.customer_writes(user, text, name="Noa")
    await agent.sync_until(lambda: any(t == text for _, t in agent.texts(room_id)))
    posted = next(c for c in agent.messages(room_id, matrix.ghost_id("customers", user)) if c["body"] == text)
    assert posted["m.mentions"] == {}
    assert "formatted_body" not in posted
    url = f"{synapse.base_url}/_matrix/client/v3/notifications?only=highlight"
    headers = {"Authorization": f"Bearer {agent.client.access_token}"}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        highlights = [n for n in (await resp.json())["notifications"] if n["room_id"] == room_id]
    assert highlights == []


# -- a homeserver of this module's own: restarted, and scanned for orphans ---------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def own_synapse() -> AsyncIterator[SynapseInfo]:
    """A Synapse for this module alone (the restart test stops it; the orphan scan sees only its rooms)."""
    require_synapse_for_tests()
    root = Path(tempfile.mkdtemp(prefix="relaydesk-synapse-own-"))
    port = free_port()
    registration = write_registration(
        root / "registration.yaml", url=f"http://127.0.0.1:{port}", server_name="localhost"
    )
    password = secrets.token_urlsafe(12)
    server = DevHomeserver(root / "synapse", registrations=[registration.path], agents=[("agent", password)])
    await server.start()
    try:
        yield SynapseInfo(
            base_url=server.base_url,
            server_name=server.server_name,
            registration=registration,
            appservice_port=port,
            agent_user_id=server.user_id("agent"),
            agent_password=password,
            data_dir=server.data_dir,
            server=server,
        )
    finally:
        await server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest_asyncio.fixture(loop_scope="session")
async def own_agent(own_synapse: SynapseInfo) -> AsyncIterator[Agent]:
    """The agent of this module's homeserver, logged in."""
    agent = Agent(own_synapse)
    await agent.login()
    yield agent
    await agent.client.close()


async def test_agents_answers_after_the_homeserver_restarted_reach_the_customer(
    own_synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, own_agent: Agent
) -> None:
    """Synapse on SQLite numbers its appservice transactions from 1 again after a restart."""
    desk = await start_desk(make_desk, sqlite_url, own_synapse)
    channel = cast(MemoryChannel, desk.plugins["customers"])
    user = f"ola-{uuid.uuid4().hex[:6]}"
    await channel.customer_writes(user, "hello", name="Ola")
    assert await desk.wait_settled(30)
    room_id = await room_of(user)
    await own_agent.sync_until(lambda: room_id in own_agent.client.rooms)
    await own_agent.say(room_id, "before the restart")
    await channel.sent.wait_for(lambda items: len(items) == 1, 20)
    # posts whose sent mark a crash lost are sent again after the restart: Synapse still knows them
    matrix = cast(MatrixWorkspace, desk.plugins["matrix"])
    room = RoomRef("matrix", room_id)
    view = MessageView(1, "posted once", "Ola", "customers", user, idempotency_key=f"k-{uuid.uuid4().hex}")
    notice_key = f"k-{uuid.uuid4().hex}"
    posted = [
        (await matrix.post_as_customer(room, view)).external_message_id,
        (await matrix.notice(room, "noticed once", key=notice_key)).external_message_id,
    ]

    await own_synapse.server.stop()
    await own_synapse.server.start()  # same port, same database; relaydesk keeps running

    await own_agent.say(room_id, "after the restart")
    await channel.sent.wait_for(lambda items: len(items) == 2, 30)
    assert channel.texts_to(user) == ["before the restart", "after the restart"]
    assert posted == [
        (await matrix.post_as_customer(room, view)).external_message_id,
        (await matrix.notice(room, "noticed once", key=notice_key)).external_message_id,
    ]


async def test_the_orphans_command_finds_and_closes_rooms_no_conversation_uses(
    own_synapse: SynapseInfo, sqlite_url: str, make_desk: DeskFactory, own_agent: Agent, tmp_path: Path
) -> None:
    desk = await start_desk(make_desk, sqlite_url, own_synapse)
    user = f"pia-{uuid.uuid4().hex[:6]}"
    await cast(MemoryChannel, desk.plugins["customers"]).customer_writes(user, "hello", name="Pia")
    assert await desk.wait_settled(30)
    stored = await room_of(user)
    assert await Room.all().count() == 1
    customer_id = (await Room.get(external_id=stored)).customer_id
    # a creation in progress for another customer: recorded, not stored yet (the next delivery adopts it)
    await StateStore("matrix", STATE_SCOPE).set(intent_key(customer_id + 1), {"key": "in-progress"})
    await desk.stop(timeout=10)
    headers = {"Authorization": f"Bearer {own_synapse.registration.as_token}"}

    async def bot_creates(key: str | None, customer: int) -> str:
        body: dict[str, Any] = {
            "name": "Pia (Customers)",
            "preset": "private_chat",
            "invite": [own_synapse.agent_user_id],
        }
        if key:
            marker = {"key": key, "customer_id": customer}
            body["initial_state"] = [{"type": PORTAL_STATE, "state_key": "", "content": marker}]
        async with aiohttp.ClientSession() as http:
            url = f"{own_synapse.base_url}/_matrix/client/v3/createRoom"
            async with http.post(url, json=body, headers=headers) as resp:
                return str((await resp.json())["room_id"])

    # what an older version left after a crash: a room made by the bot, the agent in it, stored nowhere
    orphan = await bot_creates(None, customer_id)
    in_progress = await bot_creates("in-progress", customer_id + 1)
    duplicate = await bot_creates("another-key", customer_id)  # a marked room for a customer stored elsewhere
    await own_agent.client.join(orphan)
    config = tmp_path / "plugins.yaml"
    config.write_text(f'storage: {{database: "{sqlite_url}"}}\n' + desk_yaml(own_synapse), encoding="utf-8")

    async def command(*extra: str) -> str:
        env = {**os.environ, "PYTHONPATH": str(WORKTREE)}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot_core",
            "matrix",
            "orphans",
            "-c",
            str(config),
            *extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        out, _ = await process.communicate()
        assert process.returncode == 0, out.decode()
        return out.decode()

    listed = await command()
    # (rooms of the module's other tests, stored in their own databases, are orphans here too)
    assert orphan in listed and duplicate in listed and "orphan portal room" in listed
    assert stored not in listed and in_progress not in listed
    assert own_synapse.agent_user_id in listed
    async with aiohttp.ClientSession() as http:
        assert orphan in await bot_rooms(own_synapse, http)  # listing changes nothing

    closed = await command("--close")
    assert orphan in closed and "closed" in closed
    async with aiohttp.ClientSession() as http:
        rooms = await bot_rooms(own_synapse, http)
    assert orphan not in rooms and duplicate not in rooms
    assert stored in rooms and in_progress in rooms
    joined = await own_agent.client.joined_rooms()
    assert isinstance(joined, JoinedRoomsResponse) and orphan not in joined.rooms  # the agent was removed
