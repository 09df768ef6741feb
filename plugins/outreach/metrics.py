"""Outreach figures on ``/metrics``, read from the stored records, so every worker exports the same values.

What is counted is what the plugin stores anyway: each triggered event's outcome (store scope ``events``,
key ``event:<id>``) and each campaign's add-once records per customer (scope ``campaign:<name>``:
``sent:``, ``skipped:``, ``replied:``, ``opted_out:``, ``clicked:``). A delivery that went out is looked
up in the outbox by its key (:func:`bot_core.api.deliveries`), so a failure reported by the channel
after the send counts as ``failed``. Nothing is counted in memory: a restart or a second worker changes
nothing, and dashboards aggregate with ``max`` across instances, never ``sum``.

The scrape awaits :meth:`OutreachMetrics.refresh` (through ``Plugin.refresh_metrics``), which reads at most
every ``ttl`` seconds per process; ``collect`` serves the last snapshot.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from prometheus_client.core import GaugeMetricFamily, Metric

from bot_core.api import StateStore, deliveries
from plugins.outreach.config import OutreachConfig
from plugins.outreach.planning import reason_code

CAMPAIGN_OUTCOMES = ("sent", "skipped", "failed", "replied", "opted_out", "clicked")
EVENT_STATUSES = ("scheduled", "deferred", "sent", "delivered", "read", "failed", "skipped")


@dataclass
class Snapshot:
    """The figures read at ``at``."""

    at: float
    events: Counter[tuple[str, str]] = field(default_factory=Counter)  # (type, status)
    event_skips: Counter[tuple[str, str]] = field(default_factory=Counter)  # (type, reason code)
    campaigns: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (campaign, variant, outcome)
    campaign_skips: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (..., reason code)


async def read_snapshot(plugin: str, config: OutreachConfig, window: timedelta, at: float) -> Snapshot:
    """Count the stored outcomes: triggered events changed within ``window``, every configured campaign."""
    snap = Snapshot(at)
    since = datetime.now(UTC) - window  # the records' own change time is the database's clock
    events = await StateStore(plugin, "events").items(changed_since=since)
    outcomes = [v for k, v in events.items() if k.startswith("event:") and isinstance(v, dict)]
    campaign_rows: list[tuple[str, str, dict[str, object]]] = []
    for campaign in config.campaigns:
        for key, value in (await StateStore(plugin, f"campaign:{campaign.name}").items()).items():
            if isinstance(value, dict):
                campaign_rows.append((campaign.name, key.split(":", 1)[0], value))
    keys = [str(v["delivery"]) for v in outcomes if isinstance(v.get("delivery"), str)]
    keys += [
        str(v["delivery"]) for _c, m, v in campaign_rows if m == "sent" and isinstance(v.get("delivery"), str)
    ]
    found = await deliveries(keys) if keys else {}

    def delivered(value: dict[str, object]) -> str | None:
        info = found.get(str(value.get("delivery")))
        return None if info is None else info.status

    for outcome in outcomes:
        kind, status = str(outcome.get("type", "")), str(outcome.get("status", ""))
        if status == "sent":
            reported = delivered(outcome)
            status = reported if reported in EVENT_STATUSES else "sent"
        snap.events[(kind, status)] += 1
        if status == "skipped":
            code = str(outcome.get("code") or reason_code(str(outcome.get("reason", ""))))
            snap.event_skips[(kind, code)] += 1
    for name, metric, value in campaign_rows:
        variant = str(value.get("variant") or "main")
        if metric in CAMPAIGN_OUTCOMES:
            snap.campaigns[(name, variant, metric)] += 1
        if metric == "sent" and delivered(value) == "failed":
            snap.campaigns[(name, variant, "failed")] += 1
        if metric == "skipped":
            code = str(value.get("code") or reason_code(str(value.get("reason", ""))))
            snap.campaign_skips[(name, variant, code)] += 1
    return snap


class OutreachMetrics:
    """A Prometheus collector of the outreach figures (see the module's docstring)."""

    def __init__(
        self,
        plugin: str,
        config: OutreachConfig,
        *,
        ttl: float = 30.0,
        window: timedelta = timedelta(hours=24),
    ) -> None:
        self.plugin = plugin
        self.config = config
        self.ttl = ttl
        self.window = window
        self._snapshot: Snapshot | None = None
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Read the records again if the snapshot is older than ``ttl``."""
        now = asyncio.get_running_loop().time()
        async with self._lock:
            if self._snapshot is not None and now - self._snapshot.at < self.ttl:
                return
            self._snapshot = await read_snapshot(self.plugin, self.config, self.window, now)

    def describe(self) -> list[Metric]:
        """The metric names, without reading anything."""
        return list(self._families(None))

    def collect(self) -> Iterable[Metric]:
        """The last snapshot's figures."""
        return self._families(self._snapshot)

    def _families(self, snap: Snapshot | None) -> Iterable[Metric]:
        window = f"{int(self.window.total_seconds() // 3600)}h"
        events = GaugeMetricFamily(
            "relaydesk_outreach_events",
            "Triggered outreach events by what became of them (scheduled, deferred, sent, delivered, read, "
            "failed, skipped), among those recorded or changed in the window",
            labels=["type", "status", "window"],
        )
        event_skips = GaugeMetricFamily(
            "relaydesk_outreach_events_skipped",
            "Triggered outreach events not sent, by reason (opted_out, unknown_customer, ...), in the window",
            labels=["type", "reason", "window"],
        )
        campaigns = GaugeMetricFamily(
            "relaydesk_outreach_campaign_customers",
            "Customers of a campaign per variant and outcome (sent, skipped, failed, replied, opted_out, "
            "clicked), since the campaign began",
            labels=["campaign", "variant", "outcome"],
        )
        campaign_skips = GaugeMetricFamily(
            "relaydesk_outreach_campaign_skipped",
            "Customers a campaign skipped, per variant and reason (no_consent, frequency_cap, ...)",
            labels=["campaign", "variant", "reason"],
        )
        if snap is not None:
            for (kind, status), n in sorted(snap.events.items()):
                events.add_metric([kind, status, window], n)
            for (kind, code), n in sorted(snap.event_skips.items()):
                event_skips.add_metric([kind, code, window], n)
            for campaign in self.config.campaigns:  # every arm shows, zeros included
                for arm in campaign.arms:
                    for outcome in CAMPAIGN_OUTCOMES:
                        n = snap.campaigns.get((campaign.name, arm.name, outcome), 0)
                        campaigns.add_metric([campaign.name, arm.name, outcome], n)
            for (campaign_name, variant, code), n in sorted(snap.campaign_skips.items()):
                campaign_skips.add_metric([campaign_name, variant, code], n)
        yield from (events, event_skips, campaigns, campaign_skips)
