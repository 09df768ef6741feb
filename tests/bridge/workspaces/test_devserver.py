"""The dev homeserver against a real Synapse: accounts, appservice ghosts, pushed transactions, restarts.

Uses the session's ``synapse`` fixture (tests/matrix_server.py), and starts one more short-lived Synapse
for the ``relaydesk dev-homeserver`` / restart test.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nio
import pytest
import pytest_asyncio
from aiohttp import web

from bridge.workspaces.matrix.devserver import (
    DevHomeserver,
    free_port,
    load_registration,
    run_dev_homeserver,
    write_registration,
)
from tests.matrix_server import SynapseInfo, require_synapse_for_tests

# -- helpers ----------------------------------------------------------------------------------------


@dataclass
class Received:
    """One request Synapse made to the appservice."""

    at: float
    method: str
    path: str
    authorization: str | None
    query: dict[str, str]
    body: dict[str, Any]


@dataclass
class Receiver:
    """A tiny appservice on the fixture's port: records every request; can be told to answer 503."""

    port: int
    received: list[Received] = field(default_factory=list)
    failing: bool = False
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        async with self._changed:
            self.received.append(
                Received(
                    at=asyncio.get_running_loop().time(),
                    method=request.method,
                    path=request.path,
                    authorization=request.headers.get("Authorization"),
                    query=dict(request.query),
                    body=body,
                )
            )
            self._changed.notify_all()
        if self.failing:
            return web.json_response({"errcode": "M_UNKNOWN", "error": "down for the test"}, status=503)
        return web.json_response({})

    def transactions_with(self, event_id: str) -> list[Received]:
        """Every transaction push that carried ``event_id`` (retries included)."""
        return [
            r
            for r in self.received
            if r.path.startswith("/_matrix/app/v1/transactions/")
            and any(e.get("event_id") == event_id for e in r.body.get("events", []))
        ]

    def transactions_since(self, mark: int) -> list[Received]:
        """Every transaction push received after the first ``mark`` requests."""
        return [r for r in self.received[mark:] if r.path.startswith("/_matrix/app/v1/transactions/")]

    async def wait_for_transactions(
        self, mark: int, *, count: int = 1, timeout: float = 10.0
    ) -> list[Received]:
        """Wait until ``count`` transaction pushes came after the first ``mark`` requests."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: len(self.transactions_since(mark)) >= count), timeout
            )
        return self.transactions_since(mark)

    async def wait_for(self, event_id: str, *, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """Wait until ``count`` pushes carried ``event_id``."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: len(self.transactions_with(event_id)) >= count), timeout
            )
        return self.transactions_with(event_id)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def receiver(synapse: SynapseInfo) -> AsyncIterator[Receiver]:
    """Listen on the appservice port for this module, so Synapse never backs off while we act.

    The ping makes Synapse flush what earlier tests left queued (and end any back-off) right away.
    """
    rec = Receiver(synapse.appservice_port)
    await rec.start()
    async with aiohttp.ClientSession() as session:
        await as_call(
            session, synapse, "POST", f"/_matrix/client/v1/appservice/{synapse.registration.id}/ping"
        )
    yield rec
    await rec.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def agent(synapse: SynapseInfo) -> AsyncIterator[nio.AsyncClient]:
    """The fixture's agent, logged in with nio."""
    client = nio.AsyncClient(synapse.base_url, synapse.agent_user_id)
    response = await client.login(synapse.agent_password)
    assert isinstance(response, nio.LoginResponse), response
    yield client
    await client.logout()
    await client.close()


async def as_call(
    http: aiohttp.ClientSession,
    synapse: SynapseInfo,
    method: str,
    path: str,
    *,
    user_id: str | None = None,
    json: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A client-API call with the as_token, masquerading as ``user_id`` when given."""
    async with http.request(
        method,
        f"{synapse.base_url}{path}",
        params={"user_id": user_id} if user_id else None,
        json=json if json is not None else {},
        headers={"Authorization": f"Bearer {synapse.registration.as_token}"},
    ) as response:
        data: dict[str, Any] = await response.json()
        assert response.status == 200, (method, path, response.status, data)
        return data


async def register_ghost(http: aiohttp.ClientSession, synapse: SynapseInfo, localpart: str) -> dict[str, Any]:
    """Register a ghost in the appservice's namespace with the as_token."""
    body = {"type": "m.login.application_service", "username": localpart}
    return await as_call(http, synapse, "POST", "/_matrix/client/v3/register", json=body)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ghost_room(
    synapse: SynapseInfo, http: aiohttp.ClientSession, agent: nio.AsyncClient, receiver: Receiver
) -> tuple[str, str]:
    """A room created by the agent that a ghost has joined: (room id, ghost user id)."""
    ghost = (await register_ghost(http, synapse, "relay_test_room"))["user_id"]
    created = await agent.room_create(name="ghost room", invite=[ghost])
    assert isinstance(created, nio.RoomCreateResponse), created
    await as_call(http, synapse, "POST", f"/_matrix/client/v3/join/{created.room_id}", user_id=ghost)
    return created.room_id, ghost


async def agent_says(agent: nio.AsyncClient, room_id: str, text: str) -> str:
    """Send a text message as the agent; return its event id."""
    sent = await agent.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": text})
    assert isinstance(sent, nio.RoomSendResponse), sent
    return str(sent.event_id)


# -- the session's homeserver -----------------------------------------------------------------------


async def test_server_answers_versions(synapse: SynapseInfo, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{synapse.base_url}/_matrix/client/versions") as response:
        assert response.status == 200
        assert (await response.json())["versions"]
    assert synapse.agent_user_id == f"@agent:{synapse.server_name}"
    assert synapse.registration.url == synapse.appservice_url


async def test_agent_logs_in_with_nio_and_creates_a_room(synapse: SynapseInfo) -> None:
    client = nio.AsyncClient(synapse.base_url, synapse.agent_user_id)
    try:
        login = await client.login(synapse.agent_password)
        assert isinstance(login, nio.LoginResponse), login
        created = await client.room_create(name="support")
        assert isinstance(created, nio.RoomCreateResponse), created
        joined = await client.joined_rooms()
        assert isinstance(joined, nio.JoinedRoomsResponse)
        assert created.room_id in joined.rooms
        await client.logout()
    finally:
        await client.close()


async def test_appservice_registers_a_ghost_that_speaks_by_masquerade(
    synapse: SynapseInfo, http: aiohttp.ClientSession, agent: nio.AsyncClient, receiver: Receiver
) -> None:
    registered = await register_ghost(http, synapse, "relay_test_1")
    ghost = f"@relay_test_1:{synapse.server_name}"
    assert registered["user_id"] == ghost
    assert registered["access_token"]  # the ghost's own token works too
    async with http.get(
        f"{synapse.base_url}/_matrix/client/v3/account/whoami",
        headers={"Authorization": f"Bearer {registered['access_token']}"},
    ) as response:
        assert (await response.json())["user_id"] == ghost

    created = await agent.room_create(name="customer", invite=[ghost])
    assert isinstance(created, nio.RoomCreateResponse), created
    await as_call(http, synapse, "POST", f"/_matrix/client/v3/join/{created.room_id}", user_id=ghost)
    txn = secrets.token_hex(8)
    sent = await as_call(
        http,
        synapse,
        "PUT",
        f"/_matrix/client/v3/rooms/{created.room_id}/send/m.room.message/{txn}",
        user_id=ghost,
        json={"msgtype": "m.text", "body": "hello from the customer"},
    )
    event = await agent.room_get_event(created.room_id, sent["event_id"])
    assert isinstance(event, nio.RoomGetEventResponse), event
    assert event.event.sender == ghost
    assert isinstance(event.event, nio.RoomMessageText)
    assert event.event.body == "hello from the customer"


async def test_outside_the_namespace_the_as_token_cannot_register(
    synapse: SynapseInfo, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        f"{synapse.base_url}/_matrix/client/v3/register",
        json={"type": "m.login.application_service", "username": "mallory"},
        headers={"Authorization": f"Bearer {synapse.registration.as_token}"},
    ) as response:
        assert response.status == 400
        assert (await response.json())["errcode"] == "M_EXCLUSIVE"


async def test_agent_message_is_pushed_with_the_hs_token_in_the_header(
    synapse: SynapseInfo, agent: nio.AsyncClient, ghost_room: tuple[str, str], receiver: Receiver
) -> None:
    room_id, _ghost = ghost_room
    event_id = await agent_says(agent, room_id, "hi, how can I help?")
    [push] = await receiver.wait_for(event_id)
    assert push.method == "PUT"
    assert push.path.startswith("/_matrix/app/v1/transactions/")
    assert push.authorization == f"Bearer {synapse.registration.hs_token}"
    # Synapse 1.163 sends the hs_token only in the header (the legacy ?access_token= is off by default).
    assert "access_token" not in push.query
    [event] = [e for e in push.body["events"] if e["event_id"] == event_id]
    assert event["sender"] == synapse.agent_user_id
    assert event["room_id"] == room_id
    assert event["content"]["body"] == "hi, how can I help?"


async def test_a_failed_push_is_retried_with_the_same_txn_id_at_once_after_a_ping(
    synapse: SynapseInfo,
    http: aiohttp.ClientSession,
    agent: nio.AsyncClient,
    ghost_room: tuple[str, str],
    receiver: Receiver,
) -> None:
    room_id, _ghost = ghost_room
    # End any back-off a push earlier in the session left (seen once in a full run: no push for 10 s).
    await as_call(http, synapse, "POST", f"/_matrix/client/v1/appservice/{synapse.registration.id}/ping")
    mark = len(receiver.received)
    receiver.failing = True
    try:
        event_id = await agent_says(agent, room_id, "are you there?")
        # the first push after this fails: the message, or (presence is on) the agent's presence first
        failed = (await receiver.wait_for_transactions(mark))[0]
    finally:
        receiver.failing = False
    await asyncio.sleep(0.3)  # Synapse marks the appservice down and schedules a retry in 2 s
    pong = await as_call(
        http,
        synapse,
        "POST",
        f"/_matrix/client/v1/appservice/{synapse.registration.id}/ping",
        json={"transaction_id": "relaydesk-test"},
    )
    assert "duration_ms" in pong
    ping = [r for r in receiver.received if r.path == "/_matrix/app/v1/ping"][-1]
    assert ping.body == {"transaction_id": "relaydesk-test"}
    assert ping.authorization == f"Bearer {synapse.registration.hs_token}"

    pushes = await receiver.wait_for_transactions(mark, count=2, timeout=5)
    assert pushes[1].path == failed.path  # same transaction id: the appservice must dedupe on it
    ids = [[e.get("event_id") for e in p.body.get("events", [])] for p in (failed, pushes[1])]
    assert ids[0] == ids[1]  # the same events again
    assert pushes[1].at - failed.at < 1.5  # the ping's retry, not the 2 s back-off
    await receiver.wait_for(event_id, timeout=5)  # and the message gets through (in it or right after)


# -- run_dev_homeserver and restarts ----------------------------------------------------------------


def test_registration_round_trip_and_hand_written_forms(tmp_path: Path) -> None:
    written = write_registration(tmp_path / "reg.yaml", url=None, server_name="chat.example.org")
    loaded = load_registration(tmp_path / "reg.yaml")
    assert loaded == written
    assert loaded.user_namespace == r"@relay_.*:chat\.example\.org"
    assert loaded.sender_user_id == "@relaydesk:chat.example.org"
    assert loaded.ghost_user_id("telegram_42") == "@relay_telegram_42:chat.example.org"
    assert (tmp_path / "reg.yaml").stat().st_mode & 0o077 == 0

    (tmp_path / "hand.yaml").write_text(
        "id: x\nurl: http://127.0.0.1:1\nas_token: a\nhs_token: h\nsender_localpart: bot\n"
        "namespaces:\n  users:\n    - {exclusive: true, regex: '@_wa_.*'}\n"
    )
    hand = load_registration(tmp_path / "hand.yaml")
    assert (hand.user_prefix, hand.server_name) == ("_wa_", "")

    (tmp_path / "bad.yaml").write_text("id: x\nas_token: a\nsender_localpart: bot\n")
    with pytest.raises(ValueError, match="hs_token"):
        load_registration(tmp_path / "bad.yaml")


async def test_dev_homeserver_command_then_restart_keeps_users_and_rooms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_synapse_for_tests()
    data_dir, registration = tmp_path / "hs", tmp_path / "relaydesk-registration.yaml"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    task = asyncio.create_task(run_dev_homeserver(data_dir, port, registration, "http://127.0.0.1:9"))
    try:
        out = ""
        async with asyncio.timeout(30):
            while "Press Ctrl-C" not in out:
                if task.done():
                    task.result()  # raises what stopped it
                    pytest.fail("run_dev_homeserver returned before it was cancelled")
                await asyncio.sleep(0.1)
                out += capsys.readouterr().out
        password = (data_dir / "agent-password").read_text().strip()
        assert f"homeserver:  {base_url}" in out
        assert f"password:    {password}" in out
        assert load_registration(registration).url == "http://127.0.0.1:9"

        client = nio.AsyncClient(base_url, "@agent:localhost")
        try:
            assert isinstance(await client.login(password), nio.LoginResponse)
            created = await client.room_create(name="kept")
            assert isinstance(created, nio.RoomCreateResponse)
        finally:
            await client.close()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    # Same data_dir and port: the agent is created again without error, the room is still there.
    server = DevHomeserver(data_dir, port=port, registrations=[registration], agents=[("agent", password)])
    async with server:
        client = nio.AsyncClient(server.base_url, "@agent:localhost")
        try:
            assert isinstance(await client.login(password), nio.LoginResponse)
            joined = await client.joined_rooms()
            assert isinstance(joined, nio.JoinedRoomsResponse)
            assert created.room_id in joined.rooms
        finally:
            await client.close()
    assert not server.running
