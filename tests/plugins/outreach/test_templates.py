"""Outreach templates and decisions as pure functions: languages, channel variants, missing variables,
quiet hours in the customer's zone across daylight saving, segments and A/B arms."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from bot_core.api import ConsentInfo, CustomerRecord, IdentityRef
from plugins.outreach.config import Campaign, OutreachConfig, QuietHours, Segment
from plugins.outreach.planning import (
    choose_channel,
    consent_refusal,
    quiet_until,
    segment_matches,
    variant_for,
)
from plugins.outreach.templates import MissingVariables, Template, pick_language, render

SHIPPED = Template.model_validate(
    {
        "text": {
            "en": "Hi {{first_name}}, your order {{order_id}} is on its way.",
            "zh": "{{first_name}}，您好！您的订单 {{order_id}} 已发货。",  # noqa: RUF001
        },
        "channels": {
            "whatsapp": {"template": "order_shipped_v2", "variables": ["first_name", "order_id"]},
            "sms": {"text": {"en": "Order {{order_id}} shipped."}},
        },
    }
)


def _customer(**kwargs: object) -> CustomerRecord:
    values: dict[str, object] = {"id": 7, "name": "Alice Liddell", "identities": (IdentityRef("web", "v1"),)}
    values.update(kwargs)
    return CustomerRecord(**values)  # type: ignore[arg-type]


def test_the_customers_language_and_name_fill_the_text() -> None:
    rendered = render(
        "shipped", SHIPPED, _customer(locale="zh-CN"), "web", {"order_id": "A-1"}, default_language="en"
    )
    assert rendered.text == "Alice，您好！您的订单 A-1 已发货。"  # noqa: RUF001
    assert rendered.language == "zh"
    english = render(
        "shipped", SHIPPED, _customer(locale="de-CH"), "web", {"order_id": "A-1"}, default_language="en"
    )
    assert english.text == "Hi Alice, your order A-1 is on its way."


def test_a_whatsapp_variant_names_its_approved_template_with_its_parameters() -> None:
    rendered = render(
        "shipped", SHIPPED, _customer(locale="zh"), "whatsapp", {"order_id": "A-1"}, default_language="en"
    )
    assert rendered.approved is not None
    assert (rendered.approved.name, rendered.approved.language) == ("order_shipped_v2", "zh")
    assert rendered.approved.variables == ("Alice", "A-1")
    sms = render("shipped", SHIPPED, _customer(), "sms", {"order_id": "A-1"}, default_language="en")
    assert (sms.text, sms.approved) == ("Order A-1 shipped.", None)


def test_a_missing_or_empty_variable_stops_the_send_and_names_each() -> None:
    with pytest.raises(MissingVariables) as caught:
        render("shipped", SHIPPED, _customer(name=""), "web", {"order_id": " "}, default_language="en")
    assert caught.value.missing == ["first_name", "order_id"]
    assert "no value for first_name, order_id" in str(caught.value)
    with pytest.raises(MissingVariables):  # the approved template's parameters count too
        render("shipped", SHIPPED, _customer(), "whatsapp", {}, default_language="en")


def test_language_fallbacks() -> None:
    assert pick_language(["en", "zh"], "zh-TW", "en") == "zh"
    assert pick_language(["en", "pt-BR"], "pt", "en") == "pt-BR"
    assert pick_language(["en", "zh"], None, "en") == "en"
    assert pick_language(["zh"], "fr", "en") == "zh"


def test_config_refuses_what_cannot_work() -> None:
    base = {"templates": {"t": {"text": {"en": "hi"}}}}
    with pytest.raises(ValidationError, match="no template 'nope'"):
        OutreachConfig.model_validate({**base, "events": {"order_shipped": "nope"}})
    with pytest.raises(ValidationError, match="give template: or variants:"):
        OutreachConfig.model_validate({**base, "campaigns": [{"name": "c", "cron": "0 9 * * *"}]})
    with pytest.raises(ValidationError, match="unknown time zone"):
        OutreachConfig.model_validate(
            {
                **base,
                "campaigns": [{"name": "c", "cron": "0 9 * * *", "timezone": "Mars/Base", "template": "t"}],
            }
        )
    with pytest.raises(ValidationError, match="need link_secret"):
        OutreachConfig.model_validate(
            {"templates": {"t": {"text": {"en": "{{link.x}}"}, "links": {"x": "https://e.x"}}}}
        )
    with pytest.raises(ValidationError, match="HH:MM"):
        QuietHours(start="9pm")


QUIET = QuietHours(start="21:00", end="08:00")


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc, arg-type]


def test_quiet_hours_are_the_customers_own_night() -> None:
    now = _utc(2026, 6, 1, 23, 30)  # 01:30 in Berlin, 07:30 in Shanghai, 19:30 in New York
    assert quiet_until(QUIET, "Europe/Berlin", now) == _utc(2026, 6, 2, 6, 0)  # 08:00 CEST
    assert quiet_until(QUIET, "Asia/Shanghai", now) == _utc(2026, 6, 2, 0, 0)  # 08:00 CST, half an hour on
    assert quiet_until(QUIET, "America/New_York", now) is None  # evening there: sent now


def test_the_morning_after_a_daylight_saving_change_is_local_eight() -> None:
    # Saturday 28 March 2026, 22:00 in Berlin (UTC+1); the clocks go forward that night
    assert quiet_until(QUIET, "Europe/Berlin", _utc(2026, 3, 28, 21, 0)) == _utc(
        2026, 3, 29, 6, 0
    )  # 08:00 CEST
    # and back in October: 08:00 CET is 07:00 UTC
    assert quiet_until(QUIET, "Europe/Berlin", _utc(2026, 10, 24, 22, 0)) == _utc(2026, 10, 25, 7, 0)


def test_segments_and_consent() -> None:
    now = _utc(2026, 6, 1)
    alice = _customer(
        tags=("vip",),
        attributes={"plan": "pro"},
        identities=(IdentityRef("telegram", "1"), IdentityRef("web", "v1", reachable=False)),
        last_contact_at=now - timedelta(days=3),
        last_channel="web",
        consents={"marketing": ConsentInfo("marketing", False, "STOP", now)},
    )
    assert segment_matches(
        Segment(tags=["vip"], attributes={"plan": "pro"}, last_contact_within_days=7), alice, now
    )
    assert not segment_matches(Segment(channel="web"), alice, now)  # not reachable there
    assert not segment_matches(Segment(no_contact_for_days=30), alice, now)
    assert choose_channel(alice, None) == "telegram"  # the last one is unreachable
    assert consent_refusal(alice, "marketing") == "opted out of marketing (STOP)"
    assert consent_refusal(_customer(), "marketing") == "no marketing consent (never opted in)"
    assert consent_refusal(alice, "service") is None


def test_ab_arms_are_stable_and_even() -> None:
    campaign = Campaign.model_validate(
        {
            "name": "spring",
            "cron": "0 9 * * *",
            "variants": [{"name": "a", "template": "x"}, {"name": "b", "template": "y"}],
        }
    )
    arms = Counter(variant_for(campaign, n).name for n in range(1000))
    assert set(arms) == {"a", "b"} and abs(arms["a"] - arms["b"]) < 120
    assert variant_for(campaign, 42) == variant_for(campaign, 42)
