"""What maintenance commands of adapters may read from the desk's database, without running a desk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bot_core.config import DeskConfig
from storage.db import close_db, init_db
from storage.models import Room


@asynccontextmanager
async def desk_database(config: DeskConfig) -> AsyncIterator[None]:
    """The configured database opened for the duration of the block (it must be migrated already)."""
    await init_db(config.storage.database)
    try:
        yield
    finally:
        await close_db()


async def workspace_rooms(workspace: str) -> dict[str, int]:
    """The rooms stored for the workspace instance ``workspace``: room id → customer id."""
    rows = await Room.filter(workspace=workspace).values_list("external_id", "customer_id")
    return {str(room_id): int(customer_id) for room_id, customer_id in rows}
