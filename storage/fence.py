"""Fencing: a bus handler stops touching the database once its partition may belong to another worker.

A worker that freezes (a paused VM, swapping, SIGSTOP) while handling an entry loses its lease on the
partition; another worker takes the partition over and handles the entry again, then the ones after it.
When the frozen worker wakes up, its handler would go on where it stopped, at the same time as the new
owner (two open conversations for one customer, a message mirrored after the ones that followed it).

So the Redis bus runs each handler under a :class:`Fence` that holds while the lease is certainly this
worker's (the lease's deadline, less a margin). Every statement a handler sends to PostgreSQL checks it
first (:class:`storage.pg.FencedConnection`; ``ROLLBACK`` excepted), and once it has lapsed the statement
raises :class:`FenceLost` instead: the handler's open transaction is rolled back, nothing more is
written, and the bus leaves the entry unacknowledged for the partition's new owner. An entry is handled
twice only as after a crash, never by two workers at the same time.

The fence lives in a context variable, so it covers the handler's task and the tasks it starts with
its context (:func:`carry` hands it to a task started in a fresh context); it stops applying once the
handler returned (:meth:`Fence.release`), so a task that outlives the handler is not stopped by it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

_current: contextvars.ContextVar[Fence | None] = contextvars.ContextVar("relaydesk_fence", default=None)


class FenceLost(Exception):
    """The lease this work runs under may belong to another worker now: stop, write nothing more."""


class Fence:
    """Holds while ``holds()`` says so, until released."""

    def __init__(self, holds: Callable[[], bool], what: str = "") -> None:
        """``holds``: whether the work may still write; ``what``: named in :class:`FenceLost`."""
        self._holds = holds
        self.what = what
        self.released = False

    def check(self) -> None:
        """Raise :class:`FenceLost` unless the fence still holds (or was released)."""
        if not self.released and not self._holds():
            raise FenceLost(f"the lease on {self.what or 'this work'} may have passed to another worker")

    def release(self) -> None:
        """The work is over: tasks it left behind are no longer fenced."""
        self.released = True


def current() -> Fence | None:
    """The fence the current task works under, if any."""
    return _current.get()


def check() -> None:
    """Raise :class:`FenceLost` if the current task works under a fence that no longer holds."""
    fence = _current.get()
    if fence is not None:
        fence.check()


@contextlib.contextmanager
def fenced(fence: Fence) -> Iterator[Fence]:
    """Run the block (and tasks started in it) under ``fence``; released when the block ends."""
    token = _current.set(fence)
    try:
        yield fence
    finally:
        fence.release()
        _current.reset(token)


def carry(context: contextvars.Context) -> contextvars.Context:
    """``context`` under the current task's fence too (for a task started in a fresh context)."""
    fence = _current.get()
    if fence is not None:
        context.run(_current.set, fence)
    return context


__all__ = ["Fence", "FenceLost", "carry", "check", "current", "fenced"]
