"""The supervisor plugin's settings (plugins.yaml): teams and their time zones, alert thresholds, the digest.

Durations are seconds or ``90s``, ``15m``, ``2h``; a threshold set to ``null`` is not watched.
A bad value is refused when plugins.yaml is read, with the plugin and the field named.
"""

from __future__ import annotations

import re
from datetime import time
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(value: object) -> float:
    """``"15m"`` → 900.0; a number is seconds. ValueError on anything else."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        result = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration (write 90s, 15m or 2h)")
        result = float(match.group(1)) * _UNITS[match.group(2)]
    if result <= 0:
        raise ValueError(f"{value!r}: a duration must be positive")
    return result


Seconds = Annotated[float, BeforeValidator(seconds)]


class TeamSettings(BaseModel):
    """A watched team: its time zone (the digest's day and hour) and where its posts go (its ops room)."""

    model_config = ConfigDict(extra="forbid")

    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Berlin)") from None
        return value


class AlertSettings(BaseModel):
    """Thresholds: an alert is posted once when a figure reaches its threshold and once when it is below again."""

    model_config = ConfigDict(extra="forbid")

    queue_length: int | None = Field(default=10, ge=1)
    """Conversations waiting in the team's queue."""
    oldest_wait: Seconds | None = 900.0
    """How long the longest-waiting conversation has waited."""
    first_response_target: Seconds = 300.0
    """The first-response target: a conversation queued longer than this without an agent is a breach."""
    first_response_breaches: int | None = Field(default=3, ge=1)
    """Breaches of the target within the last hour."""
    delivery_failures: int | None = Field(default=5, ge=1)
    """Customer deliveries given up within the last hour."""
    adapter_down: bool = True
    """An adapter's receiving loop is down (``/healthz``'s ``down``)."""
    max_links: int = Field(default=5, ge=0)
    """How many affected rooms an alert links."""


class DigestSettings(BaseModel):
    """The daily digest: yesterday against the same weekday a week before, with a chart."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    at: time = time(8, 0)
    """Local time (the team's time zone) after which yesterday's digest is posted."""
    chart: bool = True

    @field_validator("at", mode="before")
    @classmethod
    def _at(cls, value: object) -> object:
        if isinstance(value, str) and not re.fullmatch(r"\d{1,2}:\d{2}", value.strip()):
            raise ValueError(f"{value!r} is not a time of day like 08:00")
        return value.strip() if isinstance(value, str) else value


class SupervisorConfig(BaseModel):
    """``supervisor`` in plugins.yaml."""

    model_config = ConfigDict(extra="forbid")

    teams: dict[str, TeamSettings] = Field(default_factory=dict)
    """Teams to watch, each posting into its ops room (``ops-<team>``); none: every conversation, into ``ops``."""
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    digest: DigestSettings = Field(default_factory=DigestSettings)
