"""Throughput of the Matrix relay: relaydesk posting customer messages into Synapse, against bare nio.

One throwaway Synapse (:class:`bridge.workspaces.matrix.devserver.DevHomeserver`) serves the whole
run, with relaydesk's appservice registered on it; one desk serves the appservice port throughout.
Each round runs two passes against it:

``relaydesk``
    The desk (SQLite, in-process bus with its journal, ``MemoryChannel`` + ``MatrixWorkspace`` in
    appservice mode) relays ``--messages`` customer messages, spread evenly over ``--rooms``
    customers, into their portal rooms. Each customer first writes one warm-up message, which creates
    the portal room, the ghost and the pinned card: that is not timed. The clock runs from the first
    ``MemoryChannel.customer_writes`` of the measured messages until the last of them was posted
    (``post_as_customer`` returned its event id). Every message goes the whole way: journaled on the
    bus, stored by the relay, queued in the outbox, claimed, posted by the customer's ghost, marked sent.
``bare nio``
    The floor set by Synapse itself: as many messages sent with plain ``nio.AsyncClient.room_send``
    calls into as many rooms, set up as portal rooms are (made by the appservice's bot, the agent
    invited, one ghost of the appservice's namespace joined and sending). Like relaydesk's outbox, each
    room's messages go one at a time, in order, and the rooms run in parallel. The desk keeps serving
    the appservice meanwhile, so Synapse pushes the same transactions to it as in the relaydesk pass.

Before each pass's clock starts, the bench waits until Synapse is quiet (under 5 % of a CPU for a
quarter of a second, at most 15 s): the untimed set-up (rooms, ghosts and their profiles, the pinned
card) leaves Synapse background work (user directory, room statistics) that would otherwise be billed
to whichever pass follows it.

Rounds alternate which pass goes first (bare, relaydesk / relaydesk, bare / ...) so that drift of
the machine's load does not favour one of them; the reported ratio is the median of the rounds' ratios.
After every pass the rooms are read back from Synapse and checked: every message arrived once, in order.
Besides the rates, the table shows the CPU time of this process (the desk, or the bare clients) and
of Synapse per message, which are less sensitive than rates to other load on the machine.

On a small machine Synapse and the desk compete for the same cores, and every millisecond of CPU the
desk spends per message slows Synapse down as well. ``--pin`` gives Synapse a CPU of its own (the
first) and this process the others, as if they ran on separate hosts.

Usage::

    python -m bench.matrix                   # 500 messages over 10 rooms, 3 rounds
    python -m bench.matrix --quick           # 100 messages over 5 rooms, 1 round
    python -m bench.matrix --messages 1000 --rooms 20 --rounds 5
    python -m bench.matrix --asyncio         # asyncio's own loop instead of uvloop
    python -m bench.matrix --pin             # Synapse on CPU 0, the bench on the other CPUs

Like ``relaydesk run``, the bench runs on uvloop where it is installed (both passes share the loop).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import aiohttp
from nio import AsyncClient, MessageDirection, RoomMessagesResponse, RoomPreset, RoomSendResponse

from bot_core.adapters import MessageView, PostedRef, RoomRef
from bot_core.cli import use_fast_event_loop
from bot_core.config import DeskConfig, parse_config
from bot_core.desk import Desk
from bot_core.testing import MemoryChannel
from bridge.workspaces.matrix.appservice import MatrixWorkspace
from bridge.workspaces.matrix.devserver import (
    DevHomeserver,
    Registration,
    free_port,
    require_synapse,
    write_registration,
)
from bridge.workspaces.matrix.roster import portal_power_levels
from storage.db import migrate
from storage.models import Identity, OutboxItem, OutboxStatus, Room

DEFAULT_MESSAGES = 500
DEFAULT_ROOMS = 10
DEFAULT_ROUNDS = 3
QUICK_MESSAGES = 100
QUICK_ROOMS = 5
RATIO_GOAL = 0.9
"""relaydesk's rate should be at least this share of bare nio's."""

SERVER_NAME = "localhost"
AGENT_LOCALPART = "agent"
CHANNEL = "customers"
WORKSPACE = "matrix"
PROGRESS_EVERY = 2.0
"""Seconds between two progress lines while a pass runs."""

Progress = Callable[[str], None]


def _quiet(_line: str) -> None:
    """A progress sink that drops everything."""


# --------------------------------------------------------------------------------------------------
# The homeserver


@dataclass(frozen=True)
class MatrixTarget:
    """A running homeserver with relaydesk's appservice registered (``tests.matrix_server`` has one too)."""

    base_url: str
    server_name: str
    registration: Registration
    appservice_port: int
    """Where Synapse pushes transactions: the desk under test serves HTTP here."""
    agent_user_id: str = ""
    """A real user invited to every room, as agents are to portal rooms (empty: nobody)."""
    server_pid: int | None = None
    """Synapse's process id, to read its CPU time (None: not measured)."""


@asynccontextmanager
async def dev_homeserver(progress: Progress = _quiet) -> AsyncIterator[MatrixTarget]:
    """Start a throwaway Synapse in a temporary directory; it is stopped and the directory removed after."""
    require_synapse()
    root = Path(tempfile.mkdtemp(prefix="relaydesk-bench-matrix-"))
    server: DevHomeserver | None = None
    try:
        appservice_port = free_port()
        registration = write_registration(
            root / "relaydesk-registration.yaml",
            url=f"http://127.0.0.1:{appservice_port}",
            server_name=SERVER_NAME,
        )
        server = DevHomeserver(
            root / "synapse",
            server_name=SERVER_NAME,
            registrations=[registration.path],
            agents=[(AGENT_LOCALPART, uuid.uuid4().hex)],
        )
        await server.start()
        progress(f"synapse up on {server.base_url} in {server.startup_seconds or 0:.1f} s")
        yield MatrixTarget(
            base_url=server.base_url,
            server_name=server.server_name,
            registration=registration,
            appservice_port=appservice_port,
            agent_user_id=server.user_id(AGENT_LOCALPART),
            server_pid=server.pid,
        )
    finally:
        if server is not None:
            await server.stop()
        shutil.rmtree(root, ignore_errors=True)


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds used so far by process ``pid`` (Linux ``/proc``; None elsewhere)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SETTLE_SAMPLE = 0.25
"""Seconds per sample while waiting for Synapse to go quiet."""
SETTLE_BUSY = 0.05
"""Synapse counts as quiet once it used less than this share of a CPU during one sample."""
SETTLE_TIMEOUT = 15.0


async def server_settled(pid: int | None, progress: Progress = _quiet) -> None:
    """Wait until Synapse has finished the background work the untimed set-up left (user directory,
    room statistics, appservice pushes), so that neither pass's timed window pays for its set-up."""
    deadline = time.perf_counter() + SETTLE_TIMEOUT
    before = process_cpu_seconds(pid)
    while before is not None and time.perf_counter() < deadline:
        await asyncio.sleep(SETTLE_SAMPLE)
        now = process_cpu_seconds(pid)
        if now is None or now - before < SETTLE_BUSY * SETTLE_SAMPLE:
            return
        before = now
    if before is not None:
        progress(f"  Synapse still busy after {SETTLE_TIMEOUT:.0f} s; timing anyway")


def pin_cpus(server_pid: int | None) -> str:
    """Give Synapse the first CPU and this process the others (Linux): as if they ran on separate hosts.

    Threads started later inherit their creator's CPUs. Returns what was done, for the report.
    """
    if server_pid is None or not hasattr(os, "sched_setaffinity"):
        return "not pinned (no CPU affinity here)"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "not pinned (one CPU)"
    synapse_cpus, own_cpus = {cpus[0]}, set(cpus[1:])
    for task in os.listdir(f"/proc/{server_pid}/task"):
        os.sched_setaffinity(int(task), synapse_cpus)
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        os.sched_setaffinity(int(task), own_cpus)
    return f"Synapse pinned to CPU {cpus[0]}, relaydesk and bare nio to CPU {','.join(map(str, cpus[1:]))}"


# --------------------------------------------------------------------------------------------------
# The desk under test


class CountingMatrixWorkspace(MatrixWorkspace):
    """The Matrix workspace, noting when it posted each customer message."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.posted: dict[str, float] = {}
        """Message text -> ``time.perf_counter()`` when it was first posted."""
        self._base = 0
        self._target = 0
        self._reached = asyncio.Event()

    async def post_as_customer(self, room: RoomRef, message: MessageView) -> PostedRef:
        """Post as the plain workspace does, then count the post."""
        ref = await super().post_as_customer(room, message)
        self.posted.setdefault(message.text, time.perf_counter())
        if len(self.posted) >= self._target:
            self._reached.set()
        return ref

    def expect(self, count: int) -> int:
        """Note that ``count`` more messages are to be posted; returns the total to wait for."""
        self._base = len(self.posted)
        self._target = self._base + count
        self._reached.clear()
        return self._target

    async def wait_posted(self, until: int, timeout: float, progress: Progress = _quiet) -> None:
        """Wait until ``until`` messages were posted in all (see :meth:`expect`), reporting progress."""
        base = self._base
        deadline = time.perf_counter() + timeout
        while len(self.posted) < until:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(
                    f"only {len(self.posted) - base} of {until - base} messages were posted in {timeout:.0f} s"
                )
            try:
                await asyncio.wait_for(self._reached.wait(), min(PROGRESS_EVERY, left))
            except TimeoutError:
                progress(f"  relaydesk: {len(self.posted) - base}/{until - base} posted")


def desk_config(target: MatrixTarget, database_url: str) -> DeskConfig:
    """The desk's config: MemoryChannel + the counting Matrix workspace, HTTP on the appservice port."""
    agents = f'["{target.agent_user_id}"]' if target.agent_user_id else "[]"
    text = f"""
server: {{host: 127.0.0.1, port: {target.appservice_port}}}
plugins:
  - {CHANNEL}: {{use: "bot_core.testing:MemoryChannel"}}
  - {WORKSPACE}:
      use: "bridge.workspaces.matrix.appservice:MatrixWorkspace"
      config:
        homeserver: "{target.base_url}"
        server_name: "{target.server_name}"
        registration: "{target.registration.path}"
        agents: {agents}
"""
    config = parse_config(text, "bench-matrix.yaml", environ={})
    plugins = [
        dataclasses.replace(spec, plugin_class=CountingMatrixWorkspace)
        if spec.instance_name == WORKSPACE
        else spec
        for spec in config.plugins
    ]
    storage = config.storage.model_copy(update={"database": database_url})
    return config.model_copy(update={"storage": storage, "plugins": plugins})


@asynccontextmanager
async def bench_desk(target: MatrixTarget) -> AsyncIterator[Desk]:
    """A started desk on a fresh SQLite file, serving the appservice API; stopped and removed after."""
    with tempfile.TemporaryDirectory(prefix="relaydesk-bench-matrix-db-") as tmp:
        url = f"sqlite://{Path(tmp) / 'relaydesk.db'}"
        await migrate(url)
        desk = Desk(desk_config(target, url), serve_http=True)
        try:
            await desk.start()
            yield desk
        finally:
            await desk.stop(timeout=30)


# --------------------------------------------------------------------------------------------------
# Workload and checks


def split(messages: int, rooms: int) -> list[int]:
    """How many of ``messages`` go to each of ``rooms``: as even as possible, the first rooms get more."""
    base, extra = divmod(messages, rooms)
    return [base + (1 if r < extra else 0) for r in range(rooms)]


def message_text(run: str, room: int, i: int) -> str:
    """The text of message ``i`` of room ``room`` in pass ``run`` (unique: it identifies the message)."""
    return f"{run} room {room} message {i}"


@dataclass(frozen=True)
class RoomCheck:
    """What one room must show: ``expected`` texts sent by ``sender``, in this order, once each."""

    room_id: str
    sender: str
    expected: list[str]


@dataclass
class PassResult:
    """What one pass measured, and what Synapse showed afterwards."""

    name: str
    messages: int
    rooms: int
    seconds: float
    """From the first measured send (or ``customer_writes``) to the last message posted."""
    cpu_ms: float
    """CPU time of this process during the measured window, per message."""
    synapse_cpu_ms: float | None = None
    """Synapse's CPU time during the measured window, per message (None: not measured)."""
    problems: list[str] = field(default_factory=list)
    """What went wrong in the rooms (empty: every message arrived once, in order)."""
    rooms_checked: list[RoomCheck] = field(default_factory=list)
    """The rooms read back from Synapse, with who sent what into each."""

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class _Meter:
    """Wall clock and CPU times (this process, Synapse) of a measured window."""

    synapse_pid: int | None
    wall: float = 0.0
    cpu: float = 0.0
    synapse: float | None = None

    def start(self) -> None:
        """Start the window now."""
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.synapse = process_cpu_seconds(self.synapse_pid)

    def result(self, name: str, messages: int, rooms: int, end: float | None = None) -> PassResult:
        """The pass's figures, the window ending now (or at ``end``, a ``perf_counter`` time)."""
        seconds = (end if end is not None else time.perf_counter()) - self.wall
        cpu_ms = (time.process_time() - self.cpu) * 1000 / messages
        synapse_now = process_cpu_seconds(self.synapse_pid)
        synapse_ms = None
        if synapse_now is not None and self.synapse is not None:
            synapse_ms = (synapse_now - self.synapse) * 1000 / messages
        return PassResult(name, messages, rooms, seconds, cpu_ms, synapse_ms)


async def room_texts(client: AsyncClient, room_id: str, sender: str) -> list[str]:
    """Bodies of every ``m.room.message`` ``sender`` sent in the room, oldest first (paged from Synapse)."""
    bodies: list[str] = []
    start = ""
    while True:
        response = await client.room_messages(
            room_id, start=start, limit=1000, direction=MessageDirection.back
        )
        if not isinstance(response, RoomMessagesResponse):
            raise RuntimeError(f"reading {room_id} back failed: {response}")
        for event in response.chunk:
            source = event.source
            if source.get("type") == "m.room.message" and source.get("sender") == sender:
                bodies.append(str(source.get("content", {}).get("body", "")))
        if not response.chunk or not response.end or response.end == start:
            break
        start = response.end
    bodies.reverse()
    return bodies


async def check_rooms(client: AsyncClient, rooms: Sequence[RoomCheck], run: str) -> list[str]:
    """Compare what each room shows of pass ``run`` (texts starting with it) with what was sent."""
    problems: list[str] = []
    for room in rooms:
        got = [t for t in await room_texts(client, room.room_id, room.sender) if t.startswith(f"{run} ")]
        if got == room.expected:
            continue
        missing = len(set(room.expected) - set(got))
        doubled = len(got) - len(set(got))
        problems.append(
            f"{room.room_id}: {len(got)} messages, {len(room.expected)} expected "
            f"({missing} missing, {doubled} doubled{'' if missing or doubled else ', out of order'})"
        )
    return problems


def _bot_client(target: MatrixTarget) -> AsyncClient:
    """A nio client acting as the appservice's own user (authenticated by the as_token)."""
    client = AsyncClient(target.base_url, target.registration.sender_user_id)
    client.access_token = target.registration.as_token
    client.user_id = target.registration.sender_user_id
    return client


async def _verify(target: MatrixTarget, rooms: Sequence[RoomCheck], run: str) -> list[str]:
    bot = _bot_client(target)
    try:
        return await check_rooms(bot, rooms, run)
    finally:
        await bot.close()


# --------------------------------------------------------------------------------------------------
# The relaydesk pass


async def relaydesk_pass(
    desk: Desk, target: MatrixTarget, messages: int, rooms: int, progress: Progress = _quiet
) -> PassResult:
    """Relay ``messages`` customer messages over ``rooms`` new customers through ``desk`` into Synapse."""
    channel = cast(MemoryChannel, desk.plugins[CHANNEL])
    workspace = cast(CountingMatrixWorkspace, desk.plugins[WORKSPACE])
    run = f"rd{uuid.uuid4().hex[:8]}"
    users = [f"{run}-cust{r:03d}" for r in range(rooms)]
    counts = split(messages, rooms)
    budget = 120.0 + messages / 5

    progress(f"relaydesk: warming up ({rooms} portal rooms with their ghosts and cards)")
    warm_started = time.perf_counter()
    warm = [channel.customer_writes(u, f"warm-up {u}", name=f"Bench {r}") for r, u in enumerate(users)]
    until = workspace.expect(rooms)
    await asyncio.gather(*warm)
    await workspace.wait_posted(until, budget, progress)
    if not await desk.wait_settled(budget):
        raise TimeoutError("the desk did not settle after the warm-up")
    progress(f"relaydesk: rooms ready in {time.perf_counter() - warm_started:.1f} s; relaying {messages}")
    sent_before = await OutboxItem.filter(status=OutboxStatus.SENT).count()

    async def customer(r: int) -> None:
        for i in range(counts[r]):
            await channel.customer_writes(users[r], message_text(run, r, i), name=f"Bench {r}")

    until = workspace.expect(messages)
    await server_settled(target.server_pid, progress)
    meter = _Meter(target.server_pid)
    meter.start()
    await asyncio.gather(*(customer(r) for r in range(rooms)))
    await workspace.wait_posted(until, budget, progress)
    last = max(workspace.posted[message_text(run, r, i)] for r in range(rooms) for i in range(counts[r]))
    result = meter.result("relaydesk", messages, rooms, end=last)
    progress(f"relaydesk: {messages} messages in {result.seconds:.2f} s ({result.rate:.1f} msg/s)")

    if not await desk.wait_settled(budget):
        raise TimeoutError("the desk did not settle after the measured messages")
    sent = await OutboxItem.filter(status=OutboxStatus.SENT).count() - sent_before
    unsent = await OutboxItem.filter(status__not=OutboxStatus.SENT).count()
    for r, user in enumerate(users):
        identity = await Identity.get(channel=CHANNEL, external_id=user)
        room = await Room.get(customer_id=identity.customer_id, workspace=WORKSPACE)
        expected = [message_text(run, r, i) for i in range(counts[r])]
        result.rooms_checked.append(RoomCheck(room.external_id, workspace.ghost_id(CHANNEL, user), expected))
    result.problems = await _verify(target, result.rooms_checked, run)
    if sent != messages:
        result.problems.append(f"{sent} outbox rows were sent during the pass, {messages} expected")
    if unsent:
        result.problems.append(f"{unsent} outbox rows are not sent")
    return result


# --------------------------------------------------------------------------------------------------
# The bare nio pass


@dataclass
class _BareRoom:
    room_id: str
    client: AsyncClient
    """The ghost that sends into the room."""


async def _register_ghost(http: aiohttp.ClientSession, target: MatrixTarget, localpart: str) -> str:
    """Register a user in the appservice's namespace, as relaydesk does its ghosts; returns its token."""
    body = {"type": "m.login.application_service", "username": localpart}
    headers = {"Authorization": f"Bearer {target.registration.as_token}"}
    url = f"{target.base_url}/_matrix/client/v3/register"
    async with http.post(url, json=body, headers=headers) as response:
        data = await response.json()
        if response.status != 200:
            raise RuntimeError(f"registering {localpart} failed: HTTP {response.status} {data}")
        return str(data["access_token"])


async def _bare_room(
    bot: AsyncClient, http: aiohttp.ClientSession, target: MatrixTarget, run: str, r: int
) -> _BareRoom:
    """A room made as a portal room is (by the bot, the agent invited), with its own ghost joined."""
    localpart = f"{target.registration.user_prefix}{run}_{r}"
    user_id = f"@{localpart}:{target.server_name}"
    client = AsyncClient(target.base_url, user_id)
    client.access_token = await _register_ghost(http, target, localpart)
    client.user_id = user_id
    agents = [target.agent_user_id] if target.agent_user_id else []
    created = await bot.room_create(
        name=f"Bare {r}",
        topic=f"Bare nio baseline room {r}",
        federate=False,
        preset=RoomPreset.private_chat,
        invite=[user_id, *agents],
        power_level_override=portal_power_levels(agents),
    )
    room_id = getattr(created, "room_id", None)
    if not room_id:
        await client.close()
        raise RuntimeError(f"creating baseline room {r} failed: {created}")
    joined = await client.join(room_id)
    if getattr(joined, "room_id", None) != room_id:
        await client.close()
        raise RuntimeError(f"joining baseline room {r} failed: {joined}")
    return _BareRoom(room_id, client)


async def _send(room: _BareRoom, text: str) -> None:
    """One ``room_send`` of a plain text message, as relaydesk's ghosts post."""
    response = await room.client.room_send(
        room.room_id, "m.room.message", {"msgtype": "m.text", "body": text}
    )
    if not isinstance(response, RoomSendResponse):
        raise RuntimeError(f"room_send failed: {response}")


async def bare_pass(
    target: MatrixTarget, messages: int, rooms: int, progress: Progress = _quiet
) -> PassResult:
    """Send ``messages`` into ``rooms`` new rooms with plain ``room_send``: in order per room, rooms in parallel."""
    run = f"bare{uuid.uuid4().hex[:8]}"
    counts = split(messages, rooms)
    bot = _bot_client(target)
    made: list[_BareRoom] = []
    try:
        progress(f"bare nio: setting up {rooms} rooms")
        async with aiohttp.ClientSession() as http:
            for r in range(rooms):
                made.append(await _bare_room(bot, http, target, run, r))
        # one untimed message per room, as relaydesk's rooms had their warm-up message
        await asyncio.gather(*(_send(room, f"warm-up {r}") for r, room in enumerate(made)))
        progress(f"bare nio: sending {messages}")

        async def sender(r: int) -> None:
            for i in range(counts[r]):
                await _send(made[r], message_text(run, r, i))

        await server_settled(target.server_pid, progress)
        meter = _Meter(target.server_pid)
        meter.start()
        await asyncio.gather(*(sender(r) for r in range(rooms)))
        result = meter.result("bare nio", messages, rooms)
        progress(f"bare nio: {messages} messages in {result.seconds:.2f} s ({result.rate:.1f} msg/s)")
        result.rooms_checked = [
            RoomCheck(room.room_id, room.client.user_id, [message_text(run, r, i) for i in range(counts[r])])
            for r, room in enumerate(made)
        ]
        result.problems = await check_rooms(bot, result.rooms_checked, run)
        return result
    finally:
        for room in made:
            await room.client.close()
        await bot.close()


# --------------------------------------------------------------------------------------------------
# The benchmark


@dataclass
class Round:
    """The two passes of one round."""

    bare: PassResult
    relaydesk: PassResult

    @property
    def ratio(self) -> float:
        """relaydesk's rate over bare nio's in this round."""
        return self.relaydesk.rate / self.bare.rate


@dataclass
class BenchResult:
    """Every round of a run."""

    messages: int
    rooms: int
    rounds: list[Round] = field(default_factory=list)

    @property
    def relaydesk_rate(self) -> float:
        """relaydesk's median rate over the rounds (msg/s)."""
        return statistics.median(r.relaydesk.rate for r in self.rounds)

    @property
    def bare_rate(self) -> float:
        """Bare nio's median rate over the rounds (msg/s)."""
        return statistics.median(r.bare.rate for r in self.rounds)

    @property
    def ratio(self) -> float:
        """The median over the rounds of relaydesk's rate over bare nio's."""
        return statistics.median(r.ratio for r in self.rounds)

    def problems(self) -> list[str]:
        """Every delivery problem found in any pass (empty: every message arrived once, in order)."""
        return [
            f"round {n}, {p.name}: {text}"
            for n, r in enumerate(self.rounds, 1)
            for p in (r.bare, r.relaydesk)
            for text in p.problems
        ]


async def run_benchmark(
    target: MatrixTarget,
    messages: int = DEFAULT_MESSAGES,
    rooms: int = DEFAULT_ROOMS,
    *,
    rounds: int = 1,
    progress: Progress = _quiet,
) -> BenchResult:
    """Run both passes ``rounds`` times against ``target``, alternating which goes first.

    One desk serves the whole run: nothing else may listen on ``target.appservice_port``. Each pass
    uses new customers (or ghosts) and new rooms.
    """
    if messages < 1 or rooms < 1 or rounds < 1:
        raise ValueError("messages, rooms and rounds must be at least 1")
    rooms = min(rooms, messages)
    result = BenchResult(messages, rooms)
    async with bench_desk(target) as desk:
        for n in range(rounds):
            if rounds > 1:
                progress(f"round {n + 1} of {rounds}")
            if n % 2 == 0:
                bare = await bare_pass(target, messages, rooms, progress)
                relayed = await relaydesk_pass(desk, target, messages, rooms, progress)
            else:
                relayed = await relaydesk_pass(desk, target, messages, rooms, progress)
                bare = await bare_pass(target, messages, rooms, progress)
            result.rounds.append(Round(bare, relayed))
            progress(f"round {n + 1}: relaydesk / bare = {result.rounds[-1].ratio:.2f}")
    return result


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def markdown_table(result: BenchResult) -> str:
    """The figures of every round as a markdown table, with the medians and the goal."""
    lines = [
        "| round | pass | seconds | msg/s | CPU ms/msg (this process) | Synapse CPU ms/msg | relaydesk / bare |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n, r in enumerate(result.rounds, 1):
        for p in (r.bare, r.relaydesk):
            ratio = f"{r.ratio:.2f}" if p is r.relaydesk else ""
            lines.append(
                f"| {n} | {p.name} | {p.seconds:.2f} | {p.rate:.1f} | {p.cpu_ms:.1f} "
                f"| {_ms(p.synapse_cpu_ms)} | {ratio} |"
            )
    verdict = "met" if result.ratio >= RATIO_GOAL else "**not met**"
    lines.append(
        f"| median | bare nio {result.bare_rate:.1f} msg/s, relaydesk {result.relaydesk_rate:.1f} msg/s "
        f"| | | | | **{result.ratio:.3f}** (goal ≥ {RATIO_GOAL}: {verdict}) |"
    )
    return "\n".join(lines)


def environment() -> str:
    """Date, versions and CPUs of this run, for the report."""
    try:
        nio_version = metadata.version("matrix-nio")
    except metadata.PackageNotFoundError:
        nio_version = "?"
    try:
        synapse_version = metadata.version("matrix-synapse")
    except metadata.PackageNotFoundError:
        synapse_version = "?"
    cpus = os.cpu_count()
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; Python {platform.python_version()}, "
        f"Synapse {synapse_version} (SQLite), matrix-nio {nio_version}; {cpus} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: run, print the table; exit status 1 if a message went missing."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.matrix", description="relaydesk into Synapse against bare nio room_send."
    )
    parser.add_argument("--messages", type=int, help=f"messages per pass (default {DEFAULT_MESSAGES})")
    parser.add_argument("--rooms", type=int, help=f"rooms, i.e. customers (default {DEFAULT_ROOMS})")
    parser.add_argument("--rounds", type=int, help=f"rounds of both passes (default {DEFAULT_ROUNDS})")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_MESSAGES} messages over {QUICK_ROOMS} rooms, 1 round"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="Synapse on one CPU, this process on the others (Linux): no competition for the same cores",
    )
    parser.add_argument(
        "--asyncio",
        action="store_true",
        help="use asyncio's own event loop (default: uvloop where installed, as `relaydesk run` does)",
    )
    args = parser.parse_args(argv)
    messages = args.messages or (QUICK_MESSAGES if args.quick else DEFAULT_MESSAGES)
    rooms = args.rooms or (QUICK_ROOMS if args.quick else DEFAULT_ROOMS)
    rounds = args.rounds or (1 if args.quick else DEFAULT_ROUNDS)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    loop = "asyncio" if args.asyncio else use_fast_event_loop()

    def progress(line: str) -> None:
        print(line, flush=True)

    placement = "not pinned: Synapse and this process share the CPUs"

    async def run() -> BenchResult:
        nonlocal placement
        async with dev_homeserver(progress) as target:
            if args.pin:
                placement = pin_cpus(target.server_pid)
                progress(placement)
            return await run_benchmark(target, messages, rooms, rounds=rounds, progress=progress)

    result = asyncio.run(run())
    print()
    print(
        f"Matrix relay: {result.messages} messages over {result.rooms} rooms, {len(result.rounds)} round(s)"
    )
    print(f"({environment()}; {loop} event loop; {placement})")
    print()
    print(markdown_table(result))
    print()
    print(
        f"relaydesk {result.relaydesk_rate:.1f} msg/s, bare nio {result.bare_rate:.1f} msg/s: "
        f"ratio {result.ratio:.3f} (goal ≥ {RATIO_GOAL})"
    )
    problems = result.problems()
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
