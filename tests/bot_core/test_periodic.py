"""Periodic job declarations and their slots: cron in a time zone, intervals, missed slots, clear errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot_core import Plugin, on_schedule
from bot_core.config import ConfigError, parse_config
from bot_core.periodic import PeriodicJobError, PeriodicSpec, periodic_spec


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_a_daily_berlin_job_follows_daylight_saving() -> None:
    spec = PeriodicSpec(cron="0 9 * * *", timezone="Europe/Berlin")
    assert spec.next_after(_utc(2026, 3, 28, 6, 0)) == _utc(2026, 3, 28, 8, 0)  # winter time: UTC+1
    assert spec.next_after(_utc(2026, 3, 28, 8, 0)) == _utc(2026, 3, 29, 7, 0)  # summer time: UTC+2
    assert spec.next_after(_utc(2026, 10, 24, 12, 0)) == _utc(2026, 10, 25, 8, 0)  # back to winter


def test_weekdays_by_name() -> None:
    spec = PeriodicSpec(cron="30 8 * * mon-fri", timezone="UTC")
    assert spec.next_after(_utc(2026, 12, 4, 9, 0)) == _utc(2026, 12, 7, 8, 30)  # Friday -> Monday


def test_missed_slots_collapse_into_the_latest() -> None:
    hourly = PeriodicSpec(every=3600)
    last = _utc(2026, 1, 1, 0, 0)
    assert hourly.latest_due(last, last + timedelta(minutes=59)) is None
    assert hourly.latest_due(last, last + timedelta(hours=5, minutes=10)) == last + timedelta(hours=5)
    minutely = PeriodicSpec(cron="* * * * *")
    now = _utc(2026, 6, 1, 12, 0, 30)
    assert minutely.latest_due(_utc(2026, 1, 1), now) == _utc(2026, 6, 1, 12, 0)  # months down: one slot
    yearly = PeriodicSpec(cron="0 0 1 1 *")
    assert yearly.latest_due(_utc(2024, 6, 1), now) == _utc(2026, 1, 1)  # sparse: found beyond the window


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "0 9 * * *", "timezone": "Europe/Berln"}, "unknown time zone 'Europe/Berln'"),
        ({"cron": "0 9 * *"}, "needs 5 fields"),
        ({"cron": "0 25 * * *"}, "not a valid cron expression"),
        ({"cron": "0 9 * * 1-5"}, "with names (mon-fri, sun), not numbers"),
        ({"every": 60, "cron": "* * * * *"}, "not both"),
        ({"every": 60, "timezone": "UTC"}, "timezone= applies to cron="),
        ({"every": 0}, "positive number of seconds"),
        ({"timezone": "UTC"}, "timezone= needs cron="),
    ],
)
def test_a_bad_declaration_names_the_plugin_and_job(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PeriodicJobError) as caught:

        class Digest(Plugin):
            name = "digest"

            @on_schedule("daily_digest", **kwargs)  # type: ignore[arg-type]
            async def send(self) -> None: ...

    assert "Digest job 'daily_digest'" in str(caught.value)
    assert message in str(caught.value)


def test_a_one_off_job_is_not_periodic() -> None:
    assert periodic_spec("x", None, None, None) is None


def test_plugins_yaml_reports_a_bad_time_zone_with_the_plugin_and_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "digest_plugin.py").write_text(
        "from bot_core import Plugin, on_schedule\n\n"
        "class Digest(Plugin):\n"
        "    name = 'digest'\n\n"
        "    @on_schedule('daily_digest', cron='0 9 * * *', timezone='Europe/Berln')\n"
        "    async def send(self, ctx, fire): ...\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        parse_config('plugins:\n  - digest: {use: "digest_plugin:Digest"}\n', "plugins.yaml", environ={})
    assert "plugin 'digest'" in str(caught.value)
    assert "digest_plugin:Digest job 'daily_digest': unknown time zone 'Europe/Berln'" in str(caught.value)
