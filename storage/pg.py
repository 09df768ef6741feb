"""The asyncpg connection relaydesk's PostgreSQL pool uses: every statement checks the task's fence.

See :mod:`storage.fence`. ``ROLLBACK`` and the pool's reset when a connection is released are never
stopped: undoing work is always allowed. Imported only for PostgreSQL URLs (:func:`storage.db.tortoise_config`).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from storage import fence


class FencedConnection(asyncpg.Connection):  # type: ignore[misc]
    """An asyncpg connection whose statements raise :class:`storage.fence.FenceLost` once the fence lapsed."""

    def _check(self, query: str) -> None:
        guard = fence.current()
        if guard is None or guard.released:  # most statements: not a bus handler's
            return
        if query.lstrip()[:8].upper().startswith("ROLLBACK") or query == self.get_reset_query():
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
