"""``relaydesk check`` refuses secrets that are not exactly one ``${VAR}``, and passwords in storage URLs."""

from __future__ import annotations

import pytest

from tests.bot_core.test_config import HERE, errors_of, only_error, parse


@pytest.mark.parametrize(
    "written",
    ["literal-${TOKEN:-}-more", "prefix${TOKEN}", "${TOKEN}suffix", "${TOKEN}${OTHER}", "${TOKEN:-}x"],
)
def test_a_secret_with_text_around_its_reference_is_refused_naming_where(written: str) -> None:
    item = only_error(
        f"""
        plugins:
          - tg:
              use: {HERE}:Bot
              config:
                token: "{written}"
        """,
        {"TOKEN": "12345:abcdefgh", "OTHER": "zzzzzzzz"},
    )
    assert (item.file, item.line, item.plugin, item.field) == ("plugins.yaml", 5, "tg", "token")
    assert "exactly one ${VAR} reference" in item.message
    for value in ("literal", "prefix", "suffix", "abcdefgh", "zzzzzzzz"):
        assert value not in item.message


@pytest.mark.parametrize("written", ["${TOKEN}", "${TOKEN:-}"])
def test_a_secret_that_is_one_reference_is_accepted(written: str) -> None:
    config = parse(
        f"""
        plugins:
          - tg:
              use: {HERE}:Bot
              config: {{token: "{written}"}}
        """,
        {"TOKEN": "12345:abcdefgh"},
    )
    assert config.plugins[0].config.token.get_secret_value() == "12345:abcdefgh"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("key", "written"),
    [
        ("database", "postgres://desk:hunter2@db/desk"),
        ("database", "${DATABASE_URL:-postgres://desk:hunter2@db/desk}"),  # a default is written too
        ("database", "postgres://desk:pre${DB_PASSWORD}@db/desk"),
        ("redis", "redis://:hunter2@cache:6379/0"),
    ],
)
def test_a_password_written_in_a_storage_url_is_refused(key: str, written: str) -> None:
    item = only_error(f'storage:\n  {key}: "{written}"\n', {"DB_PASSWORD": "x"})
    assert (item.line, item.plugin, item.field) == (2, None, f"storage.{key}")
    assert "password written in plugins.yaml" in item.message and "hunter2" not in item.message


@pytest.mark.parametrize(
    "written",
    [
        "${DATABASE_URL}",
        "postgres://desk:${DB_PASSWORD}@db/desk",
        "postgres://desk@db/desk",
        "postgres://${HOST}:${PORT:-5432}/desk",
        "sqlite://relaydesk.db",
    ],
)
def test_a_storage_url_whose_password_comes_from_the_environment_is_accepted(written: str) -> None:
    environ = {"DATABASE_URL": "postgres://u:secret@h/d", "DB_PASSWORD": "secret", "HOST": "db"}
    assert parse(f'storage:\n  database: "{written}"\n', environ).storage.database


def test_the_metrics_token_is_a_secret() -> None:
    item = only_error("server:\n  metrics_token: plainly-written\n")
    assert (item.field, item.line) == ("server.metrics_token", 2)
    assert "plainly-written" not in str(errors_of("server:\n  metrics_token: plainly-written\n"))
    config = parse("server:\n  metrics_token: ${RELAYDESK_METRICS_TOKEN:-}\n")
    assert config.server.metrics_token is None  # optional: unset means no token
