"""The supervisor plugin: threshold alerts and a daily digest in each watched team's ops room.

``alerts`` runs every minute (a periodic job: one worker per slot): for each watched team it reads the
present (:func:`bot_core.api.live_figures`; the adapters' receiving states as every live worker reports
them) and posts an alert when a
threshold is reached and a word when it is cleared. Each alert's state is kept in the plugin's store
(scope ``alerts``, key ``<team>:<alert>``: whether it is on, and how often it turned on), and every post
is keyed by that count, so a restart, a retried job or a second worker never posts twice.

``digest`` runs every quarter of an hour: a team whose local time has passed ``digest.at`` and whose
digest for yesterday (its local calendar day) is not yet posted gets it, with the chart, once (store
scope ``digest``, key ``<team>``: the last day posted; the outbox key ``digest:<team>:<day>``). A day
across a daylight-saving change has 23 or 25 hours; the post comes at the same local time.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from bot_core.api import (
    Context,
    Plugin,
    ScheduledFire,
    day_bounds,
    live_figures,
    on_schedule,
    service_report,
)
from plugins.supervisor.alerts import checks, with_links
from plugins.supervisor.config import SupervisorConfig
from plugins.supervisor.digest import chart_png, digest_text

ALERTS_EVERY = 60.0
"""Seconds between two alert checks."""


class SupervisorPlugin(Plugin[SupervisorConfig]):
    """Alerts when a team's queue, waits or deliveries cross their thresholds; a daily digest with a chart."""

    name = "supervisor"

    def _teams(self) -> list[tuple[str | None, ZoneInfo]]:
        if not self.config.teams:
            return [(None, ZoneInfo("UTC"))]
        return [(name, ZoneInfo(team.timezone)) for name, team in self.config.teams.items()]

    # -- alerts --------------------------------------------------------------------------------

    @on_schedule("alerts", every=ALERTS_EVERY)
    async def check_alerts(self, ctx: Context, fire: ScheduledFire) -> None:
        """Post every alert that turned on or off since the last check."""
        await self.alerts_now(self.services.now())

    async def alerts_now(self, now: datetime) -> int:
        """Check every watched team at ``now``; the number of posts made."""
        settings = self.config.alerts
        store = self.services.store("alerts")
        adapters = await self.services.adapter_states()  # every live worker's, not only this one's
        posted = 0
        for team, _zone in self._teams():
            live = await live_figures(
                team, now=now, first_response_target=timedelta(seconds=settings.first_response_target)
            )
            for check in checks(team, live, adapters, settings):
                key = f"{team or '*'}:{check.name}"
                state = await store.get(key) or {"on": False, "count": 0}
                if check.on == state["on"]:
                    continue
                count = int(state["count"]) + int(check.on)
                text = (
                    with_links(check.crossed, check.rooms, settings.max_links) if check.on else check.cleared
                )
                phase = "on" if check.on else "off"
                await self.services.post_to_ops(team, text, key=f"alert:{key}:{count}:{phase}")
                await store.set(key, {"on": check.on, "count": count, "at": now.isoformat()})
                posted += 1
        return posted

    # -- the daily digest ----------------------------------------------------------------------

    @on_schedule("digest", cron="*/15 * * * *")
    async def daily_digest(self, ctx: Context, fire: ScheduledFire) -> None:
        """Post yesterday's digest to every team whose local digest time has passed today."""
        slot = fire.data.get("slot")
        await self.digests_now(datetime.fromisoformat(str(slot)) if slot else self.services.now())

    async def digests_now(self, now: datetime) -> list[str]:
        """Post the digests due at ``now`` (once per team and day); the teams posted to."""
        if not self.config.digest.enabled:
            return []
        store = self.services.store("digest")
        done: list[str] = []
        for team, zone in self._teams():
            local = now.astimezone(zone)
            if local.time().replace(tzinfo=None) < self.config.digest.at:
                continue
            day = date.fromordinal(local.date().toordinal() - 1)
            key = team or "*"
            if await store.get(key) == day.isoformat():
                continue
            await self._post_digest(team, zone, day)
            await store.set(key, day.isoformat())
            done.append(key)
        return done

    async def _post_digest(self, team: str | None, zone: ZoneInfo, day: date) -> None:
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=zone)
        since, until = day_bounds(noon, zone)
        before_since, before_until = day_bounds(noon - timedelta(days=7), zone)
        yesterday = await service_report(since, until, team=team)
        week_before = await service_report(before_since, before_until, team=team)
        text = digest_text(team, day, zone, yesterday, week_before)
        key = f"digest:{team or '*'}:{day.isoformat()}"
        if not self.config.digest.chart:
            await self.services.post_to_ops(team, text, key=key)
            return
        title = f"{team or 'All teams'}, {day:%a %d %b %Y}: conversations and queue wait by hour"
        png = await asyncio.to_thread(chart_png, yesterday, zone, title)
        await self.services.post_to_ops(team, text, key=key, image=(f"digest-{day.isoformat()}.png", png))
