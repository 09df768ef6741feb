"""The asyncpg connection relaydesk's PostgreSQL pool uses: every statement checks the task's fence, and
a connection is reset on its way back to the pool only when it changed its session.

See :mod:`storage.fence`. ``ROLLBACK`` and the pool's reset when a connection is released are never
stopped: undoing work is always allowed. Imported only for PostgreSQL URLs (:func:`storage.db.tortoise_config`).

Why the reset is skipped: tortoise takes a pooled connection for every statement, and asyncpg's pool
resets each one it gets back (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``): one more
round trip per statement, 15 % of a relayed message's CPU in the bench. Almost no statement leaves any
session state behind; the few that may (an advisory lock, ``SET``, ``LISTEN``, a cursor or prepared
statement by name) mark the connection, and a marked connection gets the full reset. An open
transaction is rolled back by asyncpg either way.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg

from storage import fence

# statements that may leave state in the session beyond their transaction
_SESSION_STATE = re.compile(
    r"^\s*(SET|RESET|LISTEN|DECLARE|PREPARE)\s|advisory_lock|set_config", re.IGNORECASE
)


class FencedConnection(asyncpg.Connection):  # type: ignore[misc]
    """An asyncpg connection whose statements raise :class:`storage.fence.FenceLost` once the fence lapsed,
    reset by the pool only after a statement that may have changed its session."""

    _session_changed = False

    def get_reset_query(self) -> str:
        """The full reset after a statement that may have changed the session; otherwise none."""
        if not self._session_changed:
            return ""
        query: str = super().get_reset_query()
        return query

    async def reset(self, *, timeout: float | None = None) -> None:
        """:meth:`asyncpg.Connection.reset`; the session counts as clean again afterwards."""
        await super().reset(timeout=timeout)
        self._session_changed = False

    def _check(self, query: str) -> None:
        if not self._session_changed and _SESSION_STATE.search(query):
            self._session_changed = True
        guard = fence.current()
        if guard is None or guard.released:  # most statements: not a bus handler's
            return
        if query.lstrip()[:8].upper().startswith("ROLLBACK") or query == super().get_reset_query():
            return
        guard.check()

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        """:meth:`asyncpg.Connection.execute`, fenced."""
        self._check(query)
        return await super().execute(query, *args, timeout=timeout)

    async def executemany(self, command: str, args: Any, *, timeout: float | None = None) -> Any:
        """:meth:`asyncpg.Connection.executemany`, fenced."""
        self._check(command)
        return await super().executemany(command, args, timeout=timeout)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """:meth:`asyncpg.Connection.fetch`, fenced."""
        self._check(query)
        return await super().fetch(query, *args, **kwargs)

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """:meth:`asyncpg.Connection.fetchrow`, fenced."""
        self._check(query)
        return await super().fetchrow(query, *args, **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """:meth:`asyncpg.Connection.fetchval`, fenced."""
        self._check(query)
        return await super().fetchval(query, *args, **kwargs)


__all__ = ["FencedConnection"]
