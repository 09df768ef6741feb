"""Routing rules, opening hours across time zones, holidays and daylight-saving changes, the wait estimate,
follow-up times and the config's error messages (pure functions, no desk)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from bot_core.config import ConfigError, parse_config
from plugins.handoff.config import HandoffConfig, TeamConfig
from plugins.handoff.hours import Hours
from plugins.handoff.promises import FollowupError, parse_followup
from plugins.handoff.routing import Facts, language_of, route
from plugins.handoff.texts import load_texts
from plugins.handoff.wait import DEFAULT_HANDLE, expected_waits

CONFIG = HandoffConfig.model_validate(
    {
        "default_team": "support",
        "teams": {"support": {}, "billing": {}, "china": {}, "night": {}, "vip": {}, "web": {}},
        "rules": [
            {"team": "vip", "match": {"attributes": {"plan": "enterprise"}}, "priority": 5},
            {"team": "billing", "match": {"keywords": ["invoice", "refund", "发票"]}},
            {"team": "china", "match": {"language": ["zh"]}},
            {"team": "web", "match": {"channel": ["web"], "tags": ["returning"]}},
            {"team": "night", "match": {"time": "22:00-06:00", "timezone": "Asia/Shanghai"}},
            {"team": "support", "match": {"intents": ["legal"]}, "priority": 20},
        ],
    }
)
NOON_SHANGHAI = datetime(2026, 12, 8, 4, 0, tzinfo=UTC)


def test_first_matching_rule_wins() -> None:
    """Rules are tried in order: an enterprise customer asking about an invoice goes to vip."""
    facts = Facts(text="where is my INVOICE?", attributes={"plan": "enterprise"}, now=NOON_SHANGHAI)
    assert route(CONFIG, facts).team == "vip"
    assert route(CONFIG, Facts(text="where is my invoice?", now=NOON_SHANGHAI)).team == "billing"
    assert route(CONFIG, Facts(text="我要发票", now=NOON_SHANGHAI)).team == "billing"


def test_language_channel_tags_and_default() -> None:
    """Language from the FAQ's tag (else the locale), channel with tags, and the default team."""
    assert route(CONFIG, Facts(text="你好", language="zh", now=NOON_SHANGHAI)).team == "china"
    assert language_of(["lang:zh", "x"], "en-GB") == "zh"
    assert language_of([], "zh-Hans-CN") == "zh"
    assert route(CONFIG, Facts(channel="web", tags=frozenset({"returning"}), now=NOON_SHANGHAI)).team == "web"
    assert route(CONFIG, Facts(channel="web", now=NOON_SHANGHAI)).team == "support"
    chosen = route(CONFIG, Facts(text="hi", now=NOON_SHANGHAI))
    assert (chosen.team, chosen.priority, chosen.rule) == ("support", 0, None)


def test_time_of_day_in_the_rules_time_zone() -> None:
    """22:00-06:00 in Shanghai: 23:00 there (15:00 UTC) matches, noon there does not."""
    assert route(CONFIG, Facts(now=datetime(2026, 12, 8, 15, 0, tzinfo=UTC))).team == "night"
    assert route(CONFIG, Facts(now=NOON_SHANGHAI)).team == "support"


def test_complaint_jumps_the_line_and_intents_route() -> None:
    """An FAQ complaint gets complaint_priority whatever rule routed it; a higher rule priority stays."""
    complaint = route(CONFIG, Facts(text="refund!", tags=frozenset({"handoff:complaint"}), now=NOON_SHANGHAI))
    assert (complaint.team, complaint.priority) == ("billing", 10)
    legal = route(CONFIG, Facts(tags=frozenset({"handoff:legal"}), now=NOON_SHANGHAI))
    assert (legal.team, legal.priority) == ("support", 20)


BERLIN_WEEK = TeamConfig.model_validate(
    {
        "timezone": "Europe/Berlin",
        "hours": {
            "mon": "09:00-17:00",
            "tue": "09:00-12:00, 13:00-17:00",
            "fri": "09:00-17:00",
            "sat": "22:00-02:00",
        },
        "holidays": ["2026-12-25"],
    }
)


def test_hours_in_the_teams_time_zone() -> None:
    """09:00-17:00 Berlin is 08:00-16:00 UTC in winter; a lunch break; a weekday without hours is closed."""
    hours = Hours.of(BERLIN_WEEK)
    assert hours.is_open(datetime(2026, 12, 7, 8, 0, tzinfo=UTC))  # Monday 09:00 Berlin
    assert not hours.is_open(datetime(2026, 12, 7, 7, 59, tzinfo=UTC))
    assert not hours.is_open(datetime(2026, 12, 7, 16, 0, tzinfo=UTC))  # 17:00 Berlin
    assert not hours.is_open(datetime(2026, 12, 8, 11, 30, tzinfo=UTC))  # Tuesday 12:30 lunch
    assert not hours.is_open(datetime(2026, 12, 9, 10, 0, tzinfo=UTC))  # Wednesday
    # Monday 17:30 Berlin: next opening Tuesday 09:00 Berlin
    assert hours.next_open(datetime(2026, 12, 7, 16, 30, tzinfo=UTC)) == datetime(
        2026, 12, 8, 8, 0, tzinfo=UTC
    )


def test_overnight_window_and_holidays() -> None:
    """Saturday 22:00-02:00 runs into Sunday; Christmas (a Friday) is closed, the next opening is Saturday night."""
    hours = Hours.of(BERLIN_WEEK)
    assert hours.is_open(datetime(2026, 12, 12, 21, 30, tzinfo=UTC))  # Sat 22:30 Berlin
    assert hours.is_open(datetime(2026, 12, 13, 0, 30, tzinfo=UTC))  # Sun 01:30 Berlin
    assert not hours.is_open(datetime(2026, 12, 13, 1, 0, tzinfo=UTC))  # Sun 02:00 Berlin
    assert not hours.is_open(datetime(2026, 12, 25, 10, 0, tzinfo=UTC))
    assert hours.next_open(datetime(2026, 12, 24, 20, 0, tzinfo=UTC)) == datetime(
        2026, 12, 26, 21, 0, tzinfo=UTC
    )


def test_daylight_saving_change() -> None:
    """09:00 Berlin is 08:00 UTC before the spring change (Sunday 29 March 2026) and 07:00 UTC after it; a
    window starting in the skipped hour opens at 03:00 summer time; autumn's repeated hour is opened once."""
    hours = Hours.of(
        TeamConfig.model_validate({"timezone": "Europe/Berlin", "hours": {"mon": "09:00-17:00"}})
    )
    assert hours.next_open(datetime(2026, 3, 27, 18, 0, tzinfo=UTC)) == datetime(
        2026, 3, 30, 7, 0, tzinfo=UTC
    )
    assert hours.next_open(datetime(2026, 3, 20, 18, 0, tzinfo=UTC)) == datetime(
        2026, 3, 23, 8, 0, tzinfo=UTC
    )
    gap = Hours.of(TeamConfig.model_validate({"timezone": "Europe/Berlin", "hours": {"sun": "02:30-05:00"}}))
    assert gap.next_open(datetime(2026, 3, 28, 12, 0, tzinfo=UTC)) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    autumn = Hours.of(
        TeamConfig.model_validate({"timezone": "Europe/Berlin", "hours": {"sun": "02:30-05:00"}})
    )
    # 25 October 2026: 02:30 happens twice; the first (CEST, 00:30 UTC) opens
    assert autumn.next_open(datetime(2026, 10, 24, 12, 0, tzinfo=UTC)) == datetime(
        2026, 10, 25, 0, 30, tzinfo=UTC
    )
    assert autumn.is_open(datetime(2026, 10, 25, 1, 45, tzinfo=UTC))  # the second 02:45 (CET) too


def test_the_customers_time_zone_in_the_closed_message() -> None:
    """The opening time is shown in the customer's zone: Berlin's Tuesday 09:00 is 16:00 in Shanghai."""
    texts = load_texts()
    opens = datetime(2026, 12, 8, 8, 0, tzinfo=UTC)
    now = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)  # Monday 21:00 Berlin, Tuesday 04:00 Shanghai
    assert texts["en"].moment(opens, ZoneInfo("Europe/Berlin"), now) == "tomorrow at 09:00"
    assert texts["zh"].moment(opens, ZoneInfo("Asia/Shanghai"), now) == "今天 16:00"
    assert texts["en"].moment(opens + timedelta(days=3), ZoneInfo("America/New_York"), now) == "Friday 03:00"
    assert texts["zh"].duration(65 * 60) == "1 小时 5 分钟"
    assert texts["en"].duration(61) == "2 minutes"


def test_expected_waits() -> None:
    """Free slots first; then the first to wait gets ln 2 departures' time, the n-th (n - 1); nobody: None."""
    assert expected_waits(0, 0, [], 3) is None
    assert expected_waits(2, 0, [300.0], 4) == [0.0, 0.0, pytest.approx(150.0 * math.log(2)), 150.0]
    theta = DEFAULT_HANDLE / 3
    assert expected_waits(0, 3, [], 3) == [pytest.approx(theta * math.log(2)), theta, 2 * theta]
    assert expected_waits(0, 1, [100.0] * 40 + [1000.0] * 30, 2) == [
        pytest.approx(1000.0 * math.log(2)),
        1000.0,
    ]  # only the last 30 handle times count


def test_followup_times() -> None:
    """3d, tomorrow 10:00 in the team's zone, an ISO date; a time in the past or no text is refused."""
    now = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
    berlin = ZoneInfo("Europe/Berlin")
    three = parse_followup("3d call back --tell-customer", now, berlin)
    assert (three.due, three.what, three.tell_customer) == (now + timedelta(days=3), "call back", True)
    tomorrow = parse_followup("tomorrow 10:00 check the parcel", now, berlin)
    assert tomorrow.due == datetime(2026, 12, 9, 9, 0, tzinfo=UTC) and not tomorrow.tell_customer
    assert parse_followup("2026-12-24 call", now, berlin).due == datetime(2026, 12, 24, 8, 0, tzinfo=UTC)
    for bad in ("3d", "today 09:00 too late", "soon call", "tomorrow 25:00 x"):
        with pytest.raises(FollowupError):
            parse_followup(bad, now, berlin)


def test_config_errors_name_the_file_the_plugin_and_the_field() -> None:
    """A bad time zone, an unknown team in a rule, a bad duration: refused with where it is."""
    yaml_text = """
plugins:
  - handoff:
      use: "plugins.handoff:HandoffPlugin"
      config:
        default_team: support
        teams:
          support: {timezone: Europe/Berlinn, targets: {first_response: soon}}
        rules: [{team: sales}]
"""
    with pytest.raises(ConfigError) as failed:
        parse_config(yaml_text, "plugins.yaml", environ={})
    text = str(failed.value)
    assert "plugins.yaml" in text and "handoff" in text
    assert "timezone" in text and "Europe/Berlinn" in text
    assert "first_response" in text and "soon" in text
    with pytest.raises(ValidationError, match=r"rules\[0\]\.team 'sales'"):
        HandoffConfig.model_validate(
            {"default_team": "support", "teams": {"support": {}}, "rules": [{"team": "sales"}]}
        )
    assert date(2026, 12, 25) in Hours.of(BERLIN_WEEK).holidays
