"""The Redis Streams event bus: ordered per key across several worker processes.

Layout in Redis, for a ``prefix`` (``relaydesk`` by default) and partition ``n``:

* ``{prefix:pn}:stream``: one stream per partition; each entry holds the key (``k``) and the JSON
  payload (``d``). Acknowledged entries are deleted, so a stream holds only unacknowledged ones.
* ``prefix:workers``: the name of the consumer group on every partition stream (not a key).
* ``{prefix:pn}:lease``: the lease on partition ``n``, holding the name of the worker that owns it.
  Only the lease holder reads a partition, so entries of one key are never handled by two
  workers at once and never overtake each other. Reads and claims are Lua scripts that check the
  lease first, so a worker that lost its lease (a long pause, a network split) cannot take entries.
* ``prefix:members``: a sorted set of live workers (heartbeats); each worker holds at most
  ``ceil(partitions / live workers)`` leases and releases the extras, so partitions spread evenly.

A partition's stream and lease share the hash tag ``{prefix:pn}``, so on a Redis Cluster they are in
one slot and the scripts that touch both run there; every other command touches one key, and
different partitions spread over the cluster's nodes. (A ``prefix`` holding braces would put its own
hash tag first: every key in one slot, which still works, on one node.)

Versions before the hash tags kept partition ``n``'s stream at ``prefix:pn``: a worker taking a
partition first handles whatever such an old stream still holds, in order, then deletes it.

A worker that takes a partition first claims the entries still pending for the group there (left by
a dead worker, or by one that gave the partition up between two entries) and handles them in id
order, then reads new entries. Claiming with a minimum idle time of zero is safe because the lease
guarantees the previous owner no longer reads or handles that partition.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import secrets
import socket
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import RedisError, ResponseError

from storage.bus.base import BusEntry, BusHandler, DeadLetterHandler, EventBus, partition_of
from storage.bus.memory import RetryPolicy, cancel_and_wait, deliver_with_retries, finish_tasks, wait_event
from storage.fence import Fence, fenced
from storage.redis_client import AnyRedis, connect, socket_timeout

log = logging.getLogger(__name__)

# Every script touches one partition's keys only (one hash tag: one slot on a Redis Cluster).

# KEYS: lease key. ARGV: owner, ttl (ms). Returns 1 when the lease is (now) the owner's, else 0.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease key. ARGV: owner, ttl (ms). Returns 1 (renewed) or 0 (lost).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease key. ARGV: owner.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: stream. ARGV: group, entry ids. Acknowledges and deletes the entries in one step.
_ACK = """
local ids = {unpack(ARGV, 2)}
redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
return redis.call('XDEL', KEYS[1], unpack(ids))
"""

# KEYS: members zset. ARGV: worker, heartbeat ttl (ms). Returns the number of live workers.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 3)
return redis.call('ZCARD', KEYS[1])
"""

# KEYS: lease key, stream. ARGV: consumer, group, count.
# Returns -1 (lease not held), {1, entries} or {0, id of the stream's last entry} when nothing is new.
_READ = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local got = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[1], 'COUNT', ARGV[3], 'STREAMS', KEYS[2], '>')
if got then return {1, got[1][2]} end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if last[1] then return {0, last[1][1]} end
return {0, '0-0'}
"""

# KEYS: lease key, stream. ARGV: consumer, group, cursor, count. Returns -1 or XAUTOCLAIM's reply.
_CLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
return redis.call('XAUTOCLAIM', KEYS[2], ARGV[2], ARGV[1], 0, ARGV[3], 'COUNT', ARGV[4])
"""

_LEASE_LOST = -1
_IDLE_BLOCK = 2.0  # at most this many seconds per XREAD waiting for new entries (cancelled when needed)
_ERROR_PAUSE = 1.0  # seconds between retries after a Redis error
_PUBLISHING = 48  # publishes in flight at once per bus (the others wait for a connection)


def _s(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _fields(raw: Any) -> dict[str, str]:
    """A stream entry's fields from a flat ``[field, value, ...]`` reply (or a dict)."""
    if isinstance(raw, dict):
        return {_s(k): _s(v) for k, v in raw.items()}
    items = list(raw)
    return {_s(items[i]): _s(items[i + 1]) for i in range(0, len(items) - 1, 2)}


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("bus task %s failed", task.get_name(), exc_info=task.exception())


class _Lease:
    """This worker's hold on one partition, and the task consuming it."""

    def __init__(self, partition: int, deadline: float) -> None:
        self.partition = partition
        self.deadline = deadline  # event-loop time until which the lease is certainly ours
        self.leaving = asyncio.Event()  # set: finish the entry in hand, then give the partition up
        self.idle = False  # waiting for new entries: safe to cancel
        self.busy = False  # a handler is running
        self.task: asyncio.Task[None] | None = None

    def usable(self) -> bool:
        return not self.leaving.is_set() and asyncio.get_running_loop().time() < self.deadline

    def leave(self) -> None:
        self.leaving.set()
        if self.idle and self.task is not None:
            self.task.cancel()


class RedisStreamsBus(EventBus):
    """The :class:`EventBus` on Redis Streams, for several worker processes (see the module doc).

    ``lease_ttl`` (s) is how long a partition stays owned by a worker that stopped renewing: the
    time before a crashed worker's partitions are taken over. Leases and heartbeats are renewed every
    ``lease_ttl / 3`` s. Every process must use the same ``prefix`` and ``partitions``.

    Retries and dead-lettering work as in :class:`storage.bus.memory.MemoryBus` (``max_attempts``,
    ``retry_backoff``, ``max_backoff``); the attempt count restarts at 1 when another worker takes a
    partition over. ``batch_size`` entries are read at a time. A bus that only publishes needs no
    ``start``. Entry ids are ``p{partition}:{stream id}``.

    Each owned partition keeps one connection blocked in XREAD while idle, so a client passed in
    must allow ``partitions`` + a few connections. Handlers must not block the event loop for
    longer than ``lease_ttl`` (the leases would lapse and another worker would take over).

    ``cluster=True`` connects to ``url`` as a Redis Cluster (any node's URL); ``client`` may be a
    ``redis.asyncio.cluster.RedisCluster`` too.
    """

    def __init__(
        self,
        url: str | None = None,
        prefix: str = "relaydesk",
        partitions: int = 16,
        *,
        client: AnyRedis | None = None,
        cluster: bool = False,
        lease_ttl: float = 10.0,
        max_attempts: int = 5,
        retry_backoff: float = 0.05,
        max_backoff: float = 2.0,
        batch_size: int = 10,
        consumer_name: str | None = None,
    ) -> None:
        """Connect to ``url`` (a ``redis://`` URL; ``cluster``: of a cluster node), or use ``client``
        (then the caller closes it)."""
        if (url is None) == (client is None):
            raise ValueError("give exactly one of url and client")
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        if lease_ttl <= 0:
            raise ValueError("lease_ttl must be positive")
        if client is None:
            assert url is not None
            # Each owned partition keeps a connection in a blocking read, and a burst of publishes must
            # wait for a free connection rather than fail: a blocking pool on one server; on a cluster
            # (whose pools raise when full) at most _PUBLISHING publishes at a time.
            client = connect(url, cluster=cluster, max_connections=partitions + _PUBLISHING + 8)
            self._owns_client = True
        else:
            self._owns_client = False
        self._client: AnyRedis = client
        self._publishing = asyncio.Semaphore(_PUBLISHING)
        self.prefix = prefix
        self.partitions = partitions
        self.lease_ttl = lease_ttl
        self.policy = RetryPolicy(max_attempts=max_attempts, backoff=retry_backoff, max_backoff=max_backoff)
        self.batch_size = batch_size
        self.consumer = consumer_name or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.group = f"{prefix}:workers"
        self._members_key = f"{prefix}:members"
        self._ttl_ms = max(1, int(lease_ttl * 1000))
        # a handler stops writing this long before the lease's deadline (the time a statement takes to land)
        self._fence_margin = lease_ttl / 10
        # A blocking XREAD must return before the client's socket timeout (redis-py's default is 5 s).
        timeout = socket_timeout(client)
        idle_block = _IDLE_BLOCK if timeout is None else min(_IDLE_BLOCK, timeout / 2)
        self._idle_block_ms = max(1, int(idle_block * 1000))
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._read = client.register_script(_READ)
        self._claim = client.register_script(_CLAIM)
        self._ack_script = client.register_script(_ACK)
        # Each worker tries partitions from its own offset, so workers starting together collide less.
        offset = random.randrange(partitions)
        self._order = [(offset + i) % partitions for i in range(partitions)]
        self._leases: dict[int, _Lease] = {}
        self._handler: BusHandler | None = None
        self._on_dead_letter: DeadLetterHandler | None = None
        self._control_task: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = False
        self._aborted = False
        self._closed = False
        self._progress = asyncio.Event()  # set on every acknowledgement by this worker

    @classmethod
    def from_client(
        cls, client: AnyRedis, prefix: str = "relaydesk", partitions: int = 16, **options: Any
    ) -> RedisStreamsBus:
        """A bus on an existing ``redis.asyncio`` client, of one server or of a cluster (which the
        caller keeps and closes)."""
        return cls(prefix=prefix, partitions=partitions, client=client, **options)

    def hash_tag(self, partition: int) -> str:
        """The hash tag of one partition's keys (``{prefix:pN}``): one slot on a Redis Cluster."""
        return "{" + f"{self.prefix}:p{partition}" + "}"

    def stream_key(self, partition: int) -> str:
        """The Redis key of one partition's stream."""
        return f"{self.hash_tag(partition)}:stream"

    def lease_key(self, partition: int) -> str:
        """The Redis key of one partition's lease."""
        return f"{self.hash_tag(partition)}:lease"

    def legacy_stream_key(self, partition: int) -> str:
        """Where versions before the hash tags kept one partition's stream (drained, then deleted)."""
        return f"{self.prefix}:p{partition}"

    def keys(self) -> list[str]:
        """Every Redis key this bus uses (for tools and tests; the consumer group is inside the streams)."""
        keys = [self._members_key]
        for partition in range(self.partitions):
            keys += [self.stream_key(partition), self.lease_key(partition)]
        return keys

    def owned_partitions(self) -> frozenset[int]:
        """The partitions this worker currently holds (and is not giving up)."""
        return frozenset(p for p, lease in self._leases.items() if not lease.leaving.is_set())

    async def publish(self, key: str, payload: dict[str, Any]) -> str:
        """Append the entry to its partition's stream; returns ``p{partition}:{stream id}``."""
        if self._closed:
            raise RuntimeError("the bus is stopped (its Redis client is closed)")
        partition = partition_of(key, self.partitions)
        data = json.dumps(payload, separators=(",", ":"))
        async with self._publishing:
            stream_id = await self._client.xadd(self.stream_key(partition), {"k": key, "d": data})
        return f"p{partition}:{_s(stream_id)}"

    async def start(self, handler: BusHandler, on_dead_letter: DeadLetterHandler | None = None) -> None:
        """Create the consumer groups, join the workers, take a fair share of partitions and consume them."""
        if self._started:
            raise RuntimeError("RedisStreamsBus.start() may be called once")
        self._started = True
        self._handler = handler
        self._on_dead_letter = on_dead_letter
        await self._ensure_groups(range(self.partitions))
        await self._tick()
        self._control_task = asyncio.create_task(self._control(), name=f"redis-bus-control-{self.consumer}")

    async def stop(self, timeout: float = 30.0) -> None:
        """Leave the workers, finish the entries in hand (up to ``timeout`` s), release the leases.

        Entries read but not handled stay pending in the group; whoever takes the partition next
        handles them first. Leases stay renewed while handlers finish.
        """
        if self._stopping:
            return
        self._stopping = True
        if self._started:
            try:
                await self._client.zrem(self._members_key, self.consumer)
            except (RedisError, OSError) as exc:
                log.warning("could not leave the bus workers set: %r", exc)
            consumers = [lease.task for lease in self._leases.values() if lease.task is not None]
            for lease in list(self._leases.values()):
                lease.leave()
            await finish_tasks(consumers, timeout)
            if self._control_task is not None:
                await cancel_and_wait([self._control_task], [self._control_task])
        await self._close()

    async def abort(self) -> None:
        """Cancel everything at once as if the process died: no acknowledgement, no lease released.

        The partitions are taken over by other workers once the leases expire (``lease_ttl``).
        """
        self._aborted = True
        self._stopping = True
        for lease in self._leases.values():
            lease.leaving.set()  # no new entry is started, even if a cancellation gets lost
        tasks = [lease.task for lease in self._leases.values() if lease.task is not None]
        if self._control_task is not None:
            tasks.append(self._control_task)
        await cancel_and_wait(tasks, tasks)
        await self._close()

    async def pending(self) -> int:
        """Unacknowledged entries in every partition (pending or not yet delivered), for all workers."""
        async with self._client.pipeline(transaction=False) as pipe:
            for partition in range(self.partitions):
                pipe.xlen(self.stream_key(partition))
            lengths = await pipe.execute()
        return sum(int(n) for n in lengths)

    async def wait_idle(self, timeout: float = 30.0, poll: float = 0.05) -> bool:
        """Wait until every partition's stream is empty; False if ``timeout`` s passed first.

        Acknowledgements by this worker wake the check at once; other workers' are seen within
        ``poll`` s.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._progress.clear()
            if await self.pending() == 0:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await wait_event(self._progress, min(poll, remaining))

    async def _close(self) -> None:
        if self._owns_client and not self._closed:
            self._closed = True
            await self._client.aclose()

    async def _ensure_groups(self, partitions: range | list[int]) -> None:
        """Create the consumer group (from the stream's start) on each partition stream that lacks it."""
        async with self._client.pipeline(transaction=False) as pipe:
            for partition in partitions:
                pipe.xgroup_create(self.stream_key(partition), self.group, id="0", mkstream=True)
            results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, Exception) and "BUSYGROUP" not in str(result):
                raise result

    # -- leases ---------------------------------------------------------------------------------------

    async def _control(self) -> None:
        """Every ``lease_ttl / 3`` s: heartbeat, renew the leases, rebalance partitions across workers."""
        interval = self.lease_ttl / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self._tick()
            except Exception:  # keep renewing whatever happens: a dead loop would lose every lease
                log.exception("bus lease upkeep failed")

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            live = 1
            if not self._stopping:
                live = int(
                    await self._heartbeat(keys=[self._members_key], args=[self.consumer, self._ttl_ms])
                )
            held = list(self._leases.values())
            if held:
                sent = loop.time()
                kept = await self._each_lease(self._renew, [lease.partition for lease in held])
                for lease, ok in zip(held, kept, strict=True):
                    if ok:
                        lease.deadline = sent + self.lease_ttl
                    elif not lease.leaving.is_set():
                        log.warning("lost the lease on partition %d of %s", lease.partition, self.prefix)
                        lease.leave()
            if not self._stopping:
                await self._rebalance(max(live, 1))
        except (RedisError, OSError) as exc:
            log.warning("bus lease upkeep failed: %r", exc)
        now = loop.time()
        for lease in list(self._leases.values()):
            if now >= lease.deadline and not lease.leaving.is_set():
                log.warning("the lease on partition %d of %s expired unrenewed", lease.partition, self.prefix)
                lease.leave()

    async def _rebalance(self, live: int) -> None:
        """Give up leases above the fair share, or take free partitions up to it."""
        quota = math.ceil(self.partitions / live)
        active = [lease for lease in self._leases.values() if not lease.leaving.is_set()]
        if len(active) > quota:
            active.sort(key=lambda lease: lease.busy)  # idle ones first: they leave at once
            for lease in active[: len(active) - quota]:
                lease.leave()
            return
        candidates = [p for p in self._order if p not in self._leases]
        if len(active) == quota or not candidates:
            return
        sent = asyncio.get_running_loop().time()
        taken = await self._each_lease(self._acquire, candidates)
        wanted = quota - len(active)
        for partition, ok in zip(candidates, taken, strict=True):
            if not ok:
                continue
            if wanted == 0 or self._stopping or partition in self._leases:  # more than our share
                await self._release(keys=[self.lease_key(partition)], args=[self.consumer])
                continue
            wanted -= 1
            lease = _Lease(partition, sent + self.lease_ttl)
            self._leases[partition] = lease
            lease.task = asyncio.create_task(self._consume(lease), name=f"redis-bus-p{partition}")
            lease.task.add_done_callback(_log_failure)

    async def _each_lease(self, script: AsyncScript, partitions: list[int]) -> list[bool]:
        """Run a lease script (acquire or renew) on each partition's lease, all at once: one call per
        lease, since each is in a slot of its own on a cluster. True where the lease is ours."""
        replies = await asyncio.gather(
            *(script(keys=[self.lease_key(p)], args=[self.consumer, self._ttl_ms]) for p in partitions)
        )
        return [bool(int(reply)) for reply in replies]

    # -- consuming ------------------------------------------------------------------------------------

    async def _consume(self, lease: _Lease) -> None:
        """Own one partition: reclaim what is pending there, then read new entries, until leaving."""
        lease_key = self.lease_key(lease.partition)
        try:
            while lease.usable():
                try:
                    if await self._drain_legacy(lease) and await self._reclaim(lease):
                        await self._read_new(lease)
                except (RedisError, OSError) as exc:
                    # Start over from the reclaim step: entries read just before the error are pending.
                    log.warning("bus partition %d of %s: %r", lease.partition, self.prefix, exc)
                    if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                        await self._ensure_groups([lease.partition])
                    await wait_event(lease.leaving, _ERROR_PAUSE)
        finally:
            if self._leases.get(lease.partition) is lease:
                del self._leases[lease.partition]
            if not self._aborted:
                try:
                    await self._release(keys=[lease_key], args=[self.consumer])
                except (RedisError, OSError) as exc:
                    log.warning("could not release the lease on partition %d: %r", lease.partition, exc)

    async def _drain_legacy(self, lease: _Lease) -> bool:
        """Handle, in order, what the partition's stream of a version before the hash tags still holds,
        then delete it (all of it is older than anything in the current stream); False if leaving."""
        legacy = self.legacy_stream_key(lease.partition)
        if _s(await self._client.type(legacy)) != "stream":
            return True
        while lease.usable():
            entries = await self._client.xrange(legacy, count=self.batch_size)
            if not entries:
                await self._client.delete(legacy)
                log.info("bus partition %d: the stream of an earlier version is drained", lease.partition)
                return True
            log.info(
                "bus partition %d: handling %d entries of an earlier version", lease.partition, len(entries)
            )
            if not await self._handle(lease, entries, legacy):
                return False
        return False

    async def _reclaim(self, lease: _Lease) -> bool:
        """Claim and handle, in id order, every entry pending in the partition; False if leaving."""
        stream = self.stream_key(lease.partition)
        cursor = "0-0"
        while True:
            if not lease.usable():
                return False
            reply = await self._claim(
                keys=[self.lease_key(lease.partition), stream],
                args=[self.consumer, self.group, cursor, self.batch_size],
            )
            if reply == _LEASE_LOST:
                lease.leave()
                return False
            cursor = _s(reply[0])
            entries = reply[1]
            if entries:
                log.info("bus partition %d: handling %d entries left pending", lease.partition, len(entries))
                if not await self._handle(lease, entries):
                    return False
            if cursor == "0-0":
                break
        await self._drop_idle_consumers(stream)
        return True

    async def _read_new(self, lease: _Lease) -> None:
        """Read and handle new entries; between them, wait on a plain XREAD that claims nothing."""
        stream = self.stream_key(lease.partition)
        keys = [self.lease_key(lease.partition), stream]
        args: list[str | int] = [self.consumer, self.group, self.batch_size]
        while lease.usable():
            reply = await self._read(keys=keys, args=args)
            if reply == _LEASE_LOST:
                lease.leave()
                return
            if int(reply[0]) == 1:
                if not await self._handle(lease, reply[1]):
                    return
                continue
            lease.idle = True
            try:
                if lease.leaving.is_set():
                    return
                await self._client.xread({stream: _s(reply[1])}, count=1, block=self._idle_block_ms)
            finally:
                lease.idle = False

    async def _handle(self, lease: _Lease, entries: list[Any], stream: str | None = None) -> bool:
        """Handle entries (of the partition's stream, or of ``stream``) one by one, then acknowledge the
        ones handled together; False if the partition must be left.

        One acknowledgement per batch instead of per entry (a Redis round trip and a script less per
        entry under load): a crash before it leaves the batch's handled entries pending, to be handled
        again by whoever takes the partition, as an entry interrupted mid-handling always was (the
        handlers drop what they handled before: receipts, idempotency keys).
        """
        stream = stream or self.stream_key(lease.partition)
        handled: list[str] = []
        try:
            return await self._handle_each(lease, entries, stream, handled)
        finally:
            if handled and not self._aborted:  # (an abort acknowledges nothing, as a crash would not)
                await self._ack(stream, handled)

    async def _handle_each(self, lease: _Lease, entries: list[Any], stream: str, handled: list[str]) -> bool:
        """:meth:`_handle`'s loop: each entry handled (or dropped as unreadable) is added to ``handled``."""
        assert self._handler is not None
        loop = asyncio.get_running_loop()
        for raw_id, raw_fields in entries:
            if not lease.usable():
                return False
            stream_id = _s(raw_id)
            if raw_fields is None:  # deleted while pending (Redis 6.2 reports these)
                handled.append(stream_id)
                continue
            fields = _fields(raw_fields)
            try:
                key = fields["k"]
                payload = json.loads(fields["d"])
            except (KeyError, ValueError):
                log.error("dropping malformed bus entry %s in %s: %r", stream_id, stream, fields)
                handled.append(stream_id)
                continue
            entry = BusEntry(id=f"p{lease.partition}:{stream_id}", key=key, payload=payload)
            # the handler's database statements stop once the lease may be another worker's (storage.fence)
            guard = Fence(
                lambda: loop.time() < lease.deadline - self._fence_margin, f"partition {lease.partition}"
            )
            lease.busy = True
            try:
                with fenced(guard):
                    done = await deliver_with_retries(
                        entry, self._handler, self._on_dead_letter, self.policy, lease.leaving
                    )
            finally:
                lease.busy = False
            if not done:
                if loop.time() >= lease.deadline - self._fence_margin:
                    log.warning(
                        "bus partition %d: the lease lapsed during an entry; leaving it", lease.partition
                    )
                    lease.leave()
                return False
            handled.append(stream_id)
        return True

    async def _ack(self, stream: str, stream_ids: list[str]) -> None:
        await self._ack_script(keys=[stream], args=[self.group, *stream_ids])
        self._progress.set()

    async def _drop_idle_consumers(self, stream: str) -> None:
        """Delete the group's other consumers on this stream once they hold nothing (dead or moved on).

        Safe while we hold the lease: no one else can take entries of this stream meanwhile.
        """
        for info in await self._client.xinfo_consumers(stream, self.group):
            name = _s(info["name"])
            if name != self.consumer and int(info["pending"]) == 0:
                await self._client.xgroup_delconsumer(stream, self.group, name)
