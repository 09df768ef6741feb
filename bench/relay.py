"""Throughput and latency of the relaydesk core, with adapters that cost nothing.

N customers each write M messages through :class:`bot_core.testing.MemoryChannel`. Every message
goes the whole way through the core: journaled on the bus, handled by the relay (receipt, customer,
conversation, message stored), queued in the outbox and posted in the customer's room by a
:class:`bot_core.testing.MemoryWorkspace`. The doubles answer at once, so the figures are the cost of
the core itself: bus, relay, outbox and database.

Two passes per storage configuration, each on a fresh database with a freshly started desk:

``max`` (closed loop)
    Every customer writes its messages one after another (the next once ``inbound()`` returned, as a
    webhook handler would), all customers at once. Throughput is the number of messages over the
    time from the first ``inbound()`` call to the last room post. Latency here is mostly queueing.
``half`` (open loop)
    Messages arrive at half the throughput the ``max`` pass measured (Poisson arrivals, fixed seed,
    spread round-robin over the customers), whatever the desk does: latency shows the core's own
    cost instead of a queue built by overload.

Latency is per message: from the ``inbound()`` call (through ``MemoryChannel.customer_writes``) to
the moment the core asks the workspace double to post it in the room. Completion is awaited on the
workspace double's recorder, never by sleeping. After each pass the bench checks that every message
reached its customer's room exactly once and in the order written.

Usage::

    python -m bench.relay                          # 200 customers x 10 messages, both configurations
    python -m bench.relay --quick --backend sqlite # a smoke run
    python -m bench.relay --backend sqlite --count-queries --profile /tmp/relay-profile

PostgreSQL and Redis are taken from ``RELAYDESK_BENCH_POSTGRES`` (an admin URL; a throwaway database
is created next to it and dropped after) and ``RELAYDESK_BENCH_REDIS`` (keys under a unique prefix,
deleted after), defaulting to the local test services.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import functools
import gc
import importlib.util
import io
import logging
import math
import os
import platform
import pstats
import random
import re
import resource
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import asyncpg
from redis.asyncio import BlockingConnectionPool, Redis

from bot_core.adapters import ConversationView, MessageView, PostedRef, RoomRef
from bot_core.config import DeskConfig, parse_config
from bot_core.desk import Desk
from bot_core.testing import MemoryChannel, MemoryRoom, MemoryWorkspace
from storage.bus.redis_streams import RedisStreamsBus
from storage.db import migrate
from storage.models import Conversation, ConversationState, Room

BACKENDS = ("sqlite", "postgres")
BACKEND_LABELS = {
    "sqlite": "SQLite + in-process bus (journal)",
    "postgres": "PostgreSQL + Redis Streams bus",
}
THROUGHPUT_GOALS = {"sqlite": 1000.0, "postgres": 2000.0}
"""Messages per second one worker should sustain."""
P99_GOAL_MS = 50.0
"""Core latency (p99) to stay under at half the maximum throughput."""

FIRST_CONTACT_RATIO_GOAL = 0.5
"""First contacts should be relayed at least at this fraction of the follow-up rate."""
RSS_GOAL_MB = 200.0
"""One worker with the first-contact pass's open conversations and rooms should stay under this RSS."""
DEFAULT_FIRST_CONTACTS = 10_000
QUICK_FIRST_CONTACTS = 500

DEFAULT_CUSTOMERS = 200
DEFAULT_MESSAGES = 10
QUICK_CUSTOMERS = 20
QUICK_MESSAGES = 5
DEFAULT_WARMUP = 20
PROGRESS_EVERY = 2.0

REDIS_POOL_SIZE = 64
"""Connections of the bench's Redis client; callers wait for one when all are busy (see bus_client)."""

DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"

CHANNEL = "customers"
WORKSPACE = "desk"
DOUBLES_YAML = f"""
plugins:
  - {CHANNEL}: {{use: "bot_core.testing:MemoryChannel"}}
  - {WORKSPACE}: {{use: "bot_core.testing:MemoryWorkspace"}}
"""

Progress = Callable[[str], None]
Section = Callable[[], AbstractContextManager[object]]


# --------------------------------------------------------------------------------------------------
# The desk under test


class TimedWorkspace(MemoryWorkspace):
    """The workspace double, noting when the core first asks it to post each customer message."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrived: dict[str, float] = {}
        """``time.perf_counter()`` at the first post of each message text."""

    async def post_as_customer(self, room: RoomRef, message: MessageView) -> PostedRef:
        """Stamp the arrival, then record the post like the plain double."""
        self.arrived.setdefault(message.text, time.perf_counter())
        return await super().post_as_customer(room, message)


class WorkerWorkspace(TimedWorkspace):
    """The timed double for one of several worker processes: room ids unique across processes, and every
    customer post noted here (a room may have been made by another process's double)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.customer_posts: list[tuple[str, str, float]] = []
        """(customer id, text, ``time.time()``) of every customer message this process posted."""
        self._tag = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._made = 0

    async def ensure_room(self, conversation: ConversationView) -> RoomRef:
        """A room id no other worker process's double makes."""
        self._made += 1
        room_id = conversation.existing_room_id or f"!w{self._tag}-{self._made}"
        self.rooms.setdefault(room_id, MemoryRoom(room_id, conversation))
        return RoomRef(self.instance_name, room_id)

    async def post_as_customer(self, room: RoomRef, message: MessageView) -> PostedRef:
        """Stamp and note the post (whichever process made its room)."""
        self.arrived.setdefault(message.text, time.perf_counter())
        self.customer_posts.append((message.external_user_id, message.text, time.time()))
        self._made += 1
        return PostedRef(f"$w{self._tag}-{self._made}")


@dataclass(frozen=True)
class Services:
    """Where the PostgreSQL + Redis configuration runs."""

    postgres_url: str = DEFAULT_POSTGRES
    """An admin URL: bench databases are created (and dropped) on this server."""
    redis_url: str = DEFAULT_REDIS

    @classmethod
    def from_env(cls) -> Services:
        """The services named by ``RELAYDESK_BENCH_POSTGRES`` / ``RELAYDESK_BENCH_REDIS``, or the defaults."""
        return cls(
            os.environ.get("RELAYDESK_BENCH_POSTGRES", DEFAULT_POSTGRES),
            os.environ.get("RELAYDESK_BENCH_REDIS", DEFAULT_REDIS),
        )

    def unreachable(self) -> str | None:
        """Why the PostgreSQL + Redis configuration cannot run here, or None if both servers answer."""
        for name, url, port in (("PostgreSQL", self.postgres_url, 5432), ("Redis", self.redis_url, 6379)):
            parts = urlsplit(url)
            host, port = parts.hostname or "127.0.0.1", parts.port or port
            try:
                with socket.create_connection((host, port), timeout=1.0):
                    pass
            except OSError:
                return f"{name} is not reachable on {host}:{port}"
        return None


def build_config(
    database_url: str, redis_url: str = "", workspace: type[TimedWorkspace] = TimedWorkspace
) -> DeskConfig:
    """The bench's desk config: the two doubles (the workspace one timed) on ``database_url``."""
    config = parse_config(DOUBLES_YAML, "bench.yaml", environ={})
    plugins = [
        dataclasses.replace(spec, plugin_class=workspace) if spec.instance_name == WORKSPACE else spec
        for spec in config.plugins
    ]
    storage = config.storage.model_copy(update={"database": database_url, "redis": redis_url})
    return config.model_copy(update={"storage": storage, "plugins": plugins})


@asynccontextmanager
async def bench_desk(backend: str, services: Services | None = None) -> AsyncIterator[Desk]:
    """A started desk on a fresh, migrated store of ``backend``; everything is stopped and removed after.

    ``sqlite``: a SQLite file in a temporary directory and the in-process bus with its database journal
    (the single-process default). ``postgres``: a throwaway PostgreSQL database and a Redis Streams bus
    under a unique key prefix, with ``storage.redis`` set as a multi-worker deployment has it.
    The Redis client comes from :func:`bus_client`, not from the bus's own ``Redis.from_url``.
    """
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="relaydesk-bench-") as tmp:
            url = f"sqlite://{Path(tmp) / 'relaydesk.db'}"
            await migrate(url)
            async with _running(Desk(build_config(url), serve_http=False)) as desk:
                yield desk
        return
    if backend != "postgres":
        raise ValueError(f"unknown backend {backend!r} (expected one of {', '.join(BACKENDS)})")
    services = services or Services.from_env()
    token = uuid.uuid4().hex[:12]
    prefix = f"relaydesk-bench-{token}"
    url = await _create_database(services.postgres_url, f"relaydesk_bench_{token}")
    client = bus_client(services.redis_url)
    try:
        await migrate(url)
        bus = RedisStreamsBus.from_client(client, prefix=prefix)
        desk = Desk(build_config(url, services.redis_url), serve_http=False, bus=bus)
        async with _running(desk):
            yield desk
    finally:
        await client.aclose()
        await _drop_database(services.postgres_url, url)
        await _delete_redis_keys(services.redis_url, prefix)


def bus_client(url: str) -> Redis:
    """The Redis client of the bench's bus: a pool where a publish waits for a free connection.

    The bus's own client (``Redis.from_url``) has redis-py's default pool, which *raises*
    ``MaxConnectionsError`` once 100 connections are busy: with 200 customers writing at once,
    ``inbound()`` fails there (16 of them are held by the partitions' blocking reads). See
    docs/benchmarks.md.
    """
    pool = BlockingConnectionPool.from_url(
        url, decode_responses=True, max_connections=REDIS_POOL_SIZE, timeout=60
    )
    return Redis.from_pool(pool)


@asynccontextmanager
async def _running(desk: Desk) -> AsyncIterator[Desk]:
    try:
        await desk.start()
        yield desk
    finally:
        await desk.stop(timeout=30)


async def _create_database(admin_url: str, name: str) -> str:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return admin_url.rsplit("/", 1)[0] + "/" + name


async def _drop_database(admin_url: str, url: str) -> None:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()


@dataclass(frozen=True)
class Ceiling:
    """What this machine's PostgreSQL takes with nothing of relaydesk around it: single-row inserts with
    ``RETURNING`` (the shape of most hot statements), each committed on its own, from one process."""

    pooled: float
    """Statements per second, each on a connection taken from an asyncpg pool of relaydesk's connection
    class (as relaydesk runs them)."""
    pinned: float
    """Statements per second, each task on a connection of its own (no pool: the upper bound)."""
    machine_busy: float
    """How busy the machine's cores were meanwhile (this process and PostgreSQL)."""


async def statement_ceiling(services: Services, statements: int = 20_000, tasks: int = 100) -> Ceiling:
    """Measure :class:`Ceiling` on a throwaway database: the most statements per second PostgreSQL and
    asyncpg manage here, an upper bound for relaydesk's messages per second times its statements per
    message."""
    url = await _create_database(services.postgres_url, f"relaydesk_ceiling_{uuid.uuid4().hex[:12]}")
    try:
        setup = await asyncpg.connect(url)
        try:
            await setup.execute("CREATE TABLE t (id bigserial PRIMARY KEY, a text, b int)")
        finally:
            await setup.close()
        each = statements // tasks
        insert = "INSERT INTO t (a, b) VALUES ($1, $2) RETURNING id"
        from storage.pg import (
            FencedConnection,
        )  # relaydesk's pool connection class (its release skips the reset)

        pool = await asyncpg.create_pool(url, min_size=10, max_size=10, connection_class=FencedConnection)
        try:

            async def pooled(task: int) -> None:
                for i in range(each):
                    async with pool.acquire() as conn:
                        await conn.fetchrow(insert, f"pooled {task}", i)

            started, cpu = time.perf_counter(), machine_cpu()
            await asyncio.gather(*(pooled(t) for t in range(tasks)))
            pooled_rate = each * tasks / (time.perf_counter() - started)
            busy = busy_between(cpu, machine_cpu())
        finally:
            await pool.close()
        connections = [await asyncpg.connect(url) for _ in range(10)]
        try:

            async def pinned(conn: asyncpg.Connection, task: int) -> None:
                for i in range(each * tasks // len(connections)):
                    await conn.fetchrow(insert, f"pinned {task}", i)

            started = time.perf_counter()
            await asyncio.gather(*(pinned(c, n) for n, c in enumerate(connections)))
            pinned_rate = each * tasks / (time.perf_counter() - started)
        finally:
            for conn in connections:
                await conn.close()
    finally:
        await _drop_database(services.postgres_url, url)
    return Ceiling(pooled=pooled_rate, pinned=pinned_rate, machine_busy=busy)


async def _delete_redis_keys(url: str, prefix: str) -> None:
    client = Redis.from_url(url)
    try:
        # the bus's partition keys start with their hash tag ({prefix:pN}:stream, ...)
        patterns = (f"{prefix}:*", "{" + prefix + ":*")
        keys = [key for pattern in patterns async for key in client.scan_iter(match=pattern, count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def _doubles(desk: Desk) -> tuple[MemoryChannel, TimedWorkspace]:
    return cast(MemoryChannel, desk.plugins[CHANNEL]), cast(TimedWorkspace, desk.plugins[WORKSPACE])


# --------------------------------------------------------------------------------------------------
# One pass


def customer_name(n: int) -> str:
    """The external user id of bench customer ``n``."""
    return f"cust{n:05d}"


def message_text(user: str, i: int) -> str:
    """The text of message ``i`` of ``user`` (unique across a pass, so it identifies the message)."""
    return f"{user} message {i}"


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of already sorted values (nan if empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class _Measured:
    """What every pass's result reports from its counts, its duration and its sorted latencies."""

    customers: int
    messages_per_customer: int
    seconds: float
    latencies_ms: tuple[float, ...]

    @property
    def messages(self) -> int:
        """How many messages were measured."""
        return self.customers * self.messages_per_customer

    @property
    def throughput(self) -> float:
        """Messages per second, first ``inbound()`` to last room post (over all workers)."""
        return self.messages / self.seconds if self.seconds > 0 else math.inf

    @property
    def p50_ms(self) -> float:
        """Median core latency."""
        return percentile(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        """99th percentile core latency."""
        return percentile(self.latencies_ms, 99)


@dataclass(frozen=True)
class PassResult(_Measured):
    """What one pass measured, and what every room showed at the end of it."""

    backend: str
    mode: str
    """``max`` (closed loop) or ``half`` (open loop at ``target_rate``)."""
    customers: int
    messages_per_customer: int
    seconds: float
    """From the first ``inbound()`` call to the last room post."""
    latencies_ms: tuple[float, ...]
    """Per message, sorted."""
    followup_latencies_ms: tuple[float, ...]
    """Per message except each customer's first (which also creates the customer, conversation and room), sorted."""
    cpu_seconds: float
    """CPU time of this process (every thread) while the pass was measured: the core and the load generator."""
    rooms: dict[str, list[str]]
    """Customer id -> the customer-message texts posted in their room, in posting order."""
    rooms_per_customer: dict[str, int]
    target_rate: float | None = None
    """The arrival rate asked for (open loop), in messages per second."""
    first_message: int = 0
    """The index of each customer's first message in this pass (rooms also show the earlier ones)."""
    arrival_rate: float | None = None
    """The arrival rate achieved (messages over the span of the ``inbound()`` calls)."""

    @property
    def followup_p99_ms(self) -> float:
        """99th percentile core latency of the messages after each customer's first."""
        return percentile(self.followup_latencies_ms, 99)

    @property
    def cpu_ms_per_message(self) -> float:
        """This process's CPU time per message (excludes the PostgreSQL and Redis servers)."""
        return self.cpu_seconds / self.messages * 1000

    @property
    def max_ms(self) -> float:
        """Worst core latency."""
        return self.latencies_ms[-1] if self.latencies_ms else math.nan

    def delivery_problems(self) -> list[str]:
        """Every customer whose room does not show their messages exactly once, in order (empty: all good)."""
        problems: list[str] = []
        for n in range(self.customers):
            user = customer_name(n)
            expected = [message_text(user, i) for i in range(self.first_message + self.messages_per_customer)]
            got = self.rooms.get(user)
            if got != expected:
                problems.append(f"{user}: room shows {got!r}, expected {expected!r}")
            if self.rooms_per_customer.get(user, 0) != 1:
                problems.append(f"{user}: {self.rooms_per_customer.get(user, 0)} rooms, expected 1")
        return problems


class _PostCounter:
    """A predicate for the workspace recorder: true once ``expected`` customer messages were posted.

    It looks only at the posts added since its last call, so waiting costs O(1) per post.
    """

    def __init__(self, start: int, expected: int) -> None:
        self.seen = start
        self.count = 0
        self.expected = expected

    def __call__(self, items: list[Any]) -> bool:
        for _room, post in items[self.seen :]:
            if post.kind == "customer_message":
                self.count += 1
        self.seen = len(items)
        return self.count >= self.expected


async def _wait_posted(workspace: TimedWorkspace, counter: _PostCounter, timeout: float) -> None:
    try:
        await workspace.posts.wait_for(counter, timeout=timeout)
    except TimeoutError:
        raise TimeoutError(
            f"only {counter.count} of {counter.expected} messages reached their rooms in {timeout:.0f} s"
        ) from None


async def _warm_up(channel: MemoryChannel, workspace: TimedWorkspace, customers: int) -> None:
    """First messages of a few throwaway customers: connections, caches and executors get warm."""
    if customers <= 0:
        return
    counter = _PostCounter(len(workspace.posts.items), customers)
    await asyncio.gather(
        *(
            channel.customer_writes(f"warm{n:03d}", f"warm{n:03d} hello", message_id=f"warm{n}")
            for n in range(customers)
        )
    )
    await _wait_posted(workspace, counter, 60.0)


def poisson_schedule(customers: int, messages: int, rate: float, seed: int) -> list[list[float]]:
    """Arrival offsets (s) per customer: a Poisson stream at ``rate``, dealt round-robin to customers."""
    rng = random.Random(seed)
    schedule: list[list[float]] = [[] for _ in range(customers)]
    at = 0.0
    for k in range(customers * messages):
        at += rng.expovariate(rate)
        schedule[k % customers].append(at)
    return schedule


async def run_pass(
    backend: str,
    customers: int,
    messages: int,
    *,
    rate: float | None = None,
    services: Services | None = None,
    warmup: int = DEFAULT_WARMUP,
    seed: int = 7,
    progress: Progress | None = None,
    section: Section = nullcontext,
    timeout: float | None = None,
) -> PassResult:
    """Send ``customers`` x ``messages`` through a fresh desk on ``backend``; measure and check the rooms.

    Without ``rate`` the load is a closed loop (every customer writes its next message as soon as
    ``inbound()`` returned); with ``rate`` it is an open loop of Poisson arrivals at ``rate`` messages
    per second. ``section`` wraps the measured part (a profiler or a query counter). ``progress`` gets
    a status line every few seconds. Raises TimeoutError if the messages do not all arrive in
    ``timeout`` seconds (default: generous, from the size of the pass).
    """
    if customers < 1 or messages < 1:
        raise ValueError("customers and messages must be at least 1")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive")
    total = customers * messages
    budget = timeout if timeout is not None else 120.0 + total / 20
    mode = "max" if rate is None else "half"
    async with bench_desk(backend, services) as desk:
        channel, workspace = _doubles(desk)
        await _warm_up(channel, workspace, warmup)
        users = [customer_name(n) for n in range(customers)]
        return await _drive(
            desk,
            backend,
            mode,
            users,
            messages,
            rate=rate,
            seed=seed,
            progress=progress,
            section=section,
            budget=budget,
        )


async def _drive(
    desk: Desk,
    backend: str,
    mode: str,
    users: list[str],
    messages: int,
    *,
    first_message: int = 0,
    rate: float | None = None,
    seed: int = 7,
    progress: Progress | None = None,
    section: Section = nullcontext,
    budget: float,
) -> PassResult:
    """Every one of ``users`` writes messages ``first_message`` .. ``first_message + messages - 1`` into a
    running bench desk (closed loop, or open loop at ``rate``); measure and read every room after."""
    channel, workspace = _doubles(desk)
    total = len(users) * messages
    sent: dict[str, float] = {}
    counter = _PostCounter(len(workspace.posts.items), total)

    async def write(user: str, i: int) -> None:
        text = message_text(user, i)
        sent[text] = time.perf_counter()
        await channel.customer_writes(user, text, message_id=f"{user}-{i}")

    async def closed_loop(user: str) -> None:
        for i in range(first_message, first_message + messages):
            await write(user, i)

    async def open_loop(user: str, offsets: list[float], origin: float) -> None:
        for i, offset in enumerate(offsets, start=first_message):
            delay = origin + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await write(user, i)

    async def report() -> None:
        label = f"{backend} {mode}"
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            assert progress is not None
            posted = sum(text in workspace.arrived for text in sent)
            progress(f"  [{label}] {len(sent)}/{total} written, {posted}/{total} in their rooms")

    reporter = asyncio.create_task(report()) if progress else None
    cpu_started = time.process_time()
    try:
        with section():
            if rate is None:
                await asyncio.gather(*(closed_loop(user) for user in users))
            else:
                schedule = poisson_schedule(len(users), messages, rate, seed)
                origin = time.perf_counter() + 0.01
                await asyncio.gather(*(open_loop(u, s, origin) for u, s in zip(users, schedule, strict=True)))
            await _wait_posted(workspace, counter, budget)
    finally:
        cpu_seconds = time.process_time() - cpu_started
        if reporter:
            reporter.cancel()
    latency = {text: (workspace.arrived[text] - at) * 1000 for text, at in sent.items()}
    first_texts = {message_text(user, 0) for user in users}  # (none in a later pass of the same desk)
    first_in, last_in = min(sent.values()), max(sent.values())
    last_post = max(workspace.arrived[text] for text in sent)
    # let the bus and the outbox finish their bookkeeping before the desk stops
    await desk.bus.wait_idle(30)
    await desk.outbox.wait_settled(30)
    rooms: dict[str, list[str]] = {}
    room_count: Counter[str] = Counter()
    for room in workspace.rooms.values():
        user = room.conversation.external_user_id
        room_count[user] += 1
        rooms.setdefault(user, []).extend(p.text for p in room.posts if p.kind == "customer_message")
    return PassResult(
        backend=backend,
        mode=mode,
        customers=len(users),
        messages_per_customer=messages,
        seconds=last_post - first_in,
        latencies_ms=tuple(sorted(latency.values())),
        followup_latencies_ms=tuple(sorted(v for text, v in latency.items() if text not in first_texts)),
        cpu_seconds=cpu_seconds,
        rooms=rooms,
        rooms_per_customer=dict(room_count),
        target_rate=rate,
        arrival_rate=total / (last_in - first_in) if last_in > first_in else None,
        first_message=first_message,
    )


def machine_cpu() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks over every core (Linux:
    /proc/stat); (0, 0) elsewhere. Two readings give how busy the cores were in between."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):  # pragma: no cover - not Linux
        return 0, 0
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle and iowait
    return sum(ticks) - idle, sum(ticks)


def busy_between(start: tuple[int, int], end: tuple[int, int]) -> float:
    """How busy the machine's cores were between two :func:`machine_cpu` readings (1.0: every core, all
    the time); NaN where unknown."""
    total = end[1] - start[1]
    return (end[0] - start[0]) / total if total > 0 else math.nan


def rss_mb() -> tuple[float, float]:
    """This process's resident memory now and at its peak, in MB (Linux: /proc and getrusage)."""
    now = math.nan
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                now = int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # (kept by the kernel: may lag VmRSS)
    return now, max(now, peak) if not math.isnan(now) else peak


@dataclass(frozen=True)
class FirstContactResult:
    """The first-contact pass: N new customers writing once, then each writing once more, in one desk."""

    first: PassResult
    """Every customer's first message (customer, identity, conversation and room created)."""
    follow: PassResult
    """Every customer's second message (all of it known, the room there)."""
    open_conversations: int
    rooms: int
    rss_mb: float
    """The process's resident memory after both (garbage collected), with every conversation open."""
    peak_rss_mb: float

    @property
    def ratio(self) -> float:
        """First-contact throughput over follow-up throughput."""
        return self.first.throughput / self.follow.throughput


async def run_first_contacts(
    backend: str,
    customers: int,
    *,
    services: Services | None = None,
    warmup: int = DEFAULT_WARMUP,
    progress: Progress | None = None,
    section: Section = nullcontext,
) -> FirstContactResult:
    """``customers`` new customers each write once, all at once (closed loop); then each writes again.

    Both in one fresh desk on ``backend``; afterwards the desk holds ``customers`` open conversations
    and rooms, and the process's RSS is read. ``section`` wraps the first-contact part only.
    """
    budget = 120.0 + customers / 20
    async with bench_desk(backend, services) as desk:
        channel, workspace = _doubles(desk)
        await _warm_up(channel, workspace, warmup)
        users = [customer_name(n) for n in range(customers)]
        first = await _drive(
            desk, backend, "first", users, 1, progress=progress, section=section, budget=budget
        )
        follow = await _drive(
            desk, backend, "follow-up", users, 1, first_message=1, progress=progress, budget=budget
        )
        gc.collect()
        now, peak = rss_mb()
        open_conversations = await Conversation.exclude(state=ConversationState.CLOSED).count()
        rooms = await Room.all().count()
    return FirstContactResult(first, follow, open_conversations, rooms, now, peak)


def first_contacts_table(results: Sequence[FirstContactResult]) -> str:
    """The first-contact figures with their goals, as a markdown table."""
    lines = [
        "| configuration | customers | first contacts msg/s | CPU ms/msg | p99 ms | follow-ups msg/s "
        "| CPU ms/msg | p99 ms | ratio (goal ≥ 0.5) | open conversations / rooms | RSS MB now / peak (goal ≤ 200) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for r in results:
        f, u = r.first, r.follow
        lines.append(
            f"| {BACKEND_LABELS[f.backend]} | {f.customers:,} | {f.throughput:,.0f} | {f.cpu_ms_per_message:.2f} "
            f"| {_ms(f.p99_ms)} | {u.throughput:,.0f} | {u.cpu_ms_per_message:.2f} | {_ms(u.p99_ms)} "
            f"| {r.ratio:.2f}: {_verdict(r.ratio >= FIRST_CONTACT_RATIO_GOAL)} "
            f"| {r.open_conversations:,} / {r.rooms:,} "
            f"| {r.rss_mb:.0f} / {r.peak_rss_mb:.0f}: {_verdict(r.rss_mb <= RSS_GOAL_MB)} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Several workers (PostgreSQL + Redis): one process each


SCALING_GOAL = 1.7
"""Two workers should relay at least this many times what one worker relays."""


@dataclass(frozen=True)
class WorkersResult(_Measured):
    """One pass of ``workers`` worker processes on one PostgreSQL database and one Redis."""

    workers: int
    customers: int
    messages_per_customer: int
    seconds: float
    """From the first ``inbound()`` call in any worker to the last room post in any worker."""
    cpu_seconds: float
    """CPU time of every worker process (each its desk and its share of the load generator)."""
    latencies_ms: tuple[float, ...]
    problems: tuple[str, ...]
    """Customers whose messages did not reach the room exactly once and in order (merged over workers)."""
    machine_busy: float = math.nan
    """How busy the machine's cores were while the load ran (every process: workers, PostgreSQL, Redis,
    anything else): near 1.0, more workers cannot relay more here."""


def _worker_process(
    database_url: str,
    redis_url: str,
    prefix: str,
    users: list[str],
    messages: int,
    warm: str,
    control: Any,
) -> None:
    """One worker of :func:`run_workers` (a process of its own): a desk with the doubles on the shared
    database and bus; its share of customers write through its channel double (as a load balancer would
    spread webhooks); every post its workspace double makes is reported at the end."""
    from bot_core.cli import use_fast_event_loop

    use_fast_event_loop()
    asyncio.run(_worker(database_url, redis_url, prefix, users, messages, warm, control))


async def _worker(
    database_url: str, redis_url: str, prefix: str, users: list[str], messages: int, warm: str, control: Any
) -> None:
    ready, go, done, posted, results = control
    client = bus_client(redis_url)
    bus = RedisStreamsBus.from_client(client, prefix=prefix)
    desk = Desk(build_config(database_url, redis_url, WorkerWorkspace), serve_http=False, bus=bus)
    try:
        async with _running(desk):
            channel = cast(MemoryChannel, desk.plugins[CHANNEL])
            workspace = cast(WorkerWorkspace, desk.plugins[WORKSPACE])
            await _warm_up_named(channel, [f"{warm}{n:02d}" for n in range(5)])
            ready.release()
            await asyncio.to_thread(go.wait)  # (a process-shared event: waited for on a thread)
            sent: dict[str, float] = {}

            async def closed_loop(user: str) -> None:
                for i in range(messages):
                    text = message_text(user, i)
                    sent[text] = time.time()
                    await channel.customer_writes(user, text, message_id=f"{user}-{i}")

            cpu = time.process_time()
            load = asyncio.gather(*(closed_loop(user) for user in users))
            while not done.is_set():
                with posted.get_lock():
                    posted.value = len(workspace.customer_posts)
                await asyncio.sleep(0.05)
            await load
            cpu = time.process_time() - cpu
            results.put({"sent": sent, "posts": workspace.customer_posts, "cpu": cpu})
    finally:
        await client.aclose()


async def _warm_up_named(channel: MemoryChannel, users: list[str]) -> None:
    """:func:`_warm_up` for named throwaway customers (each worker its own); their posts may be made by
    any worker, so this only waits until the bus took them."""
    await asyncio.gather(*(channel.customer_writes(u, f"{u} hello", message_id=f"{u}-warm") for u in users))


async def run_workers(
    workers: int,
    customers: int,
    messages: int,
    *,
    services: Services | None = None,
    progress: Progress | None = None,
) -> WorkersResult:
    """``customers`` x ``messages`` through ``workers`` processes, each a desk on one fresh PostgreSQL
    database and one Redis prefix; each process's channel double takes its share of the customers."""
    import multiprocessing

    services = services or Services.from_env()
    token = uuid.uuid4().hex[:12]
    prefix = f"relaydesk-bench-{token}"
    url = await _create_database(services.postgres_url, f"relaydesk_bench_{token}")
    ctx = multiprocessing.get_context("spawn")
    ready, go, done = ctx.Semaphore(0), ctx.Event(), ctx.Event()
    posted = [ctx.Value("i", 0) for _ in range(workers)]
    results = ctx.Queue()
    users = [customer_name(n) for n in range(customers)]
    total = customers * messages
    procs = []
    try:
        await migrate(url)
        for w in range(workers):
            control = (ready, go, done, posted[w], results)
            share = users[w::workers]
            proc = ctx.Process(
                target=_worker_process,
                args=(url, services.redis_url, prefix, share, messages, f"warm{w}-", control),
            )
            proc.start()
            procs.append(proc)
        for _ in range(workers):
            await asyncio.to_thread(ready.acquire)
        await asyncio.sleep(12)  # the partitions' leases spread over the workers (lease_ttl / 3 per turn)
        cpu_at_go = cpu_at_end = machine_cpu()
        go.set()
        deadline = time.monotonic() + 120.0 + total / 20
        last = -1
        while True:
            count = sum(p.value for p in posted)
            if count >= total + 5 * workers:
                cpu_at_end = machine_cpu()
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{workers} workers: only {count} of {total} messages posted")
            if progress and count != last and int(time.monotonic()) % 2 == 0:
                progress(f"  [{workers} workers] {count}/{total} in their rooms")
                last = count
            await asyncio.sleep(0.1)
        done.set()
        outs = [await asyncio.to_thread(results.get, True, 120) for _ in range(workers)]
        for proc in procs:
            await asyncio.to_thread(proc.join, 60)
    finally:
        go.set()
        done.set()
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        await _drop_database(services.postgres_url, url)
        await _delete_redis_keys(services.redis_url, prefix)
    sent = {text: at for out in outs for text, at in out["sent"].items()}
    arrived: dict[str, list[float]] = {}
    rooms: dict[str, list[tuple[float, str]]] = {}
    for out in outs:
        for user, text, at in out["posts"]:
            arrived.setdefault(text, []).append(at)
            rooms.setdefault(user, []).append((at, text))
    problems = []
    for user in users:
        got = [text for _at, text in sorted(rooms.get(user, []))]
        expected = [message_text(user, i) for i in range(messages)]
        if got != expected:
            problems.append(f"{user}: rooms show {got!r}, expected {expected!r}")
    latencies = sorted((min(arrived[t]) - at) * 1000 for t, at in sent.items() if t in arrived)
    last_post = max(min(arrived[t]) for t in sent if t in arrived)
    return WorkersResult(
        workers=workers,
        customers=customers,
        messages_per_customer=messages,
        seconds=last_post - min(sent.values()),
        cpu_seconds=sum(out["cpu"] for out in outs),
        latencies_ms=tuple(latencies),
        problems=tuple(problems),
        machine_busy=busy_between(cpu_at_go, cpu_at_end),
    )


def workers_table(results: Sequence[WorkersResult]) -> str:
    """The several-worker figures, with the scaling against one worker, as a markdown table."""
    one = next((r for r in results if r.workers == 1), None)
    lines = [
        "| workers | messages | msg/s | CPU ms/msg (all workers) | machine's cores busy | p99 ms | x one worker "
        "| goal |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        scale = r.throughput / one.throughput if one else math.nan
        goal = (
            "-" if r.workers != 2 or one is None else f"≥ {SCALING_GOAL}: {_verdict(scale >= SCALING_GOAL)}"
        )
        lines.append(
            f"| {r.workers} | {r.messages} | {r.throughput:,.0f} | {r.cpu_seconds / r.messages * 1000:.2f} "
            f"| {r.machine_busy:.0%} | {_ms(r.p99_ms)} | {scale:.2f} | {goal} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Instruments: SQL statement counter and profilers


_SQL_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE)\s+"?(\w+)"?', re.IGNORECASE)
_SQL_VALUES = re.compile(r"\$\d+|\?")


class QueryCounter(logging.Handler):
    """Counts the SQL statements tortoise sends, from the DEBUG line it logs for each one.

    Statements are grouped as ``VERB table`` and by their text (placeholders kept, so a statement
    is the same whatever its values).
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.by_kind: Counter[str] = Counter()
        self.by_statement: Counter[str] = Counter()

    @property
    def total(self) -> int:
        """Statements counted."""
        return sum(self.by_kind.values())

    def emit(self, record: logging.LogRecord) -> None:
        """Count one statement (other tortoise DEBUG lines, about pools and connections, are skipped)."""
        args = record.args if isinstance(record.args, tuple) else ()
        sql = str(args[0]) if record.msg == "%s: %s" and args else str(record.msg)
        verb = sql.lstrip().split(" ", 1)[0].upper()
        if verb not in {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "BEGIN", "COMMIT", "PRAGMA"}:
            return
        match = _SQL_TABLE.search(sql)
        self.by_kind[f"{verb} {match.group(1) if match else ''}".strip()] += 1
        self.by_statement[" ".join(sql.split())] += 1

    @contextmanager
    def attached(self) -> Iterator[QueryCounter]:
        """Count while inside; tortoise's query log is restored (and kept from other handlers) after."""
        logger = logging.getLogger("tortoise.db_client")
        level, propagate = logger.level, logger.propagate
        logger.setLevel(logging.DEBUG)
        logger.propagate = False  # statements carry message bodies: keep them out of other handlers
        logger.addHandler(self)
        try:
            yield self
        finally:
            logger.removeHandler(self)
            logger.setLevel(level)
            logger.propagate = propagate

    def report(self, messages: int, top: int = 25) -> str:
        """A markdown summary: statements per message, by kind and the most frequent statements."""
        lines = [
            f"{self.total} statements for {messages} messages: **{self.total / messages:.1f} per message**",
            "",
            "| statements per message | kind |",
            "| ---: | --- |",
        ]
        lines += [f"| {n / messages:.2f} | {kind} |" for kind, n in self.by_kind.most_common()]
        lines += ["", "| per message | statement |", "| ---: | --- |"]
        for sql, n in self.by_statement.most_common(top):
            shown = sql if len(sql) <= 160 else sql[:157] + "..."
            lines.append(f"| {n / messages:.2f} | `{shown.replace('|', '/')}` |")
        return "\n".join(lines)


@contextmanager
def pyinstrument_profile(path: Path) -> Iterator[None]:
    """Profile the event loop's thread with pyinstrument; write a call tree, a flat self-time list and HTML."""
    try:
        from pyinstrument import Profiler
    except ImportError:  # pragma: no cover - an optional tool
        raise SystemExit("--profile needs pyinstrument: .venv/bin/pip install pyinstrument") from None
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        path.with_suffix(".tree.txt").write_text(profiler.output_text(unicode=True, color=False))
        path.with_suffix(".flat.txt").write_text(profiler.output_text(unicode=True, color=False, flat=True))
        path.with_suffix(".html").write_text(profiler.output_html())


@contextmanager
def cprofile_profile(path: Path, top: int = 60) -> Iterator[None]:
    """Profile with cProfile; write the ``top`` functions by own time and by cumulative time."""
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out).strip_dirs()
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        path.write_text(out.getvalue())


# --------------------------------------------------------------------------------------------------
# The whole benchmark


@dataclass
class BenchReport:
    """The passes run and the configurations skipped (with the reason)."""

    results: list[PassResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    first_contacts: list[FirstContactResult] = field(default_factory=list)


async def run_benchmark(
    backends: Sequence[str],
    customers: int,
    messages: int,
    *,
    services: Services | None = None,
    warmup: int = DEFAULT_WARMUP,
    progress: Progress | None = None,
    first_contacts: int = 0,
    standard: bool = True,
) -> BenchReport:
    """For each backend: the closed-loop ``max`` pass, then the open loop at half its throughput (unless
    not ``standard``); then, with ``first_contacts``, the first-contact pass of that many customers."""
    services = services or Services.from_env()
    report = BenchReport()
    for backend in backends:
        if backend == "postgres" and (reason := services.unreachable()):
            report.skipped[backend] = reason
            if progress:
                progress(f"{BACKEND_LABELS[backend]}: skipped ({reason})")
            continue
        if first_contacts and not standard:
            await _first_contacts_pass(report, backend, first_contacts, services, warmup, progress)
            continue
        if progress:
            progress(f"{BACKEND_LABELS[backend]}: max pass, {customers} customers x {messages} messages")
        peak = await run_pass(
            backend, customers, messages, services=services, warmup=warmup, progress=progress
        )
        report.results.append(peak)
        if progress:
            progress(f"  -> {_summary(peak)}")
            progress(f"{BACKEND_LABELS[backend]}: half-load pass at {peak.throughput / 2:.0f} msg/s")
        half = await run_pass(
            backend,
            customers,
            messages,
            rate=peak.throughput / 2,
            services=services,
            warmup=warmup,
            progress=progress,
        )
        report.results.append(half)
        if progress:
            progress(f"  -> {_summary(half)}")
        if first_contacts:
            await _first_contacts_pass(report, backend, first_contacts, services, warmup, progress)
    return report


async def _first_contacts_pass(
    report: BenchReport,
    backend: str,
    customers: int,
    services: Services,
    warmup: int,
    progress: Progress | None,
) -> None:
    if progress:
        progress(
            f"{BACKEND_LABELS[backend]}: first contacts, {customers} new customers writing once, then again"
        )
    result = await run_first_contacts(backend, customers, services=services, warmup=warmup, progress=progress)
    report.first_contacts.append(result)
    if progress:
        progress(f"  -> first contacts: {_summary(result.first)}")
        progress(f"  -> follow-ups: {_summary(result.follow)}")
        progress(
            f"  -> ratio {result.ratio:.2f}; {result.open_conversations} open conversations, {result.rooms} rooms; "
            f"RSS {result.rss_mb:.0f} MB (peak {result.peak_rss_mb:.0f} MB)"
        )


def _summary(result: PassResult) -> str:
    return (
        f"{result.messages} messages in {result.seconds:.2f} s = {result.throughput:,.0f} msg/s "
        f"({result.cpu_ms_per_message:.2f} ms CPU/msg); latency p50 {result.p50_ms:.1f} ms, "
        f"p99 {result.p99_ms:.1f} ms (follow-ups {_ms(result.followup_p99_ms)}), max {result.max_ms:.1f} ms"
    )


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.1f}"


def _verdict(ok: bool) -> str:
    return "meets" if ok else "**misses**"


def markdown_table(report: BenchReport) -> str:
    """The figures with the goal next to each, as a markdown table."""
    lines = [
        "| configuration | pass | messages | msg/s | goal | CPU ms/msg | p50 ms | p99 ms "
        "| p99 follow-ups ms | max ms | goal |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in report.results:
        label = BACKEND_LABELS[r.backend]
        figures = (
            f"{r.cpu_ms_per_message:.2f} | {_ms(r.p50_ms)} | {_ms(r.p99_ms)} | {_ms(r.followup_p99_ms)} "
            f"| {_ms(r.max_ms)}"
        )
        if r.mode == "max":
            goal = THROUGHPUT_GOALS[r.backend]
            lines.append(
                f"| {label} | max (closed loop) | {r.messages} | {r.throughput:,.0f} | "
                f"≥ {goal:,.0f}: {_verdict(r.throughput >= goal)} | {figures} | - (saturated: queueing) |"
            )
        else:
            offered = f"{r.target_rate:,.0f}" if r.target_rate else "?"
            lines.append(
                f"| {label} | half load ({offered} msg/s offered) | {r.messages} | {r.throughput:,.0f} | - | "
                f"{figures} | p99 ≤ {P99_GOAL_MS:.0f}: {_verdict(r.p99_ms <= P99_GOAL_MS)} |"
            )
    for backend, reason in report.skipped.items():
        lines.append(f"| {BACKEND_LABELS[backend]} | skipped: {reason} | | | | | | | | | |")
    return "\n".join(lines)


def machine_line() -> str:
    """Date, cores and versions, for the record next to the figures."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{now}; {os.cpu_count()} cores ({platform.processor() or platform.machine()}); "
        f"Python {platform.python_version()}; load average {load}; one desk (one worker) in the benchmark's process"
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.relay",
        description="Throughput and latency of the relaydesk core with zero-latency channel/workspace doubles.",
    )
    parser.add_argument(
        "--customers", type=int, help=f"customers writing at once (default {DEFAULT_CUSTOMERS})"
    )
    parser.add_argument("--messages", type=int, help=f"messages per customer (default {DEFAULT_MESSAGES})")
    parser.add_argument(
        "--backend", choices=[*BACKENDS, "both"], default="both", help="storage and bus (default both)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke-run sizes ({QUICK_CUSTOMERS} x {QUICK_MESSAGES}) unless given",
    )
    parser.add_argument(
        "--warmup", type=int, default=DEFAULT_WARMUP, help="throwaway customers before measuring"
    )
    parser.add_argument(
        "--first-contacts",
        type=int,
        nargs="?",
        const=-1,
        metavar="N",
        help=f"also run the first-contact pass: N new customers writing once, then once more "
        f"(default {DEFAULT_FIRST_CONTACTS:,}; {QUICK_FIRST_CONTACTS} with --quick), with the RSS after",
    )
    parser.add_argument(
        "--workers",
        action="store_true",
        help="also run the PostgreSQL + Redis pass with 1 then 2 worker processes (the scaling goal)",
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="also measure how many single-row statements per second PostgreSQL takes here without relaydesk",
    )
    parser.add_argument(
        "--only-first-contacts",
        action="store_true",
        help="run the first-contact pass alone (no max and half-load passes)",
    )
    parser.add_argument(
        "--count-queries",
        action="store_true",
        help="after the timed passes, count SQL statements per message in an extra (untimed) max and half pass",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="after the timed passes, profile an extra max pass of each backend (pyinstrument and cProfile) into DIR",
    )
    args = parser.parse_args(argv)
    args.customers = args.customers or (QUICK_CUSTOMERS if args.quick else DEFAULT_CUSTOMERS)
    args.messages = args.messages or (QUICK_MESSAGES if args.quick else DEFAULT_MESSAGES)
    if args.only_first_contacts and args.first_contacts is None:
        args.first_contacts = -1
    if args.first_contacts == -1:
        args.first_contacts = QUICK_FIRST_CONTACTS if args.quick else DEFAULT_FIRST_CONTACTS
    args.first_contacts = args.first_contacts or 0
    if args.customers < 1 or args.messages < 1:
        parser.error("--customers and --messages must be at least 1")
    return args


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def _main(args: argparse.Namespace) -> int:
    backends = list(BACKENDS) if args.backend == "both" else [args.backend]
    _err(f"relaydesk core benchmark: {args.customers} customers x {args.messages} messages; {machine_line()}")
    report = await run_benchmark(
        backends,
        args.customers,
        args.messages,
        warmup=args.warmup,
        progress=_err,
        first_contacts=args.first_contacts,
        standard=not args.only_first_contacts,
    )
    failed = False
    checked = [*report.results, *(p for r in report.first_contacts for p in (r.first, r.follow))]
    for result in checked:
        problems = result.delivery_problems()
        if problems:
            failed = True
            _err(
                f"DELIVERY CHECK FAILED ({result.backend} {result.mode}): {len(problems)} problems, first: {problems[0]}"
            )

    scaling: list[WorkersResult] = []
    if args.workers:
        if reason := Services.from_env().unreachable():
            _err(f"several workers: skipped ({reason})")
        else:
            for workers in (1, 2):
                _err(f"{workers} worker process(es): {args.customers} customers x {args.messages} messages")
                several = await run_workers(workers, args.customers, args.messages, progress=_err)
                scaling.append(several)
                _err(f"  -> {several.throughput:,.0f} msg/s, p99 {_ms(several.p99_ms)} ms")
                if several.problems:
                    failed = True
                    _err(f"DELIVERY CHECK FAILED ({workers} workers): {several.problems[0]}")

    ceiling = None
    if args.ceiling:
        if reason := Services.from_env().unreachable():
            _err(f"PostgreSQL ceiling: skipped ({reason})")
        else:
            _err("PostgreSQL ceiling: single-row inserts without relaydesk")
            ceiling = await statement_ceiling(Services.from_env())

    if args.count_queries:
        for result in report.results:
            rate = result.target_rate
            _err(f"counting SQL statements: {result.backend} {result.mode} pass")
            counter = QueryCounter()
            await run_pass(
                result.backend,
                result.customers,
                result.messages_per_customer,
                rate=rate,
                section=counter.attached,
            )
            print(f"\n### SQL statements: {BACKEND_LABELS[result.backend]}, {result.mode} pass\n")
            print(counter.report(result.messages))
        for contacts in report.first_contacts:
            backend, customers = contacts.first.backend, contacts.first.customers
            _err(f"counting SQL statements: {backend} first contacts")
            counter = QueryCounter()
            await run_first_contacts(backend, customers, section=counter.attached)
            print(f"\n### SQL statements: {BACKEND_LABELS[backend]}, first contacts\n")
            print(counter.report(customers))

    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        for backend in backends:
            if backend == "postgres" and Services.from_env().unreachable():
                continue
            base = args.profile / f"relay-{backend}-max"
            if importlib.util.find_spec("pyinstrument") is None:
                _err("pyinstrument is not installed: cProfile only")
            else:
                _err(
                    f"profiling a {backend} max pass with pyinstrument -> {base}.tree.txt / .flat.txt / .html"
                )
                await run_pass(
                    backend,
                    args.customers,
                    args.messages,
                    section=functools.partial(pyinstrument_profile, base),
                )
            _err(f"profiling a {backend} max pass with cProfile -> {base}.cprofile.txt")
            await run_pass(
                backend,
                args.customers,
                args.messages,
                section=functools.partial(cprofile_profile, Path(f"{base}.cprofile.txt")),
            )
            if args.first_contacts:
                first = args.profile / f"relay-{backend}-first-contacts.cprofile.txt"
                _err(f"profiling {backend} first contacts with cProfile -> {first}")
                await run_first_contacts(
                    backend, args.first_contacts, section=functools.partial(cprofile_profile, first)
                )

    print(f"\n## relaydesk core: {args.customers} customers x {args.messages} messages\n")
    print(f"{machine_line()}\n")
    if report.results or report.skipped:
        print(markdown_table(report))
    if scaling:
        print(
            f"\n### Several workers (PostgreSQL + Redis Streams, one process each)\n\n{workers_table(scaling)}"
        )
    if ceiling is not None:
        print(
            f"\n### PostgreSQL without relaydesk\n\nSingle-row inserts with RETURNING, each committed on its own, "
            f"100 tasks: **{ceiling.pooled:,.0f} statements/s** on pooled connections (as relaydesk runs them), "
            f"{ceiling.pinned:,.0f}/s on a connection per task; the machine's cores {ceiling.machine_busy:.0%} "
            "busy. Divided by the statements per message (`--count-queries`), the most messages per second this "
            "PostgreSQL allows one process before relaydesk's own work."
        )
    if report.first_contacts:
        print(f"\n### First contacts\n\n{first_contacts_table(report.first_contacts)}")
        print(
            "\nFirst contacts: every customer writes once, all at once (customer, identity, conversation and "
            "room created); follow-ups: each writes once more, in the same desk. RSS: this whole process "
            "(desk, doubles and load generator) after both, every conversation still open."
        )
    print(
        "\nLatency: from the inbound() call to the room post. Max pass: closed loop, all customers at once. "
        "Half load: Poisson arrivals at half the max pass's throughput. Follow-ups: every message but each "
        "customer's first. CPU: this process only (not the PostgreSQL and Redis servers)."
    )
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from the command line; exit status 1 if a delivery check failed."""
    from bot_core.cli import use_fast_event_loop

    print(f"event loop: {use_fast_event_loop()} (as relaydesk run uses)", file=sys.stderr)
    return asyncio.run(_main(_parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
