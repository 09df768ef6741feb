"""Opening hours of a team in its own time zone, with holidays; daylight-saving changes included.

Windows are local wall-clock times (``09:00-17:00`` in ``Europe/Berlin`` is 09:00 there in winter and in
summer). A moment is open when its local time falls in a window of its local weekday (or in the part
after midnight of the previous day's window that runs past midnight) and its local date is no holiday.
The next opening is searched day by day in local dates and converted to UTC once, so a day of 23 or 25
hours moves nothing; a window starting in the hour a spring change skips opens at the first instant
that exists after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from plugins.handoff.config import WEEKDAYS, TeamConfig, parse_windows

_SEARCH_DAYS = 400


@dataclass(frozen=True)
class Hours:
    """A team's opening hours: windows per weekday (0 = Monday), holidays, time zone."""

    zone: ZoneInfo
    week: dict[int, tuple[tuple[time, time], ...]]
    holidays: frozenset[date]
    always: bool = False

    @classmethod
    def of(cls, team: TeamConfig) -> Hours:
        """The hours of a configured team (no ``hours`` at all: always open, holidays still apply)."""
        week = {WEEKDAYS.index(day): parse_windows(text) for day, text in team.hours.items()}
        return cls(ZoneInfo(team.timezone), week, frozenset(team.holidays), always=not team.hours)

    def _open_on(self, day: date, at: time, *, after_midnight: bool) -> bool:
        """Whether a window of ``day`` covers the wall-clock ``at`` (of that day, or of the next day)."""
        if day in self.holidays:
            return False
        if self.always:
            return not after_midnight
        for start, end in self.week.get(day.weekday(), ()):
            overnight = end <= start
            if not after_midnight and (start <= at < end if not overnight else at >= start):
                return True
            if after_midnight and overnight and at < end:
                return True
        return False

    def is_open(self, moment: datetime) -> bool:
        """Whether the team works at ``moment`` (timezone-aware)."""
        local = moment.astimezone(self.zone)
        wall = local.time().replace(tzinfo=None)
        if self._open_on(local.date(), wall, after_midnight=False):
            return True
        # an overnight window of yesterday (22:00-02:00) still running; a holiday yesterday closes it too
        return self._open_on(local.date() - timedelta(days=1), wall, after_midnight=True)

    def next_open(self, moment: datetime) -> datetime | None:
        """The first instant at or after ``moment`` when the team works (``moment`` itself if open now);
        None if it never opens within a year (every day a holiday, no windows)."""
        if self.is_open(moment):
            return moment
        local = moment.astimezone(self.zone)
        for offset in range(_SEARCH_DAYS):
            day = local.date() + timedelta(days=offset)
            if day in self.holidays:
                continue
            starts = [time(0, 0)] if self.always else [start for start, _ in self.week.get(day.weekday(), ())]
            for start in sorted(starts):
                opening = _instant(day, start, self.zone)
                if opening >= moment and self.is_open(opening):
                    return opening
        return None


def _instant(day: date, wall: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of wall-clock ``wall`` on ``day`` in ``zone``; in a skipped hour (spring change), the
    first instant after the gap; in a repeated hour (autumn), the first of the two."""
    naive = datetime.combine(day, wall)
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) != naive:  # did not exist: the clocks jumped over it
        return _after_gap(naive, zone)
    return first


def _after_gap(naive: datetime, zone: ZoneInfo) -> datetime:
    """The first instant after a skipped wall-clock time: step minute by minute until the wall clock exists."""
    probe = naive
    for _ in range(24 * 60):
        probe += timedelta(minutes=1)
        candidate = probe.replace(tzinfo=zone).astimezone(UTC)
        if candidate.astimezone(zone).replace(tzinfo=None) == probe:
            return candidate
    return naive.replace(tzinfo=zone).astimezone(UTC)
