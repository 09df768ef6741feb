"""The outreach plugin's settings (plugins.yaml): templates, events, campaigns and manners."""

from __future__ import annotations

import re
from datetime import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from bot_core.api import PeriodicJobError, PeriodicSpec, periodic_spec, valid_timezone
from plugins.outreach.templates import Template, check_name

_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def _clock(value: str) -> time:
    match = _CLOCK.fullmatch(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a time of day as HH:MM (24 h)")
    return time(int(match.group(1)), int(match.group(2)))


class QuietHours(BaseModel):
    """When no outreach reaches a customer, in their own time zone (``start`` to ``end``, may wrap midnight)."""

    model_config = ConfigDict(extra="forbid")
    start: str = "21:00"
    end: str = "08:00"
    enabled: bool = True

    @field_validator("start", "end")
    @classmethod
    def _valid(cls, value: str) -> str:
        _clock(value)
        return value.strip()

    @property
    def start_time(self) -> time:
        """``start`` as a time of day."""
        return _clock(self.start)

    @property
    def end_time(self) -> time:
        """``end`` as a time of day."""
        return _clock(self.end)


class RateLimitSettings(BaseModel):
    """How many outreach messages leave per minute: in all and per channel instance."""

    model_config = ConfigDict(extra="forbid")
    per_minute: int = Field(default=600, ge=1)
    per_channel: dict[str, int] = Field(default_factory=dict)  # channel instance -> per minute

    @field_validator("per_channel")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        for channel, rate in value.items():
            if rate < 1:
                raise ValueError(f"per_channel.{channel} must be at least 1 a minute")
        return value


class FrequencyCap(BaseModel):
    """At most ``max`` marketing messages to one customer within ``days`` (service messages do not count)."""

    model_config = ConfigDict(extra="forbid")
    max: int = Field(default=2, ge=1)
    days: float = Field(default=7, gt=0)


class Segment(BaseModel):
    """Who a campaign is for. Every condition given must hold."""

    model_config = ConfigDict(extra="forbid")
    tags: list[str] = Field(default_factory=list)  # the customer has every one of these tags
    channel: str | None = None  # the customer is reachable on this channel instance (and is sent there)
    attributes: dict[str, str] = Field(default_factory=dict)  # attribute equals value
    last_contact_within_days: float | None = Field(default=None, gt=0)  # wrote within N days
    no_contact_for_days: float | None = Field(default=None, gt=0)  # has not written for N days


class Variant(BaseModel):
    """One arm of an A/B test: a name and its template."""

    model_config = ConfigDict(extra="forbid")
    name: str
    template: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value)


class Campaign(BaseModel):
    """A message to a segment, sent at the times of ``cron`` in ``timezone``."""

    model_config = ConfigDict(extra="forbid")
    name: str
    cron: str
    timezone: str = "UTC"
    segment: Segment = Field(default_factory=Segment)
    template: str | None = None  # one template, or variants for an A/B test
    variants: list[Variant] = Field(default_factory=list)
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value)

    @model_validator(mode="after")
    def _checked(self) -> Campaign:
        if bool(self.template) == bool(self.variants):
            raise ValueError(f"campaign '{self.name}': give template: or variants:, one of them")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"campaign '{self.name}': variant names must differ")
        try:
            periodic_spec(f"campaign '{self.name}'", None, self.cron, self.timezone)
        except PeriodicJobError as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def arms(self) -> list[Variant]:
        """The variants, or the one template as variant ``main``."""
        return self.variants or [Variant(name="main", template=self.template or "")]

    def spec(self) -> PeriodicSpec:
        """When it fires."""
        spec = periodic_spec(f"campaign '{self.name}'", None, self.cron, self.timezone)
        assert spec is not None
        return spec


class OutreachConfig(BaseModel):
    """Settings of the ``outreach`` plugin (see README, "Outreach")."""

    model_config = ConfigDict(extra="forbid")
    token: SecretStr = SecretStr("")  # the shop's bearer token for POST /outreach/events (empty: route off)
    signing_secret: SecretStr = SecretStr("")  # when set, events must carry an HMAC-SHA256 signature
    signature_tolerance: float = Field(default=300, gt=0)  # seconds a signed request's timestamp may be off
    link_secret: SecretStr = SecretStr("")  # signs tracked links (required when a template has links)
    external_id_attribute: str = "external_id"  # the customer attribute holding the shop's customer id
    default_language: str = "en"
    default_timezone: str = "UTC"  # for customers whose time zone is not known
    quiet_hours: QuietHours = Field(default_factory=QuietHours)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    frequency_cap: FrequencyCap = Field(default_factory=FrequencyCap)
    templates: dict[str, Template] = Field(default_factory=dict)
    events: dict[str, str] = Field(default_factory=dict)  # event type -> template
    campaigns: list[Campaign] = Field(default_factory=list)
    attribution_days: float = Field(default=7, gt=0)  # a reply this soon after an outreach counts for it
    metrics_refresh: float = Field(default=30, ge=0)  # seconds /metrics reuses the figures it read

    @model_validator(mode="after")
    def _references(self) -> OutreachConfig:
        for name in self.templates:
            check_name(name)
        for event, template in self.events.items():
            check_name(event)
            if template not in self.templates:
                raise ValueError(f"events.{event}: no template '{template}'")
            if self.templates[template].topic != "service":
                raise ValueError(
                    f"events.{event}: a triggered message is a service message; '{template}' is marketing"
                )
        seen: set[str] = set()
        for campaign in self.campaigns:
            if campaign.name in seen:
                raise ValueError(f"two campaigns are called '{campaign.name}'")
            seen.add(campaign.name)
            for arm in campaign.arms:
                if arm.template not in self.templates:
                    raise ValueError(f"campaign '{campaign.name}': no template '{arm.template}'")
        if any(t.links for t in self.templates.values()) and not self.link_secret.get_secret_value():
            raise ValueError("templates with links: need link_secret (from the environment) to sign them")
        if valid_timezone(self.default_timezone) is None:
            raise ValueError(f"default_timezone: unknown time zone {self.default_timezone!r}")
        return self

    def campaign(self, name: str) -> Campaign | None:
        """The campaign called ``name``."""
        return next((c for c in self.campaigns if c.name == name), None)


TopicName = Literal["service", "marketing"]
