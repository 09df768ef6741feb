"""/metrics carries the service figures (computed from the database at scrape time, cached 30 s), and
docker/grafana/dashboard.json only asks for metrics relaydesk exports."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bot_core.desk import Desk
from storage.db import close_db, init_db
from tests.bot_core.test_analytics import scripted_day
from tests.bot_core.test_scheduler import Clock
from tests.conftest import DeskFactory, MigratedDatabases
from tests.plugins.outreach.helpers import outreach_yaml

DASHBOARD = Path(__file__).parents[2] / "docker" / "grafana" / "dashboard.json"
OUTREACH_ENV = {"OUTREACH_TOKEN": "dashboard-test-token", "OUTREACH_LINKS": "dashboard-test-links"}


def _samples(desk: Desk) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = desk.metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_carry_the_figures_of_the_last_day(database_url: str, make_desk: DeskFactory) -> None:
    await init_db(database_url)
    try:
        await scripted_day()
    finally:
        await close_db()
    desk = await make_desk(database_url, scheduler_clock=Clock(datetime(2026, 12, 2, tzinfo=UTC)))
    await desk.refresh_gauges()
    got = _samples(desk)

    def value(name: str, **labels: str) -> float | None:
        return got.get((name, tuple(sorted(labels.items()))))

    assert value("relaydesk_service_conversations", team="all", window="24h") == 5
    assert value("relaydesk_service_conversations", team="billing", window="24h") == 2
    assert value("relaydesk_service_bot_resolved_ratio", team="all", window="24h") == 0.2
    assert value("relaydesk_service_first_response_seconds", team="all", window="24h", quantile="0.9") == 630
    assert value("relaydesk_service_csat", team="all", window="24h") == 3
    assert value("relaydesk_service_queue_wait_seconds_bucket", team="all", window="24h", le="300.0") == 1
    assert value("relaydesk_service_queue_wait_seconds_bucket", team="all", window="24h", le="+Inf") == 2
    assert value("relaydesk_service_queue_wait_seconds_sum", team="all", window="24h") == 780
    assert value("relaydesk_service_conversations_by_channel", channel="web", window="24h") == 2
    assert value("relaydesk_queue_length", team="support") == 0


def _exported_names(desk: Desk) -> set[str]:
    names: set[str] = set()
    for family in desk.metrics.registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


async def test_the_grafana_dashboard_asks_only_for_exported_metrics(
    sqlite_url: str, make_desk: DeskFactory, migrated: MigratedDatabases, tmp_path: Path
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    desk = await make_desk(sqlite_url)
    await desk.refresh_gauges()
    exported = _exported_names(desk)
    # the outreach plugin's figures, from a desk that runs it (on a database of its own)
    outreach = await make_desk(
        await migrated.sqlite(tmp_path / "outreach.db"), outreach_yaml(), environ=OUTREACH_ENV
    )
    await outreach.refresh_gauges()
    exported |= _exported_names(outreach)
    assert {"relaydesk_outreach_events", "relaydesk_outreach_campaign_customers"} <= exported
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 15
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert [t["refId"] for t in panel["targets"]] == [chr(65 + i) for i in range(len(panel["targets"]))]
    for expr in exprs:
        assert expr.count("(") == expr.count(")"), expr
        names = set(re.findall(r"\brelaydesk_[a-z_]+", expr))
        assert names, expr
        for name in names:
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in exported or base in exported, f"{name} in {expr!r} is not exported"
