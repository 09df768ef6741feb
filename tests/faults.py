"""A fault proxy for tests: a TCP proxy on loopback in front of a real server, which the test takes down
and brings back when it decides.

Point the code under test at :attr:`FaultProxy.url` instead of the server. While it is up, bytes pass
both ways untouched. :meth:`FaultProxy.down` cuts every open connection and, until :meth:`FaultProxy.up`,
either answers each HTTP request ``502 Bad Gateway`` (``mode="502"``, what a load balancer in front of
a dead backend says) or closes each new connection at once (``mode="refuse"``, what a crashed server
looks like to a client that still reaches the host). Every request refused is recorded
(:attr:`FaultProxy.refused`), so a test can wait for the retries it expects instead of sleeping::

    proxy = FaultProxy("127.0.0.1", 8008)
    await proxy.start()
    proxy.down("502")
    ...  # the code under test keeps failing
    await proxy.wait_refused(lambda refused: len(refused) >= 8)
    proxy.up()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["502", "refuse"]

BAD_GATEWAY = (
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n"
    b"Connection: close\r\n\r\nBad Gateway"
)


@dataclass(frozen=True)
class Refused:
    """One request (or connection) the proxy refused while down."""

    request_line: str  # "PUT /_matrix/client/v3/rooms/... HTTP/1.1" ("" for a refused connection)
    at: float = field(default_factory=time.monotonic)


class FaultProxy:
    """A TCP proxy to ``upstream_host:upstream_port`` that the test can take down and bring back."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode: Mode | None = None  # None: up
        self.refused: list[Refused] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Condition()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: where the code under test should connect."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._server is not None:
            self._server.close()
        self._cut()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def down(self, mode: Mode = "502") -> None:
        """The server is unreachable from now on: open connections are cut, new requests fail."""
        self.mode = mode
        self._cut()

    def up(self) -> None:
        """The server is reachable again."""
        self.mode = None

    async def wait_refused(self, predicate: Callable[[list[Refused]], bool], timeout: float = 20.0) -> None:
        """Wait until ``predicate(self.refused)`` holds (checked at every refusal)."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self.refused)), timeout)
            except TimeoutError:
                lines = [r.request_line for r in self.refused]
                raise TimeoutError(f"refusals not as expected in {timeout}s: {lines}") from None

    # -- connections --------------------------------------------------------------------------------

    def _cut(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _record(self, request_line: str) -> None:
        self.refused.append(Refused(request_line))
        async with self._changed:
            self._changed.notify_all()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.mode is not None:
                await self._refuse(reader, writer)
                return
            await self._pipe(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.mode == "refuse":
                await self._record("")
                return
            with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                head = await reader.readuntil(b"\r\n\r\n")
                await self._record(head.split(b"\r\n", 1)[0].decode("latin-1"))
                writer.write(BAD_GATEWAY)
                await writer.drain()
        finally:
            writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._open.update((writer, up_writer))

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
            if self.mode is not None:
                dst.transport.abort()
            else:
                _close(dst)

        try:
            await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._open.discard(w)
                w.transport.abort()


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        if writer.can_write_eof():
            writer.write_eof()
