"""The handoff plugin's settings (plugins.yaml): teams, routing rules, the default team, priorities.

Durations are written ``90s``, ``15m``, ``4h``, ``2d`` (or a number of seconds); opening hours per
weekday as ``"09:00-17:00"`` (several windows separated by commas, ``"22:00-02:00"`` runs past
midnight); holidays as ISO dates. A bad value is refused when plugins.yaml is read, with the file,
the plugin and the field named.
"""

from __future__ import annotations

import re
from datetime import date, time, timedelta
from enum import StrEnum
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_duration(value: object) -> timedelta:
    """``"15m"`` → 15 minutes; a number is seconds. Raises ValueError on anything else."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration (write 90s, 15m, 4h or 2d)")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{value!r}: a duration must be positive")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def parse_windows(value: str) -> tuple[tuple[time, time], ...]:
    """``"09:00-12:00, 13:00-17:00"`` → the windows; ``"closed"`` or ``""`` → none."""
    if value.strip().lower() in ("", "closed"):
        return ()
    out = []
    for part in value.split(","):
        match = _WINDOW.match(part)
        if not match:
            raise ValueError(f"{part.strip()!r} is not a window like 09:00-17:00")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h2 == 24 and m2 == 0:
            h2, m2 = 0, 0
        try:
            start, end = time(h1, m1), time(h2, m2)
        except ValueError:
            raise ValueError(f"{part.strip()!r}: hours 00-23, minutes 00-59") from None
        if start == end:
            raise ValueError(f"{part.strip()!r}: a window needs a length (00:00-24:00 for the whole day)")
        out.append((start, end))
    return tuple(out)


def check_timezone(value: str) -> str:
    """An IANA time zone name (``Europe/Berlin``); raises ValueError otherwise."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not an IANA time zone (like Europe/Berlin or Asia/Shanghai)"
        ) from None
    return value


class Assignment(StrEnum):
    """How a team's waiting conversations reach its agents."""

    CLAIM = "claim"  # agents take them (!claim, or answering)
    ROUND_ROBIN = "round_robin"  # in turn among the available agents with room
    LEAST_BUSY = "least_busy"  # to the available agent with the fewest open conversations


class Targets(BaseModel):
    """Response targets of a team; a target left out is not watched."""

    model_config = ConfigDict(extra="forbid")
    first_response: Duration | None = Field(
        default=None, description="from joining the queue to an agent taking it"
    )
    next_response: Duration | None = Field(
        default=None, description="from a customer's message to the owner's answer, while assigned"
    )
    resolution: Duration | None = Field(
        default=None, description="from the conversation's start to its close"
    )


class TeamConfig(BaseModel):
    """One team: who is in it, how much each can take, when it works, how fast it should answer."""

    model_config = ConfigDict(extra="forbid")
    members: list[str] = Field(default_factory=list, description="workspace user ids (@alice:example.org)")
    capacity: int = Field(3, ge=1, description="open conversations per agent at once")
    timezone: str = Field("UTC", description="the team's IANA time zone: its hours and holidays are in it")
    hours: dict[str, str] = Field(
        default_factory=dict,
        description="per weekday (mon..sun) the opening windows, e.g. '09:00-17:00'; a day left out is "
        "closed; no hours at all: always open",
    )
    holidays: list[date] = Field(default_factory=list, description="days the team is closed (ISO dates)")
    targets: Targets = Field(default_factory=Targets)
    assignment: Assignment = Assignment.CLAIM
    presence: bool = Field(
        False,
        description="agents' availability follows their workspace presence (online: available, idle or "
        "away: away, offline: offline), checked every minute; an explicit !available / !away / !offline "
        "stands until their presence changes again",
    )
    sticky: Duration | None = Field(
        default=None,
        description="a returning customer goes to the agent who served them last, if that was within "
        "this time and the agent is available with room",
    )

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_timezone(value)

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: dict[str, str]) -> dict[str, str]:
        for day, windows in value.items():
            if day.lower() not in WEEKDAYS:
                raise ValueError(f"{day!r} is not a weekday (use {', '.join(WEEKDAYS)})")
            parse_windows(windows)
        return {day.lower(): windows for day, windows in value.items()}


class Match(BaseModel):
    """What a routing rule looks at; every condition given must hold (none given: always)."""

    model_config = ConfigDict(extra="forbid")
    keywords: list[str] = Field(
        default_factory=list, description="any of these words in what the customer wrote (case-insensitive)"
    )
    intents: list[str] = Field(
        default_factory=list,
        description="any of these hand-over reasons the FAQ tagged (handoff:<intent>): person, complaint, "
        "manager, legal, off_topic, unanswered, repeat",
    )
    tags: list[str] = Field(default_factory=list, description="any of these conversation or customer tags")
    language: list[str] = Field(
        default_factory=list,
        description="any of these languages (en, zh): the FAQ's, else the customer's locale",
    )
    channel: list[str] = Field(default_factory=list, description="any of these channel plugin names")
    attributes: dict[str, str] = Field(
        default_factory=dict, description="customer attributes that must have these values"
    )
    time: str | None = Field(default=None, description="a window like '18:00-08:00' in `timezone`")
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_timezone(value)

    @field_validator("time")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None and not parse_windows(value):
            raise ValueError("a time window like '18:00-08:00' is needed")
        return value


class Rule(BaseModel):
    """A routing rule: when ``match`` holds, the conversation goes to ``team`` (the first matching rule wins)."""

    model_config = ConfigDict(extra="forbid")
    team: str
    match: Match = Field(default_factory=Match)
    priority: int = Field(0, description="higher is served first; the default is 0")


class HandoffConfig(BaseModel):
    """The handoff plugin's settings."""

    model_config = ConfigDict(extra="forbid")
    teams: dict[str, TeamConfig] = Field(description="the teams by name")
    default_team: str = Field(description="where a conversation goes when no rule matches")
    rules: list[Rule] = Field(default_factory=list, description="first match wins")
    complaint_priority: int = Field(
        10, description="the priority of a conversation the FAQ tagged handoff:complaint (jumps the queue)"
    )
    queue_unhandled: bool = Field(
        False,
        description="queue a customer's message that no plugin before handoff handled (without the FAQ: "
        "every new conversation goes to the queue)",
    )
    requeue_change: float = Field(
        0.5, gt=0, description="tell the customer again when their expected wait changed by this share"
    )

    @model_validator(mode="after")
    def _teams_known(self) -> HandoffConfig:
        if not self.teams:
            raise ValueError("teams: at least one team is needed")
        if self.default_team not in self.teams:
            raise ValueError(
                f"default_team {self.default_team!r} is not one of the teams ({', '.join(self.teams)})"
            )
        for n, rule in enumerate(self.rules):
            if rule.team not in self.teams:
                raise ValueError(
                    f"rules[{n}].team {rule.team!r} is not one of the teams ({', '.join(self.teams)})"
                )
        return self
