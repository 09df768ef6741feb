"""A customer's time zone and locale: checked, kept on the customer, shown on the card; a bad one is
logged and not stored."""

from __future__ import annotations

import logging

import pytest

from bot_core.locales import valid_locale, valid_timezone
from storage.models import Customer, Identity, Team
from tests.bot_core.test_relay_loop import doubles
from tests.conftest import DeskFactory


async def test_time_zone_and_locale_reach_the_card_and_a_bad_time_zone_is_logged_not_stored(
    database_url: str, make_desk: DeskFactory, caplog: pytest.LogCaptureFixture
) -> None:
    desk = await make_desk(database_url)
    channel, workspace = doubles(desk)
    await channel.customer_writes("z1", "hi", attributes={"timezone": "America/Sao_Paulo", "locale": "pt_br"})
    assert await desk.wait_settled(10)
    card = workspace.room_of("z1").card
    assert card is not None
    assert (card.attributes["time zone"], card.attributes["locale"]) == ("America/Sao_Paulo", "pt-BR")

    caplog.set_level(logging.WARNING, logger="relaydesk.customers")
    await channel.customer_writes("z2", "hi", attributes={"timezone": "Mars/Olympus_Mons", "locale": "de-CH"})
    assert await desk.wait_settled(10)
    customer = await Customer.get(id=(await Identity.get(external_id="z2")).customer_id)
    assert (customer.timezone, customer.locale) == (None, "de-CH")
    assert "timezone" not in customer.attributes
    bad = [r for r in caplog.records if r.getMessage() == "ignored a time zone that is not valid"]
    assert len(bad) == 1 and getattr(bad[0], "timezone", None) == "Mars/Olympus_Mons"
    card = workspace.room_of("z2").card
    assert card is not None and "time zone" not in card.attributes

    # a later message with a good one replaces nothing it should not, and refreshes the card
    await channel.customer_writes("z2", "again", attributes={"timezone": "Europe/Zurich", "locale": "de-CH"})
    assert await desk.wait_settled(10)
    await customer.refresh_from_db()
    assert customer.timezone == "Europe/Zurich"
    card = workspace.room_of("z2").card
    assert card is not None and card.attributes["time zone"] == "Europe/Zurich"

    await Team.create(name="night shift", timezone="Asia/Tokyo")  # teams have a time zone too
    assert (await Team.get(name="night shift")).timezone == "Asia/Tokyo"


def test_time_zone_names_and_language_tags_are_checked() -> None:
    assert valid_timezone("Europe/Berlin") == "Europe/Berlin"
    assert valid_timezone("UTC") == "UTC"
    for bad in ("", "Mars/Base", "../../etc/passwd", "/etc/localtime", "Europe/" + "x" * 80):
        assert valid_timezone(bad) is None, bad
    assert valid_locale("en") == "en"
    assert valid_locale("zh-hant-tw") == "zh-Hant-TW"
    assert valid_locale("pt_BR") == "pt-BR"
    for bad in ("", "e", "en--US", "en US", "<script>", "x" * 40):
        assert valid_locale(bad) is None, bad
