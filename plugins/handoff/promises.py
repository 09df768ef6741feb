"""Promises made to a customer: ``!followup 3d <what>`` or ``!followup tomorrow 10:00 <what>``.

:func:`parse_followup` reads when and what (and ``--tell-customer``); the plugin schedules a keyed task
per promise (kept across restarts and workers) and lists the open ones with ``!followups``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from plugins.handoff.config import parse_duration

TELL = "--tell-customer"
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class FollowupError(ValueError):
    """A ``!followup`` the plugin cannot read; the message says what is expected."""


@dataclass(frozen=True)
class Followup:
    """When a promise is due, what it is, and whether the customer gets a message then."""

    due: datetime
    what: str
    tell_customer: bool


USAGE = (
    "Usage: !followup <when> <what> [--tell-customer], when = 30m, 4h, 3d, tomorrow 10:00, "
    "today 17:00 or 2026-12-24 09:00 (times in the team's time zone)"
)


def _clock(token: str) -> time:
    match = _CLOCK.match(token)
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise FollowupError(f"{token!r} is not a time like 10:00. {USAGE}")
    return time(int(match.group(1)), int(match.group(2)))


def _at(day: date, wall: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, wall, tzinfo=zone)


def parse_followup(raw: str, now: datetime, zone: ZoneInfo) -> Followup:
    """Read ``!followup``'s arguments at ``now``; wall-clock times are in ``zone``."""
    tokens = raw.split()
    tell = TELL in tokens
    tokens = [t for t in tokens if t != TELL]
    if len(tokens) < 2:
        raise FollowupError(USAGE)
    head = tokens[0].lower()
    local_today = now.astimezone(zone).date()
    if head in ("today", "tomorrow"):
        if len(tokens) < 3:
            raise FollowupError(USAGE)
        day = local_today + timedelta(days=1 if head == "tomorrow" else 0)
        due, rest = _at(day, _clock(tokens[1]), zone), tokens[2:]
    elif _DAY.match(head):
        try:
            day = date.fromisoformat(head)
        except ValueError:
            raise FollowupError(f"{head!r} is not a date. {USAGE}") from None
        if len(tokens) >= 3 and _CLOCK.match(tokens[1]):
            due, rest = _at(day, _clock(tokens[1]), zone), tokens[2:]
        else:
            due, rest = _at(day, time(9, 0), zone), tokens[1:]
    else:
        try:
            due, rest = now + parse_duration(head), tokens[1:]
        except ValueError:
            raise FollowupError(USAGE) from None
    if not rest:
        raise FollowupError(USAGE)
    if due <= now:
        raise FollowupError(f"{due.astimezone(zone):%Y-%m-%d %H:%M} is in the past. {USAGE}")
    return Followup(due, " ".join(rest), tell)
