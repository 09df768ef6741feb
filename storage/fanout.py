"""Fan-out: ephemeral messages that every worker process hears, for pushes to live connections.

A visitor's open connection (a web widget's WebSocket, say) lives in one worker process, while the
delivery meant for it may be sent by any worker. :class:`RedisFanout` carries such pushes to every
worker over Redis pub/sub; :class:`LocalFanout` is the same within one process. Nothing here is
stored: a push missed by a disconnected listener is found in the database when it reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

from redis.asyncio.client import PubSub

from storage.redis_client import connect

log = logging.getLogger("relaydesk.fanout")

FanoutCallback = Callable[[dict[str, Any]], None]
"""Called with each message published on a topic (on the event loop; it must not block)."""


class Fanout(Protocol):
    """Publish ephemeral messages on topics; every subscriber in every process gets them."""

    async def start(self) -> None:
        """Connect (before the first subscribe)."""
        ...

    async def stop(self) -> None:
        """Disconnect; subscriptions end."""
        ...

    async def publish(self, topic: str, message: dict[str, Any]) -> None:
        """Send ``message`` (a JSON object) to every subscriber of ``topic``, this process's included."""
        ...

    async def subscribe(self, topic: str, callback: FanoutCallback) -> Callable[[], None]:
        """Call ``callback`` with every message on ``topic`` from now on; returns the unsubscribe function."""
        ...


class _Topics:
    """Callbacks per topic, shared by both implementations."""

    def __init__(self) -> None:
        self.callbacks: dict[str, list[FanoutCallback]] = {}

    def add(self, topic: str, callback: FanoutCallback) -> bool:
        """Register ``callback``; True when it is the topic's first."""
        callbacks = self.callbacks.setdefault(topic, [])
        callbacks.append(callback)
        return len(callbacks) == 1

    def remove(self, topic: str, callback: FanoutCallback) -> bool:
        """Forget ``callback``; True when the topic has none left."""
        callbacks = self.callbacks.get(topic, [])
        if callback in callbacks:
            callbacks.remove(callback)
        if not callbacks:
            self.callbacks.pop(topic, None)
            return True
        return False

    def deliver(self, topic: str, message: dict[str, Any]) -> None:
        """Hand ``message`` to the topic's callbacks; one failing does not stop the others."""
        for callback in list(self.callbacks.get(topic, ())):
            try:
                callback(message)
            except Exception:
                log.exception("fan-out subscriber failed", extra={"topic": topic})


class LocalFanout:
    """:class:`Fanout` within one process: ``publish`` calls the subscribers directly."""

    def __init__(self) -> None:
        self._topics = _Topics()

    async def start(self) -> None:
        """Nothing to connect."""

    async def stop(self) -> None:
        """Forget every subscription."""
        self._topics.callbacks.clear()

    async def publish(self, topic: str, message: dict[str, Any]) -> None:
        """Call every subscriber of ``topic`` now."""
        self._topics.deliver(topic, message)

    async def subscribe(self, topic: str, callback: FanoutCallback) -> Callable[[], None]:
        """Register ``callback``; returns the unsubscribe function."""
        self._topics.add(topic, callback)

        def unsubscribe() -> None:
            self._topics.remove(topic, callback)

        return unsubscribe


class RedisFanout:
    """:class:`Fanout` over Redis pub/sub: channels ``{prefix}:fanout:{topic}``, JSON messages.

    One pub/sub connection per process reads every subscribed channel; publishing uses the regular
    connection pool. Messages published while a process is not subscribed are not kept (as with any
    pub/sub): listeners reload from the database when they (re)connect. On a Redis Cluster
    (``cluster=True``) a message published on any node reaches the subscribers on every node.
    """

    def __init__(self, url: str, prefix: str = "relaydesk", *, cluster: bool = False) -> None:
        self._client = connect(url, cluster=cluster)
        self._prefix = f"{prefix}:fanout:"
        self._topics = _Topics()
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._leaving: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Open the pub/sub connection and start reading it."""
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._reader = asyncio.create_task(self._read(), name="fanout-reader")

    async def stop(self) -> None:
        """Stop reading, close the connections."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self._pubsub is not None:
            await self._pubsub.aclose()
            self._pubsub = None
        self._topics.callbacks.clear()
        await self._client.aclose()

    async def publish(self, topic: str, message: dict[str, Any]) -> None:
        """PUBLISH ``message`` as JSON; every subscribed process (this one too) delivers it."""
        await self._client.publish(self._prefix + topic, json.dumps(message))

    async def subscribe(self, topic: str, callback: FanoutCallback) -> Callable[[], None]:
        """SUBSCRIBE to the topic's channel (once per process); returns the unsubscribe function."""
        if self._pubsub is None:
            raise RuntimeError("RedisFanout.subscribe before start()")
        if self._topics.add(topic, callback):
            await self._pubsub.subscribe(self._prefix + topic)
            self._subscribed.set()
        pubsub = self._pubsub

        async def leave() -> None:
            with contextlib.suppress(Exception):  # closing anyway, or the connection is gone
                await pubsub.unsubscribe(self._prefix + topic)

        def unsubscribe() -> None:
            if self._topics.remove(topic, callback) and self._pubsub is pubsub:
                self._leaving.add(task := asyncio.get_running_loop().create_task(leave()))
                task.add_done_callback(self._leaving.discard)

        return unsubscribe

    async def _read(self) -> None:
        assert self._pubsub is not None
        while True:
            await self._subscribed.wait()  # redis-py's listen() ends at once while nothing is subscribed
            try:
                async for item in self._pubsub.listen():
                    if item.get("type") != "message":
                        continue
                    topic = str(item["channel"]).removeprefix(self._prefix)
                    try:
                        message = json.loads(item["data"])
                    except ValueError:
                        log.warning("fan-out message is not JSON", extra={"topic": topic})
                        continue
                    self._topics.deliver(topic, message)
                if not self._topics.callbacks:
                    self._subscribed.clear()
                else:
                    await asyncio.sleep(0.1)  # a subscribe is on its way
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("fan-out connection lost; reconnecting", exc_info=True)
                await asyncio.sleep(1.0)
