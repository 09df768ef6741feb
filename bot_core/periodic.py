"""When a periodic job (``@on_schedule(job, every=|cron=, timezone=)``) is due: pure time arithmetic.

A job's slots are the times it should fire: for ``every=N``, the last stored slot plus N seconds, again
and again (the clock is anchored where the job was first seen, not at process start); for ``cron=``,
the cron expression's times in ``timezone`` (APScheduler 3's :class:`CronTrigger`, so daylight-saving
changes are followed). The scheduler stores the last slot fired and asks here for the next one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

# Searching the latest missed cron slot walks slot by slot; it starts no further back than this when
# a slot exists within it (a minutely job down for a month would otherwise walk 43 200 slots).
_SEARCH_WINDOW = timedelta(days=8)
_ONE_US = timedelta(microseconds=1)


class PeriodicJobError(ValueError):
    """A periodic job is declared wrongly (bad interval, cron expression or time zone)."""


@dataclass(frozen=True)
class PeriodicSpec:
    """How often a periodic job fires: every N seconds, or at the times of a cron expression in a zone."""

    every: float | None = None
    cron: str | None = None
    timezone: str = "UTC"

    def describe(self) -> str:
        """A short human form, for logs."""
        return f"every {self.every:g}s" if self.every else f"cron '{self.cron}' {self.timezone}"

    @cached_property
    def _trigger(self) -> CronTrigger:
        return CronTrigger.from_crontab(self.cron or "", timezone=ZoneInfo(self.timezone))

    def next_after(self, last: datetime) -> datetime:
        """The first slot strictly after ``last`` (an aware datetime), in UTC."""
        if self.every:
            return last + timedelta(seconds=self.every)
        nxt = self._trigger.get_next_fire_time(last, last + _ONE_US)
        if nxt is None:  # a cron expression that never fires again (e.g. 30 February)
            return datetime.max.replace(tzinfo=last.tzinfo)
        return nxt.astimezone(UTC)  # type: ignore[no-any-return]

    def latest_due(self, last: datetime, now: datetime) -> datetime | None:
        """The latest slot in ``(last, now]``, or None: missed slots collapse into this one fire."""
        if self.every:
            missed = int((now - last).total_seconds() // self.every)
            return last + timedelta(seconds=self.every * missed) if missed >= 1 else None
        slot = self.next_after(last)
        if slot > now:
            return None
        if last < now - _SEARCH_WINDOW:
            recent = self.next_after(now - _SEARCH_WINDOW)
            if recent <= now:
                slot = recent  # dense schedule: some slot lies in the window, skip what is before it
        while (following := self.next_after(slot)) <= now:
            slot = following
        return slot


_DIGIT = re.compile(r"\d")


def periodic_spec(
    where: str, every: float | None, cron: str | None, timezone: str | None
) -> PeriodicSpec | None:
    """Check a periodic job's declaration; ``where`` names it in the error (plugin and job).

    Returns None for a job that is not periodic (neither ``every`` nor ``cron``).
    """
    if every is not None and cron is not None:
        raise PeriodicJobError(f"{where}: give every= or cron=, not both")
    if every is None and cron is None:
        if timezone is not None:
            raise PeriodicJobError(f"{where}: timezone= needs cron= (a one-off job is due at an exact time)")
        return None
    if every is not None:
        if timezone is not None:
            raise PeriodicJobError(f"{where}: timezone= applies to cron=, not to every=")
        if not every > 0:
            raise PeriodicJobError(f"{where}: every= must be a positive number of seconds, not {every!r}")
        return PeriodicSpec(every=float(every))
    zone = timezone or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise PeriodicJobError(
            f"{where}: unknown time zone {zone!r}; use an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from None
    fields = (cron or "").split()
    if len(fields) != 5:
        raise PeriodicJobError(
            f"{where}: cron={cron!r} needs 5 fields (minute hour day-of-month month day-of-week)"
        )
    if _DIGIT.search(fields[4]):
        # APScheduler 3 numbers weekdays from Monday = 0, crontab from Sunday = 0: a number would
        # silently fire on the wrong day, so only names are accepted.
        raise PeriodicJobError(
            f"{where}: cron={cron!r}: write the day of week with names (mon-fri, sun), not numbers"
        )
    spec = PeriodicSpec(cron=" ".join(fields), timezone=zone)
    try:
        _ = spec._trigger
    except ValueError as exc:
        raise PeriodicJobError(f"{where}: cron={cron!r} is not a valid cron expression: {exc}") from None
    return spec
