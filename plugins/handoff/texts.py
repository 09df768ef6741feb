"""What the handoff plugin tells customers, per language (``plugins/handoff/locales/<code>.yaml``).

A customer is told in their conversation's language (the FAQ's ``lang:`` tag, else their locale's
language), English when there is no file for it. Times are shown in the customer's own time zone (the
team's when the channel did not tell theirs).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

SHIPPED = Path(__file__).parent / "locales"
KEYS = (
    "opens",
    "opens_today",
    "opens_tomorrow",
    "minutes",
    "one_minute",
    "hours",
    "queued",
    "queued_soon",
    "queued_unknown",
    "moved",
    "moved_unknown",
    "closed",
    "transfer_team",
    "transfer_agent",
    "followup",
)


@dataclass(frozen=True)
class Texts:
    """One language's texts."""

    language: str
    weekdays: tuple[str, ...]
    text: dict[str, str]

    def say(self, key: str, **values: object) -> str:
        """The text ``key`` with its placeholders filled."""
        return self.text[key].format(**values)

    def duration(self, seconds: float) -> str:
        """A wait in words, rounded up to whole minutes (``12 minutes``, ``1 h 5 min``)."""
        minutes = max(1, int(-(-seconds // 60)))
        if minutes == 1:
            return self.text["one_minute"]
        if minutes < 60:
            return self.say("minutes", n=minutes)
        return self.say("hours", h=minutes // 60, m=minutes % 60)

    def moment(self, at: datetime, zone: ZoneInfo, now: datetime) -> str:
        """When ``at`` is, in ``zone``: today / tomorrow / weekday, with the wall-clock time."""
        local, today = at.astimezone(zone), now.astimezone(zone).date()
        clock = f"{local:%H:%M}"
        if local.date() == today:
            return self.say("opens_today", time=clock)
        if local.date() == today + timedelta(days=1):
            return self.say("opens_tomorrow", time=clock)
        return self.say("opens", weekday=self.weekdays[local.weekday()], time=clock)


def load_texts(directory: Path = SHIPPED) -> dict[str, Texts]:
    """Every locale file of ``directory`` by language code; a file missing a key raises ValueError naming it."""
    out = {}
    for path in sorted(directory.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        missing = [k for k in KEYS if k not in data]
        if missing or len(data.get("weekdays", ())) != 7:
            raise ValueError(f"{path}: missing {', '.join(missing) or 'seven weekdays'}")
        out[data["language"]] = Texts(
            data["language"], tuple(data["weekdays"]), {k: str(data[k]) for k in KEYS}
        )
    return out
