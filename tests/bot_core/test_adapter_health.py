"""Adapters' receiving states shared between workers through the database: the worst live report counts,
a dead worker's reports stop counting once stale, and a worker that stops removes its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot_core.adapter_health import OWNER, SCOPE, AdapterHealth
from storage.db import close_db, init_db
from storage.models import PluginState
from tests.bot_core.test_receiving import YAML
from tests.conftest import DeskFactory


async def test_the_worst_live_report_counts_and_stale_or_stopped_ones_do_not(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, YAML)
    await desk.adapter_health.report()
    assert await desk.adapter_health.states() == {"pulling": "ok"}

    # another worker (its own reporter on the same database) cannot receive from "pulling", nor run "mail"
    other = AdapterHealth(lambda: {"pulling": "down", "mail": "degraded"}, worker="w2")
    await other.report()
    assert await desk.adapter_health.states() == {"mail": "degraded", "pulling": "down"}
    assert (await desk.adapter_health.workers())["pulling"] == {
        desk.adapter_health.worker: "ok",
        "w2": "down",
    }

    # w2 died a while ago: its last reports no longer count (and very old ones are deleted)
    await PluginState.filter(plugin=OWNER, scope=SCOPE, key__endswith="|w2").update(
        updated_at=datetime.now(UTC) - timedelta(minutes=5)
    )
    assert await desk.adapter_health.states() == {"pulling": "ok"}
    await PluginState.filter(plugin=OWNER, scope=SCOPE, key__endswith="|w2").update(
        updated_at=datetime.now(UTC) - timedelta(hours=2)
    )
    await desk.adapter_health.report()
    assert await PluginState.filter(plugin=OWNER, scope=SCOPE, key__endswith="|w2").count() == 0

    # a worker shut down is not an adapter down: stopping removes its reports
    await desk.stop()
    await init_db(sqlite_url)
    try:
        assert await PluginState.filter(plugin=OWNER, scope=SCOPE).count() == 0
    finally:
        await close_db()
