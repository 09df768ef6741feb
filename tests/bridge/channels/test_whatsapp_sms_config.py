"""The WhatsApp and SMS channels' settings: secrets only from the environment, bad values named clearly."""

from __future__ import annotations

import pytest

from bot_core.config import ConfigError, parse_config

WA = 'use: "bridge.channels.whatsapp:WhatsAppChannel"'
SMS = 'use: "bridge.channels.sms:SmsChannel"'
ENV = {
    "T": "EAAGsecret-token-value",
    "S": "app-secret-value-123",
    "V": "verify-me",
    "A": "twilio-auth-token-xyz",
}
WA_OK = 'access_token: "${T}", app_secret: "${S}", verify_token: "${V}", phone_number_id: "106540352242922"'
SMS_OK = 'account_sid: "AC' + "0" * 32 + '", auth_token: "${A}", from_number: "+15005550006"'


def _parse(entry: str, config: str) -> None:
    parse_config(f"plugins:\n  - chan: {{{entry}, config: {{{config}}}}}\n", "plugins.yaml", environ=ENV)


def test_good_settings_load() -> None:
    _parse(WA, WA_OK)
    _parse(SMS, SMS_OK)
    _parse(SMS, SMS_OK.replace('from_number: "+15005550006"', 'messaging_service_sid: "MG' + "a" * 32 + '"'))


@pytest.mark.parametrize(
    ("entry", "config", "leaked"),
    [
        (WA, WA_OK.replace('"${T}"', '"EAAGliteraltoken123"'), "EAAGliteraltoken123"),
        (WA, WA_OK.replace('"${S}"', '"literal-app-secret"'), "literal-app-secret"),
        (SMS, SMS_OK.replace('"${A}"', '"literal-auth-token"'), "literal-auth-token"),
    ],
)
def test_a_literal_secret_is_refused_without_being_shown(entry: str, config: str, leaked: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _parse(entry, config)
    assert "secret written literally" in str(caught.value) and leaked not in str(caught.value)


@pytest.mark.parametrize(
    ("entry", "config", "problem"),
    [
        (WA, WA_OK.replace("106540352242922", "my-number"), "phone_number_id"),
        (WA, WA_OK + ', api_version: "21"', "api_version"),
        (WA, WA_OK + ', api_base: "graph.facebook.com"', "http:// or https://"),
        (WA, WA_OK + ", reopen_template: {language: en_US}", "name"),
        (
            SMS,
            SMS_OK.replace('from_number: "+15005550006"', 'public_url: "https://desk.example"'),
            "from_number",
        ),
        (SMS, SMS_OK.replace("+15005550006", "5005550006"), "E.164"),
        (SMS, SMS_OK.replace("AC" + "0" * 32, "AC123"), "account_sid"),
        (SMS, SMS_OK + ", warn_segments: 1", "warn_segments"),
    ],
)
def test_bad_settings_get_a_clear_error(entry: str, config: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _parse(entry, config)
    assert problem in str(caught.value) and "plugins.yaml:2" in str(caught.value)
