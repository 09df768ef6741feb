"""The EventBus contract (storage/bus/base.py), checked against every implementation.

Backends: ``memory`` (no journal), ``memory+journal`` (MemoryBus on a DbJournal in a temporary SQLite
file), ``redis`` (RedisStreamsBus on a unique key prefix, removed afterwards) and ``redis-cluster`` (the
same on the session's three-master Redis Cluster, tests/redis_cluster.py, through redis-py's cluster
client). Tests that only make sense for some backends are parametrised over those only: the plain
memory bus keeps nothing across a restart, and leases and reclaiming exist only on Redis.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from tortoise import Tortoise

from storage.bus import BusEntry, DbJournal, EventBus, MemoryBus, RedisStreamsBus, partition_of
from storage.db import tortoise_config
from storage.redis_client import AnyRedis, connect
from tests.redis_cluster import node_of
from tests.services import require_redis

MEMORY = "memory"
JOURNAL = "memory+journal"
REDIS = "redis"
CLUSTER = "redis-cluster"

_PARAMS = {
    MEMORY: pytest.param(MEMORY, id=MEMORY),
    JOURNAL: pytest.param(JOURNAL, id=JOURNAL),
    REDIS: pytest.param(REDIS, id=REDIS, marks=pytest.mark.redis),
    CLUSTER: pytest.param(CLUSTER, id=CLUSTER, marks=pytest.mark.redis),
}


def backends(*names: str) -> pytest.MarkDecorator:
    """Run a test against the named backends."""
    return pytest.mark.parametrize("backend", [_PARAMS[name] for name in names], indirect=True)


EVERY_BACKEND = backends(MEMORY, JOURNAL, REDIS, CLUSTER)
DURABLE_BACKENDS = backends(JOURNAL, REDIS, CLUSTER)  # the plain memory bus keeps nothing across a restart
REDIS_ONLY = backends(REDIS, CLUSTER)

AnyBus = MemoryBus | RedisStreamsBus  # both also have abort(), to simulate a crash


class Backend:
    """Builds buses on one store and cleans the store up afterwards."""

    def __init__(self, kind: str, tmp_path: Path, redis_url: str = "") -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.buses: list[AnyBus] = []
        self.redis_url = redis_url
        self.prefix = f"relaydesk-test-{uuid.uuid4().hex[:12]}"
        self._redis: AnyRedis | None = None

    async def setup(self) -> None:
        if self.kind == JOURNAL:
            await Tortoise.init(config=tortoise_config(f"sqlite://{self.tmp_path / 'bus.db'}"))
            await Tortoise.generate_schemas()
        elif self.kind == REDIS:
            self.redis_url = require_redis()
            self._redis = connect(self.redis_url)
        elif self.kind == CLUSTER:
            self._redis = connect(self.redis_url, cluster=True)

    async def teardown(self) -> None:
        for bus in self.buses:
            await bus.stop(timeout=1.0)
        if self.kind == JOURNAL:
            await Tortoise.close_connections()
        elif self._redis is not None:
            # the partition keys start with their hash tag ({prefix:pN}); SCAN visits every cluster node
            for pattern in (f"{self.prefix}:*", "{" + self.prefix + ":*"):
                async for key in self._redis.scan_iter(match=pattern):
                    await self._redis.delete(key)
            await self._redis.aclose()

    @property
    def redis(self) -> AnyRedis:
        """A plain client on the test database or cluster (Redis backends only)."""
        assert self._redis is not None
        return self._redis

    def make(self, partitions: int = 16, **options: Any) -> AnyBus:
        """A new, unstarted bus on this backend's store (the same store for every call)."""
        bus: AnyBus
        if self.kind in (REDIS, CLUSTER):
            options.setdefault("lease_ttl", 2.0)
            bus = RedisStreamsBus(
                self.redis_url,
                prefix=self.prefix,
                partitions=partitions,
                cluster=self.kind == CLUSTER,
                **options,
            )
        else:
            options.pop("lease_ttl", None)
            journal = DbJournal() if self.kind == JOURNAL else None
            bus = MemoryBus(partitions, journal=journal, **options)
        assert isinstance(bus, EventBus)
        self.buses.append(bus)
        return bus

    async def stored(self) -> int:
        """Unacknowledged entries as the store itself sees them (journal rows / stream entries)."""
        if self.kind == JOURNAL:
            return len(await DbJournal().load())
        if self.kind in (REDIS, CLUSTER):
            bus = max(self.buses, key=lambda bus: bus.partitions)
            assert isinstance(bus, RedisStreamsBus)
            return sum([await self.redis.xlen(bus.stream_key(p)) for p in range(bus.partitions)])
        raise AssertionError("the plain memory bus has no store")


@pytest.fixture
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """The backend named by the test's parametrisation, set up and torn down around the test."""
    cluster_url = request.getfixturevalue("redis_cluster_url") if request.param == CLUSTER else ""
    store = Backend(request.param, tmp_path, cluster_url)
    await store.setup()
    try:
        yield store
    finally:
        await store.teardown()


async def wait_until(condition: Callable[[], bool], within: float, what: str) -> None:
    """Wait for a condition on state that other processes change (leases); fail after ``within`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() >= deadline:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


async def event(ev: asyncio.Event, within: float, what: str) -> None:
    """Wait for an event; fail the test after ``within`` s."""
    try:
        await asyncio.wait_for(ev.wait(), within)
    except TimeoutError:
        pytest.fail(f"timed out after {within} s waiting for {what}")


def keys_in_distinct_partitions(partitions: int) -> tuple[str, str]:
    """Two keys that hash to different partitions."""
    first = "conv-a"
    for n in range(1000):
        other = f"conv-b{n}"
        if partition_of(other, partitions) != partition_of(first, partitions):
            return first, other
    raise AssertionError("no key in another partition")


class TestEventBusContract:
    """Every EventBus must behave as storage/bus/base.py describes."""

    @EVERY_BACKEND
    async def test_entries_of_a_key_are_handled_in_publish_order_one_at_a_time(
        self, backend: Backend
    ) -> None:
        bus = backend.make()
        seen: dict[str, list[int]] = defaultdict(list)
        in_hand: set[str] = set()
        overlaps: list[str] = []

        async def handler(entry: BusEntry) -> None:
            if entry.key in in_hand:
                overlaps.append(entry.key)
            in_hand.add(entry.key)
            try:
                if entry.payload["seq"] % 5 == 0:
                    # Stay in hand a moment so the key's next entries are queued meanwhile.
                    await asyncio.sleep(0.002)
                seen[entry.key].append(entry.payload["seq"])
            finally:
                in_hand.discard(entry.key)

        async def publish_key(key: str, seqs: range) -> None:
            for seq in seqs:
                await bus.publish(key, {"seq": seq})

        keys = [f"conv-{n}" for n in range(50)]
        # Half before start (a backlog in every partition), half while the bus is handling.
        await asyncio.gather(*(publish_key(key, range(10)) for key in keys))
        await bus.start(handler)
        await asyncio.gather(*(publish_key(key, range(10, 20)) for key in keys))
        assert await bus.wait_idle(timeout=30)
        assert dict(seen) == {key: list(range(20)) for key in keys}
        assert overlaps == []
        assert await bus.pending() == 0

    @EVERY_BACKEND
    async def test_a_blocked_partition_does_not_hold_up_another(self, backend: Backend) -> None:
        bus = backend.make(partitions=8)
        key_a, key_b = keys_in_distinct_partitions(8)
        a_started, release_a, b_handled = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def handler(entry: BusEntry) -> None:
            if entry.key == key_a:
                a_started.set()
                await release_a.wait()
            elif entry.key == key_b:
                b_handled.set()

        await bus.start(handler)
        await bus.publish(key_a, {"n": 1})
        await event(a_started, 5, "the handler of key A")
        await bus.publish(key_b, {"n": 1})
        await event(b_handled, 5, "key B while key A is blocked (partitions must run in parallel)")
        assert not release_a.is_set()
        assert not await bus.wait_idle(timeout=0.05)  # A is still in hand, so not acknowledged
        release_a.set()
        assert await bus.wait_idle(timeout=5)
        assert await bus.pending() == 0

    @EVERY_BACKEND
    async def test_a_failing_entry_is_retried_then_acknowledged_once(self, backend: Backend) -> None:
        bus = backend.make(max_attempts=5, retry_backoff=0.01)
        attempts: list[tuple[str, int]] = []
        successes: list[str] = []
        marker_seen = asyncio.Event()

        async def handler(entry: BusEntry) -> None:
            if entry.payload.get("marker"):
                marker_seen.set()
                return
            attempts.append((entry.id, entry.attempt))
            if entry.attempt < 3:
                raise RuntimeError("flaky downstream")
            successes.append(entry.id)

        await bus.start(handler)
        entry_id = await bus.publish("conv-flaky", {"n": 1})
        assert await bus.wait_idle(timeout=10)
        assert attempts == [(entry_id, 1), (entry_id, 2), (entry_id, 3)]
        assert successes == [entry_id]
        # Once acknowledged, the entry is never delivered again: a later entry of the same key
        # arrives, and the flaky one did not come back before it.
        await bus.publish("conv-flaky", {"marker": True})
        await event(marker_seen, 5, "the marker entry")
        assert await bus.wait_idle(timeout=5)
        assert successes == [entry_id]
        assert len(attempts) == 3
        assert await bus.pending() == 0
        if backend.kind != MEMORY:
            assert await backend.stored() == 0

    @EVERY_BACKEND
    async def test_a_poison_entry_is_dead_lettered_and_does_not_block_its_key(self, backend: Backend) -> None:
        bus = backend.make(max_attempts=3, retry_backoff=0.01)
        log: list[str] = []
        dead: list[tuple[BusEntry, BaseException]] = []

        async def handler(entry: BusEntry) -> None:
            if entry.payload["poison"]:
                log.append(f"attempt {entry.attempt}")
                raise ValueError("cannot handle this")
            log.append(f"ok {entry.payload['seq']}")

        async def on_dead_letter(entry: BusEntry, exc: BaseException) -> None:
            dead.append((entry, exc))
            log.append("dead letter")

        await bus.start(handler, on_dead_letter)
        poison_id = await bus.publish("conv-p", {"poison": True, "seq": 0})
        await bus.publish("conv-p", {"poison": False, "seq": 1})
        await bus.publish("conv-p", {"poison": False, "seq": 2})
        assert await bus.wait_idle(timeout=10)
        assert log == ["attempt 1", "attempt 2", "attempt 3", "dead letter", "ok 1", "ok 2"]
        assert len(dead) == 1
        entry, exc = dead[0]
        assert (entry.id, entry.key, entry.attempt) == (poison_id, "conv-p", 3)
        assert entry.payload == {"poison": True, "seq": 0}
        assert isinstance(exc, ValueError)
        assert await bus.pending() == 0
        if backend.kind != MEMORY:
            assert await backend.stored() == 0

    @DURABLE_BACKENDS
    @pytest.mark.parametrize("how", ["stop", "crash"])
    async def test_unacknowledged_entries_are_handled_by_the_next_bus(
        self, backend: Backend, how: str
    ) -> None:
        first = backend.make(partitions=4, lease_ttl=1.0)
        started, never = asyncio.Event(), asyncio.Event()
        first_seen: list[int] = []

        async def stuck(entry: BusEntry) -> None:
            first_seen.append(entry.payload["seq"])
            started.set()
            await never.wait()

        await first.start(stuck)
        for seq in range(5):
            await first.publish("conv-r", {"seq": seq})
        await event(started, 5, "the first bus to take an entry")
        if how == "stop":
            await first.stop(timeout=0.1)  # the handler in hand is cancelled: nothing is acknowledged
        else:
            await first.abort()  # as if the process died (Redis: the lease is left to expire)
        assert first_seen == [0]
        assert await backend.stored() == 5

        second = backend.make(partitions=4, lease_ttl=1.0)
        handled: list[int] = []

        async def record(entry: BusEntry) -> None:
            handled.append(entry.payload["seq"])

        await second.start(record)
        await second.publish("conv-r", {"seq": 5})
        assert await second.wait_idle(timeout=15)
        assert handled == [0, 1, 2, 3, 4, 5]
        assert await second.pending() == 0
        assert await backend.stored() == 0

    @EVERY_BACKEND
    async def test_pending_and_wait_idle(self, backend: Backend) -> None:
        bus = backend.make()
        assert await bus.pending() == 0
        assert await bus.wait_idle(timeout=0.5)  # nothing published: idle at once
        for seq in range(3):
            await bus.publish("conv-w", {"seq": seq})
        assert await bus.pending() == 3
        assert not await bus.wait_idle(timeout=0.05)  # not started: nothing can be acknowledged

        entered, gate = asyncio.Event(), asyncio.Event()
        handled: list[int] = []

        async def handler(entry: BusEntry) -> None:
            entered.set()
            await gate.wait()
            handled.append(entry.payload["seq"])

        await bus.start(handler)
        await event(entered, 5, "the first entry")
        assert await bus.pending() == 3  # the entry in hand is not acknowledged yet
        assert not await bus.wait_idle(timeout=0.05)
        gate.set()
        assert await bus.wait_idle(timeout=5)
        assert handled == [0, 1, 2]
        assert await bus.pending() == 0

    @backends(MEMORY, JOURNAL)
    async def test_a_backlog_does_not_hold_the_event_loop(self, backend: Backend) -> None:
        # Handlers that never wait (SQLite statements run in place) must still let other tasks, such
        # as the outbox sending what they queued, run between two entries of a burst.
        bus = backend.make(partitions=1)
        for seq in range(20):
            await bus.publish("conv-burst", {"seq": seq})
        handled: list[int] = []

        async def handler(entry: BusEntry) -> None:
            busy_until = time.perf_counter() + 0.001  # a millisecond of work, without suspending
            while time.perf_counter() < busy_until:
                pass
            handled.append(entry.payload["seq"])

        await bus.start(handler)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert 0 < len(handled) < 20, "the worker handled the whole backlog without letting others run"
        assert await bus.wait_idle(timeout=5)
        assert handled == list(range(20))

    @backends(JOURNAL)
    async def test_a_published_entry_is_committed_when_publish_returns(self, backend: Backend) -> None:
        # The caller acknowledges the event to its sender next: a crash after that must not lose it.
        bus = backend.make()
        await bus.publish("conv-durable", {"seq": 1})
        with sqlite3.connect(backend.tmp_path / "bus.db") as reader:  # committed data only
            assert reader.execute('SELECT COUNT(*) FROM "bus_journal"').fetchone()[0] == 1

    @REDIS_ONLY
    async def test_a_dead_workers_pending_entries_are_reclaimed_in_order(self, backend: Backend) -> None:
        dead = backend.make(partitions=4, lease_ttl=1.0)
        assert isinstance(dead, RedisStreamsBus)
        key = "conv-x"
        partition = partition_of(key, 4)
        stream, lease = dead.stream_key(partition), dead.lease_key(partition)
        took, never = asyncio.Event(), asyncio.Event()

        async def stuck(entry: BusEntry) -> None:
            took.set()
            await never.wait()

        for seq in range(5):  # published before the worker starts, so its first read takes all five
            await dead.publish(key, {"seq": seq})
        await dead.start(stuck)
        await event(took, 5, "the first worker to take an entry")
        await dead.abort()  # cancelled mid-handler: no ack, lease and heartbeat left to expire

        summary = await backend.redis.xpending(stream, dead.group)
        assert summary["pending"] == 5  # all read by the dead worker (one batch), none acknowledged
        assert [c["name"] for c in summary["consumers"]] == [dead.consumer]
        assert await backend.redis.get(lease) == dead.consumer

        heir = backend.make(partitions=4, lease_ttl=1.0)
        assert isinstance(heir, RedisStreamsBus)
        handled: list[int] = []

        async def record(entry: BusEntry) -> None:
            handled.append(entry.payload["seq"])

        for seq in range(5, 10):
            await heir.publish(key, {"seq": seq})
        await heir.start(record)
        assert partition not in heir.owned_partitions()  # the dead worker's lease has not expired yet
        assert handled == []
        assert await heir.wait_idle(timeout=15)
        assert handled == list(range(10))  # the reclaimed entries first, then the new ones
        assert await backend.redis.get(lease) == heir.consumer
        consumers = await backend.redis.xinfo_consumers(stream, heir.group)
        assert [c["name"] for c in consumers] == [heir.consumer]  # the dead consumer was dropped
        assert (await backend.redis.xpending(stream, heir.group))["pending"] == 0

    @REDIS_ONLY
    @pytest.mark.parametrize("how", ["stop", "crash"])
    async def test_a_batch_is_acknowledged_together_so_a_crash_hands_all_of_it_on(
        self, backend: Backend, how: str
    ) -> None:
        first = backend.make(partitions=1, lease_ttl=1.0)
        assert isinstance(first, RedisStreamsBus)
        stream = first.stream_key(0)
        stuck, never = asyncio.Event(), asyncio.Event()
        seen: list[int] = []

        async def third_hangs(entry: BusEntry) -> None:
            seen.append(entry.payload["seq"])
            if entry.payload["seq"] == 2:
                stuck.set()
                await never.wait()

        for seq in range(5):  # one batch: the first read takes all five
            await first.publish("conv-b", {"seq": seq})
        await first.start(third_hangs)
        await event(stuck, 5, "the third entry")
        assert seen == [0, 1, 2]
        if how == "stop":
            await first.stop(timeout=0.1)  # the two handled are acknowledged, the one in hand is not
            assert (await backend.redis.xpending(stream, first.group))["pending"] == 3
        else:
            await first.abort()  # a crash acknowledges nothing: the whole batch stays pending
            assert (await backend.redis.xpending(stream, first.group))["pending"] == 5

        heir = backend.make(partitions=1, lease_ttl=1.0)
        handled: list[int] = []

        async def record(entry: BusEntry) -> None:
            handled.append(entry.payload["seq"])

        await heir.start(record)
        assert await heir.wait_idle(timeout=15)
        # after a crash the handled ones come again, in order (the desk's handlers drop them: receipts)
        assert handled == ([2, 3, 4] if how == "stop" else [0, 1, 2, 3, 4])
        assert await backend.stored() == 0

    @REDIS_ONLY
    async def test_a_worker_that_lost_its_lease_takes_nothing_more(self, backend: Backend) -> None:
        bus = backend.make(partitions=1, lease_ttl=1.0)
        assert isinstance(bus, RedisStreamsBus)
        handled: list[BusEntry] = []

        async def record(entry: BusEntry) -> None:
            handled.append(entry)

        await bus.start(record)
        assert bus.owned_partitions() == {0}
        # Another worker got the lease (as after a long pause of this one): this one must stop reading.
        await backend.redis.set(bus.lease_key(0), "another-worker", px=5000)
        await bus.publish("conv-l", {"n": 1})
        await wait_until(
            lambda: not bus.owned_partitions(), within=5, what="the worker to give up partition 0"
        )
        assert handled == []
        assert (await backend.redis.xpending(bus.stream_key(0), bus.group))["pending"] == 0  # not even read
        assert await bus.pending() == 1
        assert await backend.redis.get(bus.lease_key(0)) == "another-worker"

    @REDIS_ONLY
    async def test_two_workers_split_the_partitions_and_handle_everything_once(
        self, backend: Backend
    ) -> None:
        one = backend.make(partitions=8, lease_ttl=1.0)
        two = backend.make(partitions=8, lease_ttl=1.0)
        assert isinstance(one, RedisStreamsBus) and isinstance(two, RedisStreamsBus)
        handled: dict[str, list[int]] = defaultdict(list)
        handled_by: dict[str, set[str]] = {"one": set(), "two": set()}
        in_hand: set[str] = set()
        overlaps: list[str] = []
        first_handled = asyncio.Event()

        def recorder(name: str) -> Callable[[BusEntry], Any]:
            async def record(entry: BusEntry) -> None:
                if entry.key in in_hand:
                    overlaps.append(entry.key)
                in_hand.add(entry.key)
                try:
                    await asyncio.sleep(0.005)  # a little work, so partitions change hands mid-flow
                    handled[entry.key].append(entry.payload["seq"])
                    handled_by[name].add(entry.key)
                    first_handled.set()
                finally:
                    in_hand.discard(entry.key)

            return record

        keys = [f"conv-{n}" for n in range(40)]

        async def publish_key(key: str) -> None:
            for seq in range(20):
                await one.publish(key, {"seq": seq})
                await asyncio.sleep(0.075)  # a steady flow for about 1.5 s

        await one.start(recorder("one"))
        publishing = asyncio.gather(*(publish_key(key) for key in keys))
        await event(first_handled, 5, "the first worker to handle an entry")
        await two.start(recorder("two"))  # joins while entries flow: half the partitions move over
        await publishing
        await wait_until(
            lambda: (
                len(one.owned_partitions()) == 4
                and len(two.owned_partitions()) == 4
                and not one.owned_partitions() & two.owned_partitions()
            ),
            within=10,
            what="the two workers to hold four partitions each",
        )
        assert await one.wait_idle(timeout=20)
        for key in keys:
            assert handled[key] == list(range(20)), key  # each entry exactly once, in order
        assert overlaps == []
        assert handled_by["one"] and handled_by["two"]
        assert handled_by["one"] & handled_by["two"]  # some keys were handed over mid-flow
        assert await one.pending() == 0 and await two.pending() == 0
        for partition in range(8):
            summary = await backend.redis.xpending(one.stream_key(partition), one.group)
            assert summary["pending"] == 0

    @REDIS_ONLY
    async def test_what_a_stream_of_an_earlier_version_holds_is_handled_first_in_order(
        self, backend: Backend
    ) -> None:
        # before the hash tags a partition's stream was `prefix:pN`: entries accepted before an upgrade
        bus = backend.make(partitions=4, lease_ttl=1.0)
        assert isinstance(bus, RedisStreamsBus)
        key = "conv-upgrade"
        legacy = bus.legacy_stream_key(partition_of(key, 4))
        for seq in range(3):
            await backend.redis.xadd(legacy, {"k": key, "d": json.dumps({"seq": seq})})
        for seq in range(3, 5):
            await bus.publish(key, {"seq": seq})
        handled: list[int] = []

        async def record(entry: BusEntry) -> None:
            handled.append(entry.payload["seq"])

        await bus.start(record)
        assert await bus.wait_idle(timeout=10)
        await wait_until(lambda: len(handled) == 5, within=10, what="every entry")
        assert handled == [0, 1, 2, 3, 4]
        assert not await backend.redis.exists(legacy)

    @backends(CLUSTER)
    async def test_on_a_cluster_a_partitions_keys_share_a_slot_and_partitions_spread_over_nodes(
        self, backend: Backend
    ) -> None:
        bus = backend.make(partitions=16)
        assert isinstance(bus, RedisStreamsBus)
        client = backend.redis
        assert isinstance(client, RedisCluster)
        await client.initialize()  # learn which node holds which slots
        for partition in range(16):
            assert client.keyslot(bus.stream_key(partition)) == client.keyslot(bus.lease_key(partition))
        nodes = {node_of(client, bus.stream_key(p)) for p in range(16)}
        assert len(nodes) == 3  # the three masters each hold some partitions
