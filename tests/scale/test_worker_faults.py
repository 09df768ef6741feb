"""Faults with several workers (issue 25 point 5): three `relaydesk run` processes on the test's own
PostgreSQL and Redis, under load from customers and agents, while a worker is killed, a worker is paused
past its leases, Redis is killed (with and without persistence) and PostgreSQL is restarted or crashed.

Afterwards, what a user would see: every customer message exactly once in the customer's room, in order;
every agent message exactly once at the customer, in order; one room and one conversation per customer;
every scheduled job fired exactly once. ``RELAYDESK_FAULT_MESSAGES`` sets the messages each way (200
here, 2,000 in ``make soak``).
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from tests.scale.harness import CUSTOMERS, MESSAGES, Load, Recorder, Worker, worker_config
from tests.scale.servers import OwnPostgres, OwnRedis, free_port

WORKERS = 3
PARTITIONS = 16  # the bus's default


def _stream(partition: int) -> str:
    """The key of a bus partition's stream (storage.bus.redis_streams, prefix ``relaydesk``)."""
    return f"{{relaydesk:p{partition}}}:stream"


def _lease(partition: int) -> str:
    """The key of a bus partition's lease."""
    return f"{{relaydesk:p{partition}}}:lease"


@dataclass
class Servers:
    """The module's own PostgreSQL and Redis."""

    postgres: OwnPostgres
    redis: OwnRedis


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """A PostgreSQL and a Redis for this module alone, stopped at its end."""
    base = tmp_path_factory.mktemp("faults")
    postgres = OwnPostgres(base / "pg")
    redis_server = OwnRedis(base / "redis")
    postgres.start()
    redis_server.start(persist=True)
    try:
        yield Servers(postgres, redis_server)
    finally:
        redis_server.kill()
        try:
            postgres.stop("immediate")
        except (RuntimeError, TimeoutError):
            pass
        postgres.remove()


@dataclass
class Cluster:
    """Three workers on the module's servers, a fresh database and an empty Redis, and their recorder."""

    servers: Servers
    database: str
    recorder: Recorder
    workers: list[Worker]

    async def redis_client(self) -> aioredis.Redis:
        """A client of the module's Redis."""
        return aioredis.Redis.from_url(self.servers.redis.url, decode_responses=True)

    async def bus_backlog(self) -> int:
        """Entries in the bus streams (published, not yet acknowledged)."""
        client = await self.redis_client()
        try:
            return sum([int(await client.xlen(_stream(p))) for p in range(PARTITIONS)])
        finally:
            await client.aclose()

    async def quiet(self) -> bool:
        """Nothing left to do: the bus and the outbox are empty and no scheduled job is waiting to fire."""
        if await self.bus_backlog() or await self.outbox_backlog():
            return False
        conn = await asyncpg.connect(self.database)
        try:
            waiting = await conn.fetchval(
                "SELECT count(*) FROM scheduled_task WHERE fired_at IS NULL AND cancelled_at IS NULL"
            )
        finally:
            await conn.close()
        return int(waiting) == 0 and not await self.bus_backlog()

    async def outbox_backlog(self) -> int:
        """Outbox rows not yet sent or given up."""
        conn = await asyncpg.connect(self.database)
        try:
            return int(
                await conn.fetchval("SELECT count(*) FROM outbox_item WHERE status IN ('pending', 'sending')")
            )
        finally:
            await conn.close()


async def _fresh_redis(servers: Servers, persist: bool) -> None:
    servers.redis.kill()
    servers.redis.wipe()
    await asyncio.to_thread(servers.redis.start, persist)


@pytest.fixture
async def cluster(servers: Servers, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """Three workers started on a new database and an empty Redis (``persist`` marker: Redis without AOF)."""
    if servers.postgres.port and not _up(servers.postgres.port):
        await asyncio.to_thread(servers.postgres.start)  # a test crashed it and failed before restarting
    persist = request.node.get_closest_marker("no_redis_persistence") is None
    await _fresh_redis(servers, persist)
    name = f"faults_{request.node.name.replace('[', '_').replace(']', '')[:40]}"
    admin = await asyncpg.connect(servers.postgres.database_url("postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    database = servers.postgres.database_url(name)
    recorder = Recorder()
    await recorder.start()
    workers = []
    for i in range(WORKERS):
        directory = tmp_path / f"worker{i}"
        directory.mkdir()
        port = free_port()
        (directory / "plugins.yaml").write_text(
            worker_config(database, servers.redis.url, recorder.url, port)
        )
        workers.append(Worker(directory, port))
    migrate = await asyncio.create_subprocess_exec(
        *Worker.command("migrate"), cwd=workers[0].directory, env=Worker.env(), stderr=asyncio.subprocess.PIPE
    )
    _, err = await migrate.communicate()
    assert migrate.returncode == 0, err.decode()
    await asyncio.gather(*(w.start() for w in workers))
    try:
        yield Cluster(servers, database, recorder, workers)
    finally:
        await asyncio.gather(*(w.stop() for w in workers))
        await recorder.stop()


def _up(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


Fault = Callable[[], Awaitable[None]]


async def run_with_faults(cluster: Cluster, faults: list[tuple[float, Fault]], *, seed: int = 25) -> Load:
    """Run the load; when the recorder has seen each share of it, inject that fault. Then check everything."""
    recorder = cluster.recorder
    load = Load(recorder, cluster.workers, messages=MESSAGES, customers=CUSTOMERS, seed=seed)
    driving = asyncio.create_task(load.run(timeout=600))
    try:
        for share, fault in sorted(faults, key=lambda f: f[0]):
            # faults are placed by the share of the load the workers acknowledged (while much of it is still
            # on the bus or in the outbox), never by time
            goal = int(share * load.total)
            deadline = asyncio.get_running_loop().time() + 300
            while load.acknowledged < goal:
                assert not driving.done(), f"the load ended before the fault at {share:.0%}"
                assert asyncio.get_running_loop().time() < deadline, f"{goal} messages not accepted in 300 s"
                await asyncio.sleep(0.01)
            await fault()
        await driving
    finally:
        driving.cancel()
    await _wait_complete(cluster, load)
    _check(cluster, load, await _conversations_per_customer(cluster))
    return load


async def _conversations_per_customer(cluster: Cluster) -> dict[str, int]:
    """How many conversations each customer (by their user id on the channel) has in the database."""
    conn = await asyncpg.connect(cluster.database)
    try:
        rows = await conn.fetch(
            'SELECT i.external_id AS "user", count(DISTINCT c.id) AS n FROM conversation c'
            " JOIN identity i ON i.customer_id = c.customer_id GROUP BY i.external_id"
        )
    finally:
        await conn.close()
    return {str(row["user"]): int(row["n"]) for row in rows}


def _expected_notices(load: Load, user: str) -> list[str]:
    return [f"fired {key}" for key in load.scheduled_keys(user)]


def _complete(recorder: Recorder, load: Load) -> bool:
    seen = recorder.seen
    for user in load.customers:
        room = recorder.room_of(user)
        if room is None or len(seen.delivered.get(user, [])) < load.per_customer:
            return False
        posts = seen.posts[room]
        if sum(1 for kind, _ in posts if kind == "customer") < load.per_customer:
            return False
        if sum(1 for kind, text in posts if kind == "notice" and text.startswith("fired ")) < len(
            load.scheduled_keys(user)
        ):
            return False
    return True


async def _wait_complete(cluster: Cluster, load: Load) -> None:
    """Wait until every message and fire arrived, or nothing more can come (the bus, the outbox and the
    scheduled jobs are all empty: what is missing then is lost); then until the bus and the outbox are
    empty (nothing more to come, so nothing doubled can still arrive)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 240
    while not _complete(cluster.recorder, load):
        if await cluster.quiet():
            return  # _check says what is missing
        assert loop.time() < deadline, "no complete delivery within 240 s, and work still pending"
        await asyncio.sleep(0.2)
    while not await cluster.quiet():
        assert loop.time() < deadline, "the bus or the outbox did not drain"
        await asyncio.sleep(0.1)


def _check(cluster: Cluster, load: Load, conversations: dict[str, int]) -> None:
    """Every message exactly once, in order, on the right side; one room and one conversation per
    customer; each job fired once."""
    recorder = cluster.recorder
    seen = recorder.seen
    problems: list[str] = []
    rooms_per_user: dict[str, int] = {}
    for user in seen.room_user.values():
        rooms_per_user[user] = rooms_per_user.get(user, 0) + 1
    for user in load.customers:
        if rooms_per_user.get(user, 0) != 1:
            problems.append(f"{user} has {rooms_per_user.get(user, 0)} rooms")
        if conversations.get(user, 0) != 1:  # two handlers of one event at once opened two (issue 25)
            problems.append(f"{user} has {conversations.get(user, 0)} conversations")
        delivered = seen.delivered.get(user, [])
        if delivered != load.agent_texts(user):
            problems.append(f"{user} received {_diff(load.agent_texts(user), delivered)}")
        room = recorder.room_of(user)
        posts = seen.posts.get(room, []) if room else []
        shown = [text for kind, text in posts if kind == "customer"]
        if shown != load.customer_texts(user):
            problems.append(f"{user}'s room shows {_diff(load.customer_texts(user), shown)}")
        fired = sorted(text for kind, text in posts if kind == "notice" and text.startswith("fired "))
        if fired != sorted(_expected_notices(load, user)):
            problems.append(
                f"{user}'s room has job notices {_diff(sorted(_expected_notices(load, user)), fired)}"
            )
        others = [text for kind, text in posts if kind == "notice" and not text.startswith("fired ")]
        if len(set(others)) != len(others):  # the core's own notices (assigned to ...) show once each
            problems.append(f"{user}'s room has doubled notices: {others}")
    errors = [line for worker in cluster.workers for line in worker.errors()]
    assert not problems, "\n".join([*problems[:20], "worker errors:", *errors[:20]])
    print(
        f"{load.total // 2} messages each way over {len(load.customers)} conversations:"
        f" {load.retries} webhook retries, {seen.dropped} repeated sends/posts dropped by key,"
        f" worker starts {[w.starts for w in cluster.workers]}"
    )


def _diff(expected: list[str], got: list[str]) -> str:
    missing = [t for t in expected if t not in got]
    extra = [t for t in got if t not in expected]
    doubled = sorted({t for t in got if got.count(t) > 1})
    kept = [t for t in got if t in expected]
    order = "in order"
    if kept != [t for t in expected if t in got]:
        order = f"OUT OF ORDER: {[expected.index(t) for t in kept]}"
    return f"{len(got)}/{len(expected)} ({order}); missing {missing[:5]}, extra {extra[:5]}, doubled {doubled[:5]}"


# -- scenarios ---------------------------------------------------------------------------------------


async def test_workers_killed_at_random_points_lose_and_double_nothing(cluster: Cluster) -> None:
    """kill -9 of a random worker at four random points of the load; each is started again at once."""
    rng = random.Random(2025)

    async def kill_one() -> None:
        worker = rng.choice(cluster.workers)
        worker.kill()
        await worker.start()

    points = sorted(rng.uniform(0.1, 0.8) for _ in range(4))
    await run_with_faults(cluster, [(p, kill_one) for p in points])


async def test_redis_killed_and_restarted_with_its_aof_loses_nothing(cluster: Cluster) -> None:
    """Redis SIGKILLed twice mid-load and started again on its AOF (fsync always): nothing lost or doubled."""

    async def restart_redis() -> None:
        cluster.servers.redis.kill()
        await asyncio.to_thread(cluster.servers.redis.start)

    await run_with_faults(cluster, [(0.3, restart_redis), (0.6, restart_redis)])


async def test_postgres_restarted_and_crashed_mid_load_loses_nothing(cluster: Cluster) -> None:
    """PostgreSQL restarted cleanly (pg_ctl restart -m fast), later crashed (-m immediate) and started again."""
    postgres = cluster.servers.postgres

    async def restart() -> None:
        await asyncio.to_thread(postgres.restart, "fast")

    async def crash() -> None:
        await asyncio.to_thread(postgres.restart, "immediate")

    await run_with_faults(cluster, [(0.3, restart), (0.6, crash)])


async def test_a_worker_paused_past_its_leases_then_resumed_loses_and_doubles_nothing(
    cluster: Cluster,
) -> None:
    """SIGSTOP a worker until every partition lease it held belongs to another worker, then SIGCONT it.

    Its handlers in flight stop at their next database statement when it wakes (storage/fence.py):
    before, one went on beside the partition's new owner, which handled the same event again (in one run
    of four: a second conversation for a new customer, and its first message shown after its second).
    """

    async def pause() -> None:
        client = await cluster.redis_client()
        try:
            # the worker holding the most partitions (workers that joined last take theirs over a few seconds)
            leases = {w.pid: await _leases_of(client, w.pid) for w in cluster.workers}
            worker = max(cluster.workers, key=lambda w: len(leases[w.pid]))
            held = leases[worker.pid]
            assert held, "no worker held a lease"
            worker.signal(signal.SIGSTOP)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while True:
                owners = {p: await client.get(_lease(p)) for p in held}
                if all(owner and f"-{worker.pid}-" not in owner for owner in owners.values()):
                    break
                assert loop.time() < deadline, f"the paused worker's leases were not taken over: {owners}"
                await asyncio.sleep(0.1)
        finally:
            await client.aclose()
        worker.signal(signal.SIGCONT)

    await run_with_faults(cluster, [(0.3, pause)])


async def _leases_of(client: aioredis.Redis, pid: int) -> list[int]:
    held = []
    for partition in range(PARTITIONS):
        owner = await client.get(_lease(partition))
        if owner and f"-{pid}-" in owner:
            held.append(partition)
    return held


@pytest.mark.no_redis_persistence
@pytest.mark.xfail(
    raises=AssertionError,  # only what the checks find: a missing server still fails (or skips) the test
    strict=True,
    reason="without persistence a Redis restart loses the events it had accepted and not yet handled:"
    " they exist only in its streams (docs/production.md: Redis needs appendonly yes)",
)
async def test_redis_restarted_without_persistence_loses_what_it_held(cluster: Cluster) -> None:
    """Redis without AOF killed mid-load, at a moment its streams hold messages no worker has read yet."""

    async def restart_redis_holding_unread_entries() -> None:
        client = await cluster.redis_client()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        try:
            while True:
                for worker in cluster.workers:  # freeze the consumers: unread entries stay unread
                    worker.signal(signal.SIGSTOP)
                unread = await _unread_entries(client)
                if unread:
                    break
                for worker in cluster.workers:
                    worker.signal(signal.SIGCONT)
                assert loop.time() < deadline, "the streams never held an unread entry"
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()
        cluster.servers.redis.kill()
        await asyncio.to_thread(cluster.servers.redis.start)
        for worker in cluster.workers:
            worker.signal(signal.SIGCONT)

    await run_with_faults(cluster, [(0.4, restart_redis_holding_unread_entries)])


async def _unread_entries(client: aioredis.Redis) -> int:
    """Customer and agent messages in the bus streams that no consumer has read yet (after the group's
    last delivered id): accepted with 200, and handled by nobody."""
    unread = 0
    for partition in range(PARTITIONS):
        key = _stream(partition)
        if not await client.exists(key):
            continue
        groups = await client.xinfo_groups(key)
        last = next((g["last-delivered-id"] for g in groups if g["name"] == "relaydesk:workers"), "0-0")
        for _id, fields in await client.xrange(key, min=f"({last}", max="+") or []:
            if fields and json.loads(fields["d"]).get("type") in ("customer_message", "agent_message"):
                unread += 1
    return unread
