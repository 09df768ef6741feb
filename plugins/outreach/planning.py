"""Who gets what, and when: segments, consent, the frequency cap, quiet hours, A/B arms.

Pure decisions over a :class:`~bot_core.api.CustomerRecord` and the time, shared by the sending path
and ``relaydesk outreach campaign --dry-run`` (so the dry run says exactly what a run would do).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bot_core.api import CustomerRecord, StateStore
from plugins.outreach.config import Campaign, FrequencyCap, QuietHours, Segment, Variant

SENT_PREFIX = "sent:"  # customer-scope records of what outreach sent them: "sent:<iso time>:<source>"


def segment_matches(segment: Segment, customer: CustomerRecord, now: datetime) -> bool:
    """Whether ``customer`` is in ``segment`` (every condition given holds)."""
    if segment.tags and not set(segment.tags) <= set(customer.tags):
        return False
    if segment.channel is not None and segment.channel not in customer.channels:
        return False
    if any(customer.attributes.get(k) != v for k, v in segment.attributes.items()):
        return False
    last = customer.last_contact_at
    if segment.last_contact_within_days is not None and (
        last is None or now - last > timedelta(days=segment.last_contact_within_days)
    ):
        return False
    return not (
        segment.no_contact_for_days is not None
        and last is not None
        and now - last < timedelta(days=segment.no_contact_for_days)
    )


def variant_for(campaign: Campaign, customer_id: int) -> Variant:
    """The A/B arm a customer gets: fixed per campaign and customer, spread evenly."""
    arms = campaign.arms
    digest = hashlib.sha256(f"{campaign.name}:{customer_id}".encode()).digest()
    return arms[int.from_bytes(digest[:8], "big") % len(arms)]


def choose_channel(customer: CustomerRecord, wanted: str | None) -> str | None:
    """The channel to write on: ``wanted`` if reachable there, else the latest conversation's, else any."""
    reachable = customer.channels
    if wanted is not None:
        return wanted if wanted in reachable else None
    if customer.last_channel in reachable:
        return customer.last_channel
    return reachable[0] if reachable else None


def consent_refusal(customer: CustomerRecord, topic: str) -> str | None:
    """Why ``topic`` may not go to the customer (their recorded consent), None if it may."""
    record = customer.consents.get(topic)
    if topic == "marketing":
        if record is None:
            return "no marketing consent (never opted in)"
        return None if record.granted else f"opted out of marketing ({record.source})"
    if record is None or record.granted:
        return None
    return f"opted out of {topic} messages ({record.source})"


def quiet_until(quiet: QuietHours, zone_name: str, now: datetime) -> datetime | None:
    """The end of the quiet hours ``now`` falls in, for a customer in ``zone_name``; None outside them.

    Times are the customer's wall clock, so a daylight-saving change moves the UTC instant, not the
    local 08:00.
    """
    if not quiet.enabled or quiet.start_time == quiet.end_time:
        return None
    zone = ZoneInfo(zone_name)
    local = now.astimezone(zone)
    start, end, clock = quiet.start_time, quiet.end_time, local.time()
    if start < end:
        inside = start <= clock < end
    else:  # wraps midnight: 21:00-08:00
        inside = clock >= start or clock < end
    if not inside:
        return None
    day = local.date() if clock < end else local.date() + timedelta(days=1)
    wake = datetime.combine(day, end, tzinfo=zone)
    # a wall-clock time skipped by a daylight-saving jump is normalised by the round trip through UTC
    return wake.astimezone(ZoneInfo("UTC"))


async def marketing_sent_within(plugin: str, customer_id: int, now: datetime, days: float) -> int:
    """How many marketing messages outreach sent the customer within ``days`` before ``now``."""
    since = now - timedelta(days=days)
    count = 0
    for key, value in (await StateStore(plugin, f"customer:{customer_id}").items()).items():
        if not key.startswith(SENT_PREFIX) or not isinstance(value, dict):
            continue
        if value.get("topic") != "marketing":
            continue
        at = datetime.fromisoformat(str(value.get("at")))
        if since < at <= now:
            count += 1
    return count


async def cap_refusal(plugin: str, customer_id: int, cap: FrequencyCap, now: datetime) -> str | None:
    """Why a marketing message would exceed the customer's frequency cap, None if it would not."""
    sent = await marketing_sent_within(plugin, customer_id, now, cap.days)
    if sent >= cap.max:
        return f"frequency cap: {sent} marketing messages within {cap.days:g} days (max {cap.max})"
    return None


@dataclass(frozen=True)
class Decision:
    """What happens to one customer: send now, wait until ``wait_until``, or skip for ``skip``."""

    customer_id: int
    channel: str | None = None
    variant: str | None = None
    template: str | None = None
    text: str | None = None
    skip: str | None = None
    wait_until: datetime | None = None
    wait_reason: str | None = None

    def describe(self, name: str = "") -> str:
        """One line for a dry run."""
        who = f"customer {self.customer_id}" + (f" ({name})" if name else "")
        if self.skip:
            return f"SKIP {who}: {self.skip}"
        arm = f" variant {self.variant}" if self.variant and self.variant != "main" else ""
        head = f"SEND {who} on {self.channel}:{arm} template {self.template}"
        if self.wait_until is not None:
            head += f", waits until {self.wait_until:%Y-%m-%d %H:%M} UTC ({self.wait_reason})"
        return f"{head}\n    {self.text}"


REASON_CODES = (
    ("no such customer", "unknown_customer"),
    ("not reachable", "unreachable"),
    ("no marketing consent", "no_consent"),
    ("opted out of", "opted_out"),
    ("frequency cap", "frequency_cap"),
    ("no template", "unknown_template"),
    ("template ", "missing_variable"),
)


def reason_code(reason: str) -> str:
    """A skip's reason as a short code for counting (``opted_out``, ``missing_variable``, ...)."""
    return next((code for start, code in REASON_CODES if reason.startswith(start)), "other")
