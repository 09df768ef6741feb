"""Redis clients for the bus, the fan-out and the rate limits: one Redis server, or a Redis Cluster.

``storage.redis`` is the URL of the server, or of any node of the cluster when ``storage.redis_cluster``
is on: redis-py's cluster client finds the other nodes from it and sends each command to the node that
holds its key's slot. Every operation relaydesk runs on several keys at once (the bus's scripts, which
check a partition's lease and read its stream in one step) uses keys with the same hash tag, so on a
cluster they live in one slot (see :mod:`storage.bus.redis_streams`).
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster

AnyRedis = Redis | RedisCluster
"""A client of one Redis server or of a Redis Cluster: both offer the commands relaydesk uses."""


def connect(url: str, *, cluster: bool = False, max_connections: int | None = None) -> AnyRedis:
    """A client (``decode_responses`` on) for ``url``: a cluster client when ``cluster`` is set.

    With ``max_connections``, a single server's pool blocks (up to 30 s) when every connection is in
    use instead of failing; a cluster client allows that many connections per node.
    """
    if cluster:
        if max_connections is None:
            return RedisCluster.from_url(url, decode_responses=True)
        return RedisCluster.from_url(url, decode_responses=True, max_connections=max_connections)
    if max_connections is None:
        return Redis.from_url(url, decode_responses=True)
    pool = BlockingConnectionPool.from_url(
        url, decode_responses=True, max_connections=max_connections, timeout=30
    )
    return Redis(connection_pool=pool)


def socket_timeout(client: AnyRedis) -> float | None:
    """The client's socket timeout in seconds (None: none), which a blocking read must stay under."""
    if isinstance(client, RedisCluster):
        kwargs = client.get_connection_kwargs()
    else:
        kwargs = client.connection_pool.connection_kwargs
    value = kwargs.get("socket_timeout", 5.0)
    return None if value is None else float(value)


__all__ = ["AnyRedis", "connect", "socket_timeout"]
