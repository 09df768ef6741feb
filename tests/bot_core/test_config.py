"""Tests of plugins.yaml loading (bot_core.config) and plugin discovery (bot_core.registry)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from bot_core.config import (
    ConfigError,
    ConfigErrorItem,
    DeskConfig,
    LogConfig,
    PluginSpec,
    ServerConfig,
    StorageConfig,
    load_config,
    parse_config,
)
from bot_core.desk import outbox_settings_of
from bot_core.plugin import EmptyConfig, Plugin, PluginKind
from bot_core.registry import PluginNotFound, available_plugins, resolve_plugin

HERE = "tests.bot_core.test_config"


class Greeter(Plugin):
    """A feature plugin with ordinary settings."""

    name = "greeter"

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        greeting: str
        times: int = 1
        tags: list[str] = Field(default_factory=list)


class Bot(Plugin):
    """A channel plugin with secrets."""

    name = "bot"
    kind = PluginKind.CHANNEL

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        token: Annotated[SecretStr, Field(min_length=8)]
        webhook_secret: SecretStr | None = None
        mode: Literal["polling", "webhook"] = "polling"


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str
    password: SecretStr


class Nested(Plugin):
    """A plugin whose secrets sit in a nested model and a list."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        login: Credentials
        api_keys: list[SecretStr] = Field(default_factory=list)


class Bare(Plugin):
    """A plugin without settings."""


def not_a_plugin() -> None:
    """A function, to be referenced where a plugin class is expected."""


def parse(text: str, environ: dict[str, str] | None = None, filename: str = "plugins.yaml") -> DeskConfig:
    return parse_config(textwrap.dedent(text).lstrip("\n"), filename, environ or {})


def errors_of(
    text: str, environ: dict[str, str] | None = None, filename: str = "plugins.yaml"
) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, environ, filename)
    return info.value


def only_error(text: str, environ: dict[str, str] | None = None) -> ConfigErrorItem:
    error = errors_of(text, environ)
    assert len(error.errors) == 1, str(error)
    assert str(error) == str(error.errors[0])
    return error.errors[0]


# ---------------------------------------------------------------------------------------------------
# Valid files


VALID = f"""
storage:
  database: "${{DATABASE_URL:-sqlite://relaydesk.db}}"
  redis: "${{REDIS_URL:-}}"
server: {{host: 0.0.0.0, port: "${{PORT:-8080}}"}}
log: {{level: debug, format: json}}
plugins:
  - greeter: {{}}
  - {HERE}:Bare:
  - hello:
      use: {HERE}:Greeter
      config: {{greeting: hello, times: 2, tags: [a, b]}}
  - bot:
      use: {HERE}.Bot
      config:
        token: "${{BOT_TOKEN}}"
        mode: webhook
"""


def test_valid_file_gives_specs_in_file_order() -> None:
    with pytest.raises(ConfigError):
        parse(VALID, {"BOT_TOKEN": "123456789:abc"})  # "greeter" is not a registered name

    text = VALID.replace("  - greeter: {}", f"  - greeter: {{use: {HERE}:Greeter, config: {{greeting: hi}}}}")
    config = parse(text, {"BOT_TOKEN": "123456789:abc", "PORT": "9000"})

    assert config.storage == StorageConfig(database="sqlite://relaydesk.db", redis="")
    assert config.server == ServerConfig(host="0.0.0.0", port=9000)
    assert config.log == LogConfig(level="DEBUG", format="json")
    assert config.source is None
    assert config.env_vars == {
        "storage.database": ("DATABASE_URL",),
        "storage.redis": ("REDIS_URL",),
        "server.port": ("PORT",),
    }

    names = [spec.instance_name for spec in config.plugins]
    assert names == ["greeter", f"{HERE}:Bare", "hello", "bot"]
    greeter, bare, hello, bot = config.plugins
    assert isinstance(greeter, PluginSpec)
    assert greeter.plugin_class is Greeter
    assert greeter.config == Greeter.Config(greeting="hi")
    assert greeter.line == 7
    assert bare.plugin_class is Bare
    assert isinstance(bare.config, EmptyConfig)
    assert bare.ref == f"{HERE}:Bare"
    assert bare.line == 8
    assert hello.plugin_class is Greeter
    assert hello.ref == f"{HERE}:Greeter"
    assert hello.config == Greeter.Config(greeting="hello", times=2, tags=["a", "b"])
    assert hello.line == 9
    assert bot.plugin_class is Bot
    assert isinstance(bot.config, Bot.Config)
    assert bot.config.token.get_secret_value() == "123456789:abc"
    assert bot.config.mode == "webhook"
    assert bot.line == 12
    assert bot.env_vars == {"token": ("BOT_TOKEN",)}


def test_empty_file_gives_defaults() -> None:
    config = parse("")
    assert config == DeskConfig()
    assert config.plugins == []
    assert config.storage.database == "sqlite://relaydesk.db"
    assert config.server.port == 8080


def test_null_sections_and_null_plugin_settings_mean_defaults() -> None:
    config = parse(
        f"""
        storage:
        server:
        plugins:
          - {HERE}:Bare:
        """
    )
    assert config.storage == StorageConfig()
    assert config.server == ServerConfig()
    assert [spec.plugin_class for spec in config.plugins] == [Bare]


def test_load_config_reads_file_and_sets_source(tmp_path: Path) -> None:
    path = tmp_path / "plugins.yaml"
    path.write_text(f"plugins:\n  - g:\n      use: {HERE}:Greeter\n      config: {{greeting: yo}}\n")
    config = load_config(path, environ={})
    assert config.source == path
    assert [(spec.instance_name, spec.line) for spec in config.plugins] == [("g", 2)]


def test_load_config_names_the_file_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "desk.yaml"
    path.write_text("log: {level: LOUD}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value).startswith(f"{path}:1: field 'log.level': Input should be")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value) == f"{path}: cannot read the file: No such file or directory"


def test_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAYDESK_TEST_PORT", "8181")
    config = parse_config("server: {port: '${RELAYDESK_TEST_PORT}'}\n")
    assert config.server.port == 8181


# ---------------------------------------------------------------------------------------------------
# Interpolation


@pytest.mark.parametrize(
    ("value", "environ", "expected"),
    [
        ("${DB:-sqlite://x.db}", {}, "sqlite://x.db"),
        ("${DB:-sqlite://x.db}", {"DB": ""}, "sqlite://x.db"),
        ("${DB:-sqlite://x.db}", {"DB": "postgres://h/db"}, "postgres://h/db"),
        ("${DB}", {"DB": "postgres://h/db"}, "postgres://h/db"),
        (
            "postgres://${HOST}:${PORT:-5432}/${NAME:-desk}",
            {"HOST": "db", "NAME": "prod"},
            "postgres://db:5432/prod",
        ),
        ("literal $${NOT_A_VAR} and ${A}", {"A": "x"}, "literal ${NOT_A_VAR} and x"),
        ("cost: $5, ${A}$", {"A": "x"}, "cost: $5, x$"),
        ("${EMPTY:-}", {}, ""),
    ],
)
def test_interpolation(value: str, environ: dict[str, str], expected: str) -> None:
    config = parse_config(f"storage: {{database: 'sqlite://a.db', redis: '{value}'}}\n", "p.yaml", environ)
    assert config.storage.redis == expected


def test_interpolation_only_touches_values_not_keys_or_non_strings() -> None:
    config = parse(
        f"""
        plugins:
          - g:
              use: {HERE}:Greeter
              config: {{greeting: "${{G}}", times: 3, tags: ["${{T1}}", "$${{T2}}"]}}
        """,
        {"G": "hey", "T1": "one"},
    )
    assert config.plugins[0].config == Greeter.Config(greeting="hey", times=3, tags=["one", "${T2}"])
    assert config.plugins[0].env_vars == {"greeting": ("G",), "tags[0]": ("T1",)}


def test_interpolated_number_is_validated_after_interpolation() -> None:
    error = only_error("server:\n  port: ${PORT}\n", {"PORT": "eighty"})
    assert error == ConfigErrorItem(
        "plugins.yaml",
        2,
        None,
        "server.port",
        "Input should be a valid integer, unable to parse string as an integer (value from ${PORT})",
    )


def test_missing_environment_variable() -> None:
    text = f"""
    plugins:
      - {HERE}:Bare:
      - echo2:
          use: {HERE}:Greeter
          config: {{greeting: hi}}
      - telegram:
          use: {HERE}:Bot
          config:
            token: "${{TELEGRAM_TOKEN}}"
    """
    error = errors_of(text)
    assert str(error) == (
        "plugins.yaml:9: plugin 'telegram', field 'token': environment variable TELEGRAM_TOKEN is not set"
    )
    assert error.errors == [
        ConfigErrorItem(
            "plugins.yaml", 9, "telegram", "token", "environment variable TELEGRAM_TOKEN is not set"
        )
    ]


def test_empty_environment_variable_without_default() -> None:
    item = only_error("storage: {redis: '${REDIS_URL}'}\n", {"REDIS_URL": ""})
    assert (item.line, item.field) == (1, "storage.redis")
    assert item.message == "environment variable REDIS_URL is empty (write ${REDIS_URL:-} to allow that)"


@pytest.mark.parametrize("value", ["${unclosed", "${BAD NAME}", "${A-b}", "${}"])
def test_malformed_reference(value: str) -> None:
    item = only_error(f"storage:\n  database: 'sqlite://a.db'\n  redis: '{value}'\n")
    assert (item.line, item.field) == (3, "storage.redis")
    assert item.message.startswith("malformed ${...} reference")


# ---------------------------------------------------------------------------------------------------
# Secrets


def test_secret_written_literally_is_refused_without_echoing_it() -> None:
    text = f"""
    plugins:
      - tg:
          use: {HERE}:Bot
          config:
            mode: polling
            token: "98765:SUPERSECRETVALUE"
    """
    item = only_error(text)
    assert (item.file, item.line, item.plugin, item.field) == ("plugins.yaml", 6, "tg", "token")
    assert "write ${VAR} and set VAR in the environment: secrets never go in plugins.yaml" in item.message
    assert "SUPERSECRETVALUE" not in str(errors_of(text))


def test_optional_secret_written_literally_is_refused() -> None:
    item = only_error(
        f"""
        plugins:
          - tg:
              use: {HERE}:Bot
              config: {{token: "${{TOKEN}}", webhook_secret: 12345678}}
        """,
        {"TOKEN": "abcdefghij"},
    )
    assert (item.line, item.plugin, item.field) == (4, "tg", "webhook_secret")
    assert "secrets never go in plugins.yaml" in item.message


def test_secret_with_a_literal_default_is_refused() -> None:
    item = only_error(
        f"""
        plugins:
          - tg:
              use: {HERE}:Bot
              config: {{token: "${{TOKEN:-defaultsecret}}"}}
        """,
        {"TOKEN": "abcdefghij"},
    )
    assert (item.line, item.plugin, item.field) == (4, "tg", "token")
    assert "defaultsecret" not in item.message
    assert "cannot have a default" in item.message


def test_secrets_in_nested_models_and_lists_are_checked() -> None:
    error = errors_of(
        f"""
        plugins:
          - n:
              use: {HERE}:Nested
              config:
                login: {{user: me, password: hunter2hunter2}}
                api_keys:
                  - "${{KEY1}}"
                  - plainkey123
        """,
        {"KEY1": "k1"},
    )
    assert [(e.line, e.plugin, e.field) for e in error.errors] == [
        (5, "n", "login.password"),
        (8, "n", "api_keys[1]"),
    ]
    assert "hunter2" not in str(error)
    assert "plainkey123" not in str(error)


def test_invalid_secret_value_is_not_echoed() -> None:
    error = errors_of(
        f"""
        plugins:
          - tg:
              use: {HERE}:Bot
              config:
                token: "${{TOKEN}}"
        """,
        {"TOKEN": "zq9x"},
    )
    assert [(e.line, e.plugin, e.field) for e in error.errors] == [(5, "tg", "token")]
    assert "at least 8" in str(error)
    assert "zq9x" not in str(error)


def test_yaml_syntax_error_does_not_echo_the_line() -> None:
    item = only_error("plugins:\n  - tg: {token: SECRETSECRET: x}\n")
    assert item.line == 2
    assert item.message.startswith("invalid YAML: ")
    assert "SECRETSECRET" not in item.message


# ---------------------------------------------------------------------------------------------------
# Error kinds


def test_yaml_syntax_error_names_the_line() -> None:
    item = only_error("storage:\n  database: x\nplugins:\n  - a: {b: c\n  - d\n")
    assert item.file == "plugins.yaml"
    assert item.line is not None and item.line >= 4
    assert item.message.startswith("invalid YAML: ")
    assert str(item).startswith(f"plugins.yaml:{item.line}: invalid YAML: ")


def test_unknown_plugin_name_lists_known_names() -> None:
    item = only_error("plugins:\n  - gizmo_made_up_xyz: {}\n")
    assert (item.line, item.plugin, item.field) == (2, "gizmo_made_up_xyz", None)
    assert "unknown plugin 'gizmo_made_up_xyz'" in item.message
    for known in available_plugins():
        assert known in item.message
    assert str(item).startswith("plugins.yaml:2: plugin 'gizmo_made_up_xyz': unknown plugin")


def test_unknown_plugin_in_use_points_at_use() -> None:
    item = only_error("plugins:\n  - mine:\n      use: gizmo_made_up_xyz\n")
    assert (item.line, item.plugin, item.field) == (3, "mine", "use")
    assert "unknown plugin 'gizmo_made_up_xyz'" in item.message


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("tests.bot_core.no_such_module:Thing", "module 'tests.bot_core.no_such_module' not found"),
        ("tests.bot_core.no_such_module.Thing", "module 'tests.bot_core.no_such_module' not found"),
        (f"{HERE}:NoSuchClass", f"module '{HERE}' has no attribute 'NoSuchClass'"),
        (f"{HERE}.NoSuchClass", f"module '{HERE}' has no attribute 'NoSuchClass'"),
        (f"{HERE}:Greeter.Missing", f"'{HERE}.Greeter' has no attribute 'Missing'"),
        (f"{HERE}:not_a_plugin", "is not a Plugin subclass: it is a function"),
        (f"{HERE}:Credentials", "is not a Plugin subclass: class Credentials does not derive from Plugin"),
        ("bot_core.plugin:Plugin", "is the Plugin base class itself"),
        ("a..b", "invalid plugin reference"),
        ("a.b:", "invalid plugin reference"),
    ],
)
def test_dotted_path_errors(ref: str, expected: str) -> None:
    with pytest.raises(PluginNotFound) as info:
        resolve_plugin(ref)
    assert expected in str(info.value)
    assert info.value.ref == ref


def test_dotted_path_error_in_config() -> None:
    item = only_error(f"plugins:\n  - x:\n      use: {HERE}:NoSuchClass\n")
    assert (item.line, item.plugin, item.field) == (3, "x", "use")
    assert (
        item.message
        == f"cannot resolve plugin '{HERE}:NoSuchClass': module '{HERE}' has no attribute 'NoSuchClass'"
    )


def test_module_with_a_broken_import_is_reported_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "relaydesk_broken_pkg_xyz.py").write_text("import relaydesk_missing_dep_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for ref in ("relaydesk_broken_pkg_xyz:Thing", "relaydesk_broken_pkg_xyz.Thing"):
        with pytest.raises(PluginNotFound) as info:
            resolve_plugin(ref)
        assert "importing module 'relaydesk_broken_pkg_xyz' failed" in str(info.value)
        assert "relaydesk_missing_dep_xyz" in str(info.value)


def test_resolve_plugin_accepts_both_dotted_forms() -> None:
    assert resolve_plugin(f"{HERE}:Greeter") is Greeter
    assert resolve_plugin(f"{HERE}.Greeter") is Greeter
    assert resolve_plugin(f" {HERE}:Bot ") is Bot


def test_unknown_name_error_from_registry() -> None:
    with pytest.raises(PluginNotFound) as info:
        resolve_plugin("gizmo_made_up_xyz")
    assert str(info.value).startswith("unknown plugin 'gizmo_made_up_xyz'")
    assert "package.module:Class" in str(info.value)


def test_available_plugins_maps_names_to_targets() -> None:
    found = available_plugins()
    assert list(found) == sorted(found)
    assert all(isinstance(target, str) and ":" in target for target in found.values())


def test_wrong_field_type_points_at_the_field() -> None:
    item = only_error(
        f"""
        plugins:
          - g:
              use: {HERE}:Greeter
              config:
                greeting: hi
                times: many
        """
    )
    assert (item.line, item.plugin, item.field) == (6, "g", "times")
    assert item.message == "Input should be a valid integer, unable to parse string as an integer"
    assert "many" not in item.message


def test_wrong_type_inside_a_list() -> None:
    item = only_error(
        f"""
        plugins:
          - g:
              use: {HERE}:Greeter
              config:
                greeting: hi
                tags:
                  - ok
                  - [not, a, string]
        """
    )
    assert (item.line, item.plugin, item.field) == (8, "g", "tags[1]")
    assert item.message == "Input should be a valid string"


def test_missing_required_field_points_at_the_plugin() -> None:
    text = f"""
    plugins:
      - {HERE}:Bare:
      - g:
          use: {HERE}:Greeter
          config:
            times: 2
    """
    item = only_error(text)
    assert item == ConfigErrorItem("plugins.yaml", 3, "g", "greeting", "required field is missing")
    assert str(item) == "plugins.yaml:3: plugin 'g', field 'greeting': required field is missing"


def test_missing_required_nested_field_points_at_its_parent() -> None:
    item = only_error(
        f"""
        plugins:
          - n:
              use: {HERE}:Nested
              config:
                login:
                  password: "${{PW}}"
        """,
        {"PW": "x"},
    )
    assert (item.line, item.plugin, item.field) == (5, "n", "login.user")
    assert item.message == "required field is missing"


def test_missing_required_field_of_a_plain_entry_points_at_the_plugin() -> None:
    item = only_error(f'plugins:\n  - "{HERE}:Greeter":\n')
    assert (item.line, item.plugin, item.field) == (2, f"{HERE}:Greeter", "greeting")


def test_unknown_field_points_at_the_field_and_suggests() -> None:
    item = only_error(
        f"""
        plugins:
          - g:
              use: {HERE}:Greeter
              config:
                greeting: hi
                time: 3
        """
    )
    assert (item.line, item.plugin, item.field) == (6, "g", "time")
    assert item.message == "unknown field (did you mean 'times'?); known fields: greeting, tags, times"


def test_duplicate_instance_names() -> None:
    item = only_error(
        f"""
        plugins:
          - g: {{use: {HERE}:Greeter, config: {{greeting: a}}}}
          - {HERE}:Bare:
          - g: {{use: {HERE}:Greeter, config: {{greeting: b}}}}
        """
    )
    assert (item.line, item.plugin, item.field) == (4, "g", None)
    assert item.message.startswith("duplicate plugin instance name 'g' (first on line 2)")


def test_plugins_not_a_list() -> None:
    item = only_error(f"server: {{port: 80}}\nplugins:\n  greeter: {{use: {HERE}:Greeter}}\n")
    assert (item.line, item.plugin, item.field) == (2, None, "plugins")
    assert item.message == "'plugins' must be a list of entries like '- name: {settings}', found a mapping"


def test_entry_with_settings_not_indented() -> None:
    item = only_error(f"plugins:\n  - {HERE}:Greeter:\n    greeting: hi\n")
    assert (item.line, item.field) == (2, "plugins[0]")
    assert "indent the settings under" in item.message


def test_entry_that_is_a_bare_string() -> None:
    item = only_error("plugins:\n  - echo\n")
    assert (item.line, item.field) == (2, "plugins[0]")
    assert "write '- echo: {}'" in item.message


def test_settings_that_are_not_a_mapping() -> None:
    item = only_error(f'plugins:\n  - "{HERE}:Greeter": hello\n')
    assert (item.line, item.plugin) == (2, f"{HERE}:Greeter")
    assert item.message.startswith("the settings must be a mapping, found a string")


def test_alias_with_unknown_key() -> None:
    item = only_error(
        f"plugins:\n  - g:\n      use: {HERE}:Greeter\n      greeting: hi\n      config: {{greeting: hi}}\n"
    )
    assert (item.line, item.plugin, item.field) == (4, "g", "greeting")
    assert "only 'use' and 'config' are allowed" in item.message


def test_unknown_top_level_key() -> None:
    item = only_error("storage: {}\nplugin: []\n")
    assert (item.line, item.plugin, item.field) == (2, None, "plugin")
    assert (
        item.message
        == "unknown top-level key 'plugin' (did you mean 'plugins'?); allowed: storage, server, log, outbox, plugins, teams"
    )


def test_section_field_errors() -> None:
    error = errors_of("server:\n  host: localhost\n  port: 70000\nlog:\n  format: xml\n  colour: true\n")
    assert [(e.line, e.plugin, e.field) for e in error.errors] == [
        (3, None, "server.port"),
        (5, None, "log.format"),
        (6, None, "log.colour"),
    ]
    assert error.errors[0].message == "Input should be less than or equal to 65535"
    assert error.errors[2].message.startswith("unknown field")


def test_top_level_must_be_a_mapping() -> None:
    item = only_error("- a\n- b\n")
    assert item.line == 1
    assert "the top level must be a mapping" in item.message


def test_duplicate_yaml_keys() -> None:
    item = only_error("server: {port: 1}\nlog: {}\nserver: {port: 2}\n")
    assert (item.line, item.field) == (3, "server")
    assert item.message == "duplicate key 'server' (first on line 1)"


def test_all_errors_are_collected_in_file_order() -> None:
    text = f"""
    storage:
      database: ""
    plugins:
      - g:
          use: {HERE}:Greeter
          config: {{greeting: hi, times: x}}
      - gizmo_made_up_xyz: {{}}
      - tg:
          use: {HERE}:Bot
          config: {{token: literal-token-value}}
      - g: {{use: {HERE}:Greeter, config: {{greeting: hi}}}}
    extra: 1
    """
    error = errors_of(text, filename="conf/plugins.yaml")
    assert [(e.line, e.plugin, e.field) for e in error.errors] == [
        (2, None, "storage.database"),
        (6, "g", "times"),
        (7, "gizmo_made_up_xyz", None),
        (10, "tg", "token"),
        (11, "g", None),
        (12, None, "extra"),
    ]
    lines = str(error).splitlines()
    assert len(lines) == 6
    assert lines[0] == str(error.errors[0])
    assert lines[0].startswith("conf/plugins.yaml:2: field 'storage.database': ")
    assert all(line.startswith("conf/plugins.yaml:") for line in lines)
    assert "literal-token-value" not in str(error)
    assert "secrets never go in plugins.yaml" in lines[3]


def test_config_error_needs_items() -> None:
    with pytest.raises(ValueError, match="at least one error"):
        ConfigError([])


class Picky(Plugin):
    """A plugin whose custom validator quotes its input (as some plugin authors will)."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        api_key: SecretStr

        @field_validator("api_key")
        @classmethod
        def _check(cls, value: SecretStr) -> SecretStr:
            raw = value.get_secret_value()
            if not raw.startswith("pk_"):
                raise ValueError(f"{raw} does not start with pk_")
            return value


def test_custom_validator_message_is_scrubbed_of_secrets() -> None:
    item = only_error(
        f"plugins:\n  - p:\n      use: {HERE}:Picky\n      config: {{api_key: '${{KEY}}'}}\n",
        {"KEY": "sk_live_abcdef"},
    )
    assert (item.line, item.plugin, item.field) == (4, "p", "api_key")
    assert "sk_live_abcdef" not in item.message
    assert item.message == "Value error, *** does not start with pk_ (value from ${KEY})"


def test_yaml_anchors_and_aliases_work() -> None:
    config = parse(
        f"""
        plugins:
          - a: &common {{use: {HERE}:Greeter, config: {{greeting: hi, times: 2}}}}
          - b: *common
        """
    )
    assert [(spec.instance_name, spec.line, spec.config) for spec in config.plugins] == [
        ("a", 2, Greeter.Config(greeting="hi", times=2)),
        ("b", 3, Greeter.Config(greeting="hi", times=2)),
    ]


@pytest.mark.parametrize("tagged", ["!!python/object:os.system {}", "!custom [1]"])
def test_unsupported_yaml_tags_are_refused(tagged: str) -> None:
    item = only_error(f"server: {tagged}\n")
    assert (item.line, item.field) == (1, "server")
    assert item.message.startswith("invalid YAML: unsupported tag")


def test_use_that_is_not_a_string() -> None:
    item = only_error("plugins:\n  - g: {use: 3}\n")
    assert (item.line, item.plugin, item.field) == (2, "g", "use")
    assert item.message.startswith("'use' must name a plugin")


def test_the_outbox_section_takes_durations_and_reaches_the_outbox() -> None:
    config = parse_config("outbox:\n  retry_window: 6h\n  notice_after: 90s\n", "plugins.yaml", environ={})
    assert (config.outbox.retry_window, config.outbox.notice_after) == (6 * 3600, 90)
    settings = outbox_settings_of(config)
    assert (settings.retry_window, settings.notice_after, settings.max_backoff) == (21600, 90, 120)
    defaults = parse_config("plugins: []\n", "plugins.yaml", environ={}).outbox
    assert (defaults.retry_window, defaults.notice_after) == (86400, 180)  # 24 h, 3 min
    item = only_error("outbox:\n  retry_window: soon\n")
    assert (item.line, item.field) == (2, "outbox.retry_window")
    assert "not a duration" in item.message and "24h" in item.message
