"""The public plugin API: one import for plugins and adapters, typed configs, the public URL, the store."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

import bot_core.adapters
import bot_core.api
import bot_core.desk
from bot_core.api import EmptyConfig, NotAccepting, Plugin, PluginServices, StateStore
from bot_core.config import ServerConfig, parse_config
from bot_core.desk import Desk
from tests.conftest import FAST_OUTBOX


class GreeterConfig(BaseModel):
    """A config given as the generic parameter."""

    greeting: str = "hello"


class Greeter(Plugin[GreeterConfig]):
    """Config from the generic parameter."""

    name = "greeter"


class Nested(Plugin["Nested.Config"]):
    """Config as a nested class (the older way), still typed."""

    name = "nested"

    class Config(BaseModel):
        size: int = 3


class Bare(Plugin):
    """No config at all."""

    name = "bare"


def test_not_accepting_is_one_class_importable_from_api_adapters_and_desk() -> None:
    # adapters catch it from bot_core.api; code that imported it from bot_core.desk keeps working
    assert bot_core.api.NotAccepting is bot_core.adapters.NotAccepting is bot_core.desk.NotAccepting


def test_the_config_model_comes_from_the_generic_parameter_or_the_nested_class() -> None:
    assert Greeter.Config is GreeterConfig
    assert Nested.Config.__name__ == "Config" and Nested.Config().size == 3
    assert Bare.Config is EmptyConfig
    assert set(bot_core.api.__all__) >= {"Plugin", "Context", "HANDLED", "route", "Inbound", "StateStore"}


def test_public_url_must_be_an_http_url_and_loses_its_trailing_slash() -> None:
    assert ServerConfig(public_url="https://desk.example.com/").public_base_url == "https://desk.example.com"
    assert ServerConfig(host="0.0.0.0", port=9000).public_base_url == "http://0.0.0.0:9000"
    with pytest.raises(ValidationError, match="not an http"):
        ServerConfig(public_url="desk.example.com")


async def _start(tmp_path: Path, url: str, server: str) -> Desk:
    text = f"""
server: {server}
storage: {{database: "{url}"}}
plugins:
  - desk: {{use: "bot_core.testing:MemoryWorkspace"}}
  - web: {{dev_secret_file: "{tmp_path / "web-secret"}", upload_dir: "{tmp_path / "uploads"}"}}
"""
    desk = Desk(parse_config(text, "plugins.yaml", environ={}), outbox_settings=FAST_OUTBOX)
    desk.hold_announcements = True
    await desk.start()
    return desk


async def test_the_web_demo_is_announced_at_the_public_url(tmp_path: Path, sqlite_url: str) -> None:
    desk = await _start(
        tmp_path, sqlite_url, '{host: 127.0.0.1, port: 0, public_url: "https://desk.example.com/"}'
    )
    try:
        web = desk.plugins["web"]
        assert web.services.public_url == "https://desk.example.com"
        assert web.services.http_base_url == "http://127.0.0.1:0"  # in-process fetches keep the bind address
        text = "\n".join(desk.announcements)
        assert "Web chat demo: https://desk.example.com/web/demo" in text
        assert '<script src="https://desk.example.com/web/widget.js"' in text
    finally:
        await desk.stop(timeout=5)


async def test_without_a_public_url_the_bind_address_is_announced(tmp_path: Path, sqlite_url: str) -> None:
    desk = await _start(tmp_path, sqlite_url, "{host: 127.0.0.1, port: 0}")
    try:
        assert desk.plugins["web"].services.public_url == "http://127.0.0.1:0"
        assert "Web chat demo: http://127.0.0.1:0/web/demo" in "\n".join(desk.announcements)
    finally:
        await desk.stop(timeout=5)


async def test_services_store_is_the_plugins_own_state(tmp_path: Path, sqlite_url: str) -> None:
    desk = await _start(tmp_path, sqlite_url, "{host: 127.0.0.1, port: 0}")
    try:
        store = desk.plugins["web"].services.store("notes")
        await store.set("k", {"v": 1})
        assert await StateStore("web", "notes").get("k") == {"v": 1}  # owned by the instance name
        assert await StateStore("desk", "notes").get("k") is None
    finally:
        await desk.stop(timeout=5)


def test_services_without_a_plugin_name_refuse_a_store() -> None:
    with pytest.raises(RuntimeError, match="plugin name"):
        PluginServices(log=logging.getLogger("t")).store("x")


def test_not_accepting_is_a_runtime_error() -> None:
    assert issubclass(NotAccepting, RuntimeError)
