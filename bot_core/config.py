"""Loading and validating plugins.yaml, the one configuration file of a relaydesk deployment.

File format
===========

.. code-block:: yaml

    storage:
      database: "${DATABASE_URL:-sqlite://relaydesk.db}"
      redis: "${REDIS_URL:-}"          # empty: in-process bus
      redis_cluster: false             # true: REDIS_URL is a node of a Redis Cluster
    server: {host: 127.0.0.1, port: 8080}
    log: {level: INFO, format: json}     # or text
    outbox: {retry_window: 24h, notice_after: 3m}
    plugins:
      - echo: {}                         # a registered name, no settings
      - web:                             # `name:` alone (null) means "no settings" too
      - telegram:
          token: "${TELEGRAM_TOKEN}"     # secrets always come from the environment
          mode: polling
      - orders:                          # an alias: `use` names the class
          use: "mypkg.plugins:OrderStatus"   # a registered name or a dotted path
          config: {shop_api: "https://shop.example.com/api"}

Top level
    Only ``storage``, ``server``, ``log``, ``outbox``, ``plugins`` and ``teams`` are allowed; each may be
    left out (defaults apply). The first four are validated by :class:`StorageConfig`, :class:`ServerConfig`,
    :class:`LogConfig` and :class:`OutboxConfig`; ``teams`` maps team names to :class:`TeamConfig`
    (``teams: {billing: {workspace: matrix_billing}}``: which workspace hosts the team's rooms).

Plugins
    ``plugins`` is a list, in the order handlers run. Each entry is a mapping with exactly one key, the
    *instance name*, which must be unique in the file:

    * ``name: {settings}`` or ``name:`` (no settings): ``name`` is also the plugin reference, resolved by
      :func:`bot_core.registry.resolve_plugin` (a name registered in the ``relaydesk.plugins``
      entry-point group, or a dotted path ``package.module:Class`` / ``package.module.Class``);
    * ``name: {use: ref, config: {settings}}``: an alias, to run a plugin class under another name (two
      instances of one class, or a class given by dotted path). A settings mapping that contains the
      key ``use`` is always read this way, so ``use`` cannot be a plugin setting.

    The settings are validated with the plugin class's pydantic ``Config`` model.

Environment variables
    Inside any string value (not in keys), ``${VAR}`` is replaced by the value of the environment
    variable ``VAR``; it is an error when ``VAR`` is unset or empty. ``${VAR:-default}`` uses
    ``default`` when ``VAR`` is unset or empty (``${VAR:-}`` gives an empty string); the default is
    taken literally and cannot contain ``}``. Several references may appear in one string
    (``"${HOST}:${PORT:-8080}"``), and ``$${`` stands for a literal ``${``. Interpolation happens
    before validation, so ``port: ${PORT:-8080}`` still validates as an integer.

Secrets
    A setting whose type is pydantic ``SecretStr``/``SecretBytes`` (optionally ``| None``, or inside a
    nested model, list or dict) must be exactly one ``${VAR}`` (or ``${VAR:-}`` when optional): a
    literal value, text around the reference (``literal-${VAR}``), two references, or a
    ``${VAR:-default}`` with a non-empty default, is refused. So is a password written in the
    ``storage.database`` or ``storage.redis`` URL (the whole URL or the password alone must come
    from a variable). Error messages never include the values of settings.

Errors
    Every problem found is reported at once in a :class:`ConfigError`, one line each, like
    ``plugins.yaml:7: plugin 'telegram', field 'token': environment variable TELEGRAM_TOKEN is not set``.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretBytes,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from bot_core.plugin import Plugin
from bot_core.registry import PluginNotFound, resolve_plugin

__all__ = [
    "ConfigError",
    "ConfigErrorItem",
    "DeskConfig",
    "LogConfig",
    "OutboxConfig",
    "PluginSpec",
    "ServerConfig",
    "StorageConfig",
    "TeamConfig",
    "load_config",
    "parse_config",
]

DocPath = tuple[Any, ...]
"""A position in the YAML document: mapping keys and list indexes from the root."""


# --------------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class ConfigErrorItem:
    """One problem in a config file: where it is (file, 1-based line, plugin instance, field) and what."""

    file: str
    line: int | None
    plugin: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts: list[str] = []
        if self.plugin is not None:
            parts.append(f"plugin {self.plugin!r}")
        if self.field is not None:
            parts.append(f"field {self.field!r}")
        context = ", ".join(parts)
        return f"{where}: {context}: {self.message}" if context else f"{where}: {self.message}"


class ConfigError(ValueError):
    """The config file is invalid; ``str()`` lists every problem, one per line, in file order.

    ``errors`` keeps them as :class:`ConfigErrorItem` for programs (the CLI, reload reports, tests).
    """

    def __init__(self, errors: Sequence[ConfigErrorItem]) -> None:
        if not errors:
            raise ValueError("ConfigError needs at least one error")
        self.errors: list[ConfigErrorItem] = list(errors)
        super().__init__("\n".join(str(item) for item in self.errors))


# --------------------------------------------------------------------------------------------------
# Models


class StorageConfig(BaseModel):
    """The ``storage`` section: where conversations live and which bus connects the processes."""

    model_config = ConfigDict(extra="forbid")

    database: str = Field(default="sqlite://relaydesk.db", min_length=1)
    """A database URL: ``sqlite://path.db`` or ``postgres://user:pass@host/db``."""
    redis: str = ""
    """A Redis URL for the cross-process bus; empty means an in-process bus (a single process)."""
    redis_cluster: bool = False
    """``redis`` is any node of a Redis Cluster: connect with the cluster client (docs/production.md)."""

    @field_validator("redis", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        return "" if value is None else value


class ServerConfig(BaseModel):
    """The ``server`` section: where relaydesk's HTTP server (webhooks, health, metrics) listens."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    health_degraded_after: float = Field(default=60.0, gt=0)
    """Seconds an adapter's receiving loop may fail before ``/healthz`` says ``degraded`` (still 200)."""
    health_down_after: float = Field(default=300.0, gt=0)
    """Seconds of failing after which ``/healthz`` says ``down`` and answers 503 (restart me)."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """Reverse proxies (addresses or CIDR networks) whose ``X-Forwarded-For`` names the client."""
    header_timeout: float = Field(default=15.0, gt=0)
    """Seconds a client has to send a request's headers (also how long an idle connection stays open)."""
    body_timeout: float = Field(default=120.0, gt=0)
    """Seconds a client has to send a request's whole body once its headers arrived (HTTP 408 after)."""

    @model_validator(mode="after")
    def _down_after_degraded(self) -> ServerConfig:
        if self.health_down_after <= self.health_degraded_after:
            raise ValueError("health_down_after must be greater than health_degraded_after")
        return self

    metrics_token: SecretStr | None = None
    """When set (``${RELAYDESK_METRICS_TOKEN}``), ``/metrics`` answers only ``Authorization: Bearer <it>``."""
    metrics_host: str | None = None
    """The address of ``metrics_port`` (default: ``host``)."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve ``/metrics`` on this port only (not on ``port``): e.g. an address only the monitoring reaches."""

    download_link_ttl: float = Field(default=30 * 24 * 3600, ge=0)
    """Seconds a file link relaydesk hands out stays valid (0: forever); an expired link answers 410."""
    downloads_per_minute: int = Field(default=60, ge=1)
    """File downloads per client address, conversation and minute (also the burst), over every worker; then 429."""
    public_url: str | None = None
    """Where the outside world reaches this server (``https://desk.example.com``, behind a proxy or tunnel):
    links platforms and people fetch start here. Default: ``http://host:port``, the bind address."""

    @field_validator("public_url", mode="before")
    @classmethod
    def _public_url(cls, value: object) -> object:
        if value in ("", None):
            return None
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/")

    @property
    def bind_url(self) -> str:
        """``http://host:port``: the address the HTTP server binds."""
        return f"http://{self.host}:{self.port}"

    @property
    def public_base_url(self) -> str:
        """``public_url`` when set, else the bind address."""
        return self.public_url or self.bind_url

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or a CIDR network") from None
        return value


class LogConfig(BaseModel):
    """The ``log`` section: level and output format of relaydesk's logs."""

    model_config = ConfigDict(extra="forbid")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    format: Literal["json", "text"] = "text"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?\s*\Z")
_UNIT_SECONDS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def _seconds(value: object) -> object:
    """A duration as seconds: a number, or a string like ``90s``, ``3m``, ``24h``, ``1d``."""
    if isinstance(value, str):
        match = _DURATION.match(value.lower())
        if match is None:
            raise ValueError(f"{value!r} is not a duration: write seconds, or e.g. 90s, 3m, 24h, 1d")
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


class OutboxConfig(BaseModel):
    """The ``outbox`` section: how long deliveries are retried through an outage, and when people hear of it.

    Durations are seconds or strings like ``90s``, ``3m``, ``24h``, ``1d``. Rate limits (429) are always
    waited out and never count against the window.
    """

    model_config = ConfigDict(extra="forbid")

    retry_window: float = Field(default=86400.0, gt=0)
    """How long a delivery the platform refuses for now (5xx, timeout, unreachable) is retried, from
    when it was written; then it is given up and both sides are told. Default 24h."""
    notice_after: float = Field(default=180.0, ge=0)
    """How late a delivery may be before the other side is told, once, that it is not through yet
    (a notice in the room; the customer's message shown as pending). Default 3m."""
    max_backoff: float = Field(default=120.0, gt=0)
    """The longest pause between two tries of a failing delivery (so it goes out at most this long
    after the platform is back). Default 2m."""
    claim_timeout: float = Field(default=60.0, gt=0)
    """With several workers: how long a worker's claim on a delivery it is sending lasts. A worker killed
    mid-send leaves its claim, and another worker takes the delivery over after this long. It must exceed
    the slowest send (a send outliving its claim may be sent twice; platforms with idempotent sends drop
    the copy). Default 60s."""

    @field_validator("retry_window", "notice_after", "max_backoff", "claim_timeout", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return _seconds(value)


class TeamConfig(BaseModel):
    """One team in plugins.yaml's ``teams:`` section (see :mod:`bot_core.rooms`)."""

    model_config = ConfigDict(extra="forbid")

    workspace: str | None = None
    """The workspace plugin (instance name) whose rooms show this team's conversations and whose
    ``ops-<team>`` channel gets its ops posts; unset: the first workspace plugin."""


@dataclass(frozen=True)
class PluginSpec:
    """One enabled plugin instance, as configured: ready for the engine to construct.

    ``env_vars`` maps the settings written with ``${VAR}`` references (dotted field names) to the
    variable names they use, so that a reload can tell which settings depend on the environment.
    """

    instance_name: str
    plugin_class: type[Plugin]
    config: BaseModel
    line: int
    ref: str = ""
    """The plugin reference that was resolved: the instance name, or the ``use`` of an alias."""
    env_vars: dict[str, tuple[str, ...]] = field(default_factory=dict)


class DeskConfig(BaseModel):
    """The whole validated configuration; ``plugins`` are in file order (the handler order)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    storage: StorageConfig = Field(default_factory=StorageConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    plugins: list[PluginSpec] = Field(default_factory=list)
    teams: dict[str, TeamConfig] = Field(default_factory=dict)
    """Teams with settings of their own (``teams: {billing: {workspace: matrix_billing}}``)."""
    source: Path | None = None
    """The file the config was loaded from (None when parsed from a string)."""
    env_vars: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Section settings written with ``${VAR}`` references (``"storage.database"``) and their variables."""

    SECTIONS: ClassVar[Mapping[str, type[BaseModel]]] = {
        "storage": StorageConfig,
        "server": ServerConfig,
        "log": LogConfig,
        "outbox": OutboxConfig,
    }


# --------------------------------------------------------------------------------------------------
# ${VAR} interpolation

_REF_START = re.compile(r"\$\$\{|\$\{")
_REF_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\Z")
_MALFORMED = "malformed ${...} reference: write ${NAME} or ${NAME:-default}, and $${ for a literal ${"


@dataclass
class _Interpolated:
    """The result of interpolating one string scalar."""

    value: str
    variables: list[str] = field(default_factory=list)
    literal_default: bool = False  # a non-empty ${VAR:-default} default is written (used or not)
    errors: list[str] = field(default_factory=list)
    raw: str = ""  # the text as written
    whole_reference: bool = False  # the text is exactly one ${VAR} (or ${VAR:-}), nothing around it


_WHOLE_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-)?\}\Z")
_ANY_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-([^}]*))?\}")
_FROM_ENV = "\x00"  # stands for a value that comes from the environment, in :func:`_literal_password`


def _literal_password(raw: str) -> bool:
    """Whether the URL written as ``raw`` has a password that is not exactly one ``${VAR}``.

    A ``${VAR:-default}`` counts as its default (the value used when the variable is not set).
    """
    marked = _ANY_REF.sub(lambda m: m.group(1) or _FROM_ENV, raw.replace("$${", "${"))
    try:
        password = urlsplit(marked).password
    except ValueError:
        return False  # not a URL: validation says so
    return bool(password) and password != _FROM_ENV


def _interpolate(text: str, environ: Mapping[str, str]) -> _Interpolated:
    result = _Interpolated(value="", raw=text, whole_reference=bool(_WHOLE_REF.match(text)))
    out: list[str] = []
    pos = 0
    while True:
        match = _REF_START.search(text, pos)
        if match is None:
            out.append(text[pos:])
            break
        out.append(text[pos : match.start()])
        if match.group() == "$${":
            out.append("${")
            pos = match.end()
            continue
        close = text.find("}", match.end())
        if close < 0:
            result.errors.append(_MALFORMED)
            break
        pos = close + 1
        body = _REF_BODY.match(text, match.end(), close)
        if body is None:
            result.errors.append(_MALFORMED)
            continue
        name, default = body.group(1), body.group(2)
        result.variables.append(name)
        result.literal_default = result.literal_default or bool(default)
        value = environ.get(name, "")
        if value:
            out.append(value)
        elif default is not None:
            out.append(default)
        elif name in environ:
            result.errors.append(f"environment variable {name} is empty (write ${{{name}:-}} to allow that)")
        else:
            result.errors.append(f"environment variable {name} is not set")
    result.value = "".join(out)
    return result


# --------------------------------------------------------------------------------------------------
# YAML → Python values, with line numbers and interpolation


def _describe(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def _yaml_problem(exc: yaml.YAMLError) -> tuple[int | None, str]:
    """A YAML error's line and message, without the source snippet (which might hold a secret)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            context = exc.context
            if exc.context_mark is not None and exc.context_mark.line + 1 != line:
                context += f" started on line {exc.context_mark.line + 1}"
            message += f" ({context})"
        return line, message
    return None, str(exc)


_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_COLLECTION_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


class _Document:
    """Builds plain Python data from a composed YAML node tree, interpolating string scalars.

    It records the 1-based line of every position (for a mapping value: the line of its key) and
    which positions were written with ``${...}`` references.
    """

    def __init__(self, loader: yaml.SafeLoader, environ: Mapping[str, str]) -> None:
        self.loader = loader
        self.environ = environ
        self.lines: dict[DocPath, int] = {}
        self.refs: dict[DocPath, _Interpolated] = {}
        self.problems: list[tuple[DocPath, int | None, str]] = []
        self._active: set[int] = set()

    def problem(self, path: DocPath, line: int | None, message: str) -> None:
        self.problems.append((path, line, message))

    def build(self, node: yaml.Node, path: DocPath, line: int) -> Any:
        self.lines[path] = line
        if id(node) in self._active:
            self.problem(path, line, "a YAML alias refers to itself (recursive anchor)")
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.tag not in _COLLECTION_TAGS:
                self.problem(path, line, f"invalid YAML: unsupported tag {node.tag!r}")
                return None
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path, line)
            if isinstance(node, yaml.SequenceNode):
                return [
                    self.build(child, (*path, index), child.start_mark.line + 1)
                    for index, child in enumerate(node.value)
                ]
            return self._scalar(node, path, line)
        finally:
            self._active.discard(id(node))

    def _construct(self, node: yaml.Node, path: DocPath, line: int) -> tuple[bool, Any]:
        try:
            return True, self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            err_line, message = _yaml_problem(exc)
            self.problem(path, err_line or line, f"invalid YAML: {message}")
            return False, None

    def _scalar(self, node: yaml.Node, path: DocPath, line: int) -> Any:
        ok, value = self._construct(node, path, line)
        if ok and isinstance(value, str) and node.tag == _STR_TAG and "${" in value:
            interpolated = _interpolate(value, self.environ)
            self.refs[path] = interpolated
            for message in interpolated.errors:
                self.problem(path, line, message)
            return interpolated.value
        return value

    def _mapping(self, node: yaml.MappingNode, path: DocPath, line: int) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            ok, key = self._construct(key_node, path, key_node.start_mark.line + 1)
            if not ok:
                continue
            try:
                hash(key)
            except TypeError:
                continue  # reported below
            key_line = key_node.start_mark.line + 1
            if key in first_line:
                self.problem(
                    (*path, key), key_line, f"duplicate key {key!r} (first on line {first_line[key]})"
                )
            else:
                first_line[key] = key_line
        try:
            self.loader.flatten_mapping(node)
        except yaml.YAMLError as exc:
            err_line, message = _yaml_problem(exc)
            self.problem(path, err_line or line, f"invalid YAML: {message}")
            return {}
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            ok, key = self._construct(key_node, path, key_line)
            if not ok:
                continue
            try:
                hash(key)
            except TypeError:
                self.problem(path, key_line, f"a mapping key must be a plain value, not {_describe(key)}")
                continue
            result[key] = self.build(value_node, (*path, key), key_line)
        return result


# --------------------------------------------------------------------------------------------------
# Secret fields


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _field_keys(name: str, info: Any) -> list[str]:
    keys = [name]
    for alias in (getattr(info, "alias", None), getattr(info, "validation_alias", None)):
        if isinstance(alias, str) and alias not in keys:
            keys.append(alias)
    return keys


def _secret_positions(model: type[BaseModel], data: object, prefix: DocPath = ()) -> Iterator[DocPath]:
    """The positions in ``data`` (raw settings for ``model``) that hold a secret-typed value."""
    if not isinstance(data, dict):
        return
    for name, info in model.model_fields.items():
        for key in _field_keys(name, info):
            if key in data:
                yield from _secrets_in(info.annotation, data[key], (*prefix, key))


def _secrets_in(annotation: Any, value: object, path: DocPath) -> Iterator[DocPath]:
    annotation = _unwrap(annotation)
    if annotation in (SecretStr, SecretBytes):
        yield path
        return
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Union or origin is types.UnionType:
        members = [_unwrap(arg) for arg in args if arg is not type(None)]
        if any(member in (SecretStr, SecretBytes) for member in members):
            yield path
            return
        for member in members:
            yield from _secrets_in(member, value, path)
        return
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from _secret_positions(annotation, value, path)
    elif origin in (list, tuple, set, frozenset, Sequence) and isinstance(value, list) and args:
        fixed = origin is tuple and args[-1] is not Ellipsis
        for index, item in enumerate(value):
            if fixed and index >= len(args):
                break
            yield from _secrets_in(args[index] if fixed else args[0], item, (*path, index))
    elif origin in (dict, Mapping) and isinstance(value, dict) and len(args) == 2:
        for key, item in value.items():
            yield from _secrets_in(args[1], item, (*path, key))


# --------------------------------------------------------------------------------------------------
# The checker


def _field_name(parts: Sequence[Any]) -> str | None:
    text = ""
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or None


def _env_var_suggestion(*names: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", "_".join(names)).strip("_").upper() or "VAR"


@dataclass
class _Entry:
    """Where one plugin entry sits in the document."""

    index: int
    name: str
    line: int
    config_path: DocPath  # where its settings mapping is (or would be)


class _Checker:
    """Turns the built document into a DeskConfig, collecting every problem on the way."""

    def __init__(self, filename: str, doc: _Document) -> None:
        self.filename = filename
        self.display_name = Path(filename).name or filename
        self.doc = doc
        self.items: list[ConfigErrorItem] = []
        self.bad: set[DocPath] = set()  # positions already reported; pydantic errors there are dropped
        self.entries: dict[int, _Entry] = {}

    # -- locating ---------------------------------------------------------------------------------

    def line_of(self, path: DocPath) -> int | None:
        """The line of ``path``, or of its deepest written ancestor (a plugin's line for its settings)."""
        probe = path
        while True:
            line = self.doc.lines.get(probe)
            if line is not None:
                if probe != path:
                    entry = self._entry_for(path)
                    if entry is not None and probe == entry.config_path:
                        return entry.line
                return line
            if not probe:
                return None
            probe = probe[:-1]

    def _entry_for(self, path: DocPath) -> _Entry | None:
        if len(path) >= 2 and path[0] == "plugins" and isinstance(path[1], int):
            return self.entries.get(path[1])
        return None

    def context(self, path: DocPath) -> tuple[str | None, str | None]:
        """The plugin instance and the field that ``path`` belongs to."""
        entry = self._entry_for(path)
        if entry is None:
            return None, _field_name(path)
        cfg = entry.config_path
        if path[: len(cfg)] == cfg:
            return entry.name, _field_name(path[len(cfg) :])
        return entry.name, _field_name(path[3:])

    def add(self, path: DocPath, message: str, *, line: int | None = None, mark_bad: bool = False) -> None:
        plugin, field_name = self.context(path)
        self.items.append(
            ConfigErrorItem(
                file=self.filename,
                line=line if line is not None else self.line_of(path),
                plugin=plugin,
                field=field_name,
                message=message,
            )
        )
        if mark_bad:
            self.bad.add(path)

    def is_bad(self, path: DocPath) -> bool:
        return any(path[: len(bad)] == bad for bad in self.bad)

    def env_vars(self, base: DocPath) -> dict[str, tuple[str, ...]]:
        found: dict[str, tuple[str, ...]] = {}
        for path, interpolated in self.doc.refs.items():
            if path[: len(base)] == base and interpolated.variables:
                name = _field_name(path[len(base) :])
                if name is not None:
                    found[name] = tuple(dict.fromkeys(interpolated.variables))
        return found

    # -- validation -------------------------------------------------------------------------------

    def check_secrets(self, model: type[BaseModel], data: object, base: DocPath, owner: str) -> None:
        for relative in dict.fromkeys(_secret_positions(model, data)):
            path = (*base, *relative)
            value = _get(data, relative)
            if value is None or isinstance(value, dict | list) or self.is_bad(path):
                continue
            interpolated = self.doc.refs.get(path)
            field_name = _field_name(relative) or "value"
            example = _env_var_suggestion(owner, field_name)
            if interpolated is None or not interpolated.variables:
                self.add(
                    path,
                    f"secret written literally: write ${{VAR}} and set VAR in the environment: secrets "
                    f"never go in {self.display_name} (for example ${{{example}}})",
                    mark_bad=True,
                )
            elif interpolated.literal_default:
                self.add(
                    path,
                    f"a secret cannot have a default in {self.display_name}: write ${{VAR}} (or ${{VAR:-}} "
                    "when the secret is optional) and set VAR in the environment",
                    mark_bad=True,
                )
            elif not interpolated.whole_reference:
                self.add(
                    path,
                    "a secret must be exactly one ${VAR} reference with nothing written around it (text "
                    f"around it would be a secret written in {self.display_name}): put the whole secret "
                    f"in the environment (for example ${{{example}}})",
                    mark_bad=True,
                )

    def check_url_passwords(self, data: object) -> None:
        """Refuse a password written in ``storage.database`` or ``storage.redis`` (not from ``${VAR}``)."""
        if not isinstance(data, dict):
            return
        for key in ("database", "redis"):
            value = data.get(key)
            if not isinstance(value, str):
                continue
            path: DocPath = ("storage", key)
            interpolated = self.doc.refs.get(path)
            raw = interpolated.raw if interpolated is not None else value
            if not self.is_bad(path) and _literal_password(raw):
                variable = "DATABASE_PASSWORD" if key == "database" else "REDIS_PASSWORD"
                self.add(
                    path,
                    f"the URL has a password written in {self.display_name}: take it from the environment, "
                    f"either the whole URL (${{{key.upper()}_URL}}) or the password alone "
                    f"(scheme://user:${{{variable}}}@host/...)",
                    mark_bad=True,
                )

    def validate(self, model: type[BaseModel], data: object, base: DocPath) -> BaseModel | None:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            self._report_validation(exc, model, data, base)
            return None

    def _report_validation(
        self, exc: ValidationError, model: type[BaseModel], data: object, base: DocPath
    ) -> None:
        # Pydantic's own messages do not quote the input, but a plugin's custom validator might.
        secrets = {
            str(value)
            for value in (_get(data, relative) for relative in _secret_positions(model, data))
            if isinstance(value, str | int | float) and len(str(value)) >= 4
        }
        grouped: dict[DocPath, list[str]] = {}
        for error in exc.errors(include_url=False, include_input=False, include_context=False):
            relative = _data_position(data, error["loc"])
            path = (*base, *relative)
            if self.is_bad(path):
                continue
            kind = error["type"]
            if kind == "missing":
                message = "required field is missing"
            elif kind == "extra_forbidden":
                message = "unknown field"
                if len(relative) == 1:
                    known = sorted(model.model_fields)
                    close = difflib.get_close_matches(str(relative[0]), known, n=1)
                    if close:
                        message += f" (did you mean {close[0]!r}?)"
                    message += f"; known fields: {', '.join(known)}" if known else "; this takes no settings"
            else:
                message = error["msg"]
                for secret in secrets:
                    message = message.replace(secret, "***")
                interpolated = self.doc.refs.get(path)
                if interpolated is not None and interpolated.variables:
                    refs = ", ".join(f"${{{name}}}" for name in dict.fromkeys(interpolated.variables))
                    message += f" (value from {refs})"
            messages = grouped.setdefault(path, [])
            if message not in messages:
                messages.append(message)
        for path, messages in grouped.items():
            self.add(path, "; ".join(messages))

    # -- sections ---------------------------------------------------------------------------------

    def check(self, data: object, root_line: int, source: Path | None) -> DeskConfig | None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.add(
                (),
                f"the top level must be a mapping with the keys {', '.join(_TOP_LEVEL)}; "
                f"found {_describe(data)}",
                line=root_line,
            )
            return None

        sections: dict[str, BaseModel] = {}
        for key, value in data.items():
            if key in ("plugins", "teams"):
                continue
            model = DeskConfig.SECTIONS.get(key) if isinstance(key, str) else None
            if model is None:
                close = difflib.get_close_matches(str(key), _TOP_LEVEL, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.add(
                    (key,),
                    f"unknown top-level key {key!r}{hint}; allowed: {', '.join(_TOP_LEVEL)}",
                    line=self.doc.lines.get((key,)),
                )
                continue
            value = {} if value is None else value
            self.check_secrets(model, value, (key,), key)
            if key == "storage":
                self.check_url_passwords(value)
            validated = self.validate(model, value, (key,))
            if validated is not None:
                sections[key] = validated

        specs = self.check_plugins(data.get("plugins"))
        teams = self.check_teams(data.get("teams"), specs)
        if self.items:
            return None
        return DeskConfig.model_validate(
            {
                **sections,
                "plugins": specs,
                "teams": teams,
                "source": source,
                "env_vars": {
                    f"{key}.{name}": variables
                    for key in sections
                    for name, variables in self.env_vars((key,)).items()
                },
            }
        )

    def check_teams(self, raw: object, specs: list[PluginSpec]) -> dict[str, TeamConfig]:
        """plugins.yaml's ``teams:``: a mapping of team names to settings; a ``workspace`` must name a
        workspace plugin of the file."""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.add(
                ("teams",), f"'teams' must be a mapping of team names to settings, found {_describe(raw)}"
            )
            return {}
        workspaces = [s.instance_name for s in specs if s.plugin_class.kind.value == "workspace"]
        teams: dict[str, TeamConfig] = {}
        for name, value in raw.items():
            path: DocPath = ("teams", name)
            if not isinstance(name, str) or not name.strip():
                self.add(path, f"a team name must be a non-empty string, found {name!r}")
                continue
            team = self.validate(TeamConfig, {} if value is None else value, path)
            if not isinstance(team, TeamConfig):
                continue
            if team.workspace is not None and team.workspace not in workspaces:
                known = ", ".join(workspaces) or "none"
                self.add(
                    (*path, "workspace"),
                    f"team {name!r}: {team.workspace!r} is not a workspace plugin of this file "
                    f"(workspace plugins: {known})",
                )
                continue
            teams[name] = team
        return teams

    def check_plugins(self, raw: object) -> list[PluginSpec]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.add(
                ("plugins",),
                f"'plugins' must be a list of entries like '- name: {{settings}}', found {_describe(raw)}",
            )
            return []
        specs: list[PluginSpec] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(raw):
            spec = self.check_entry(index, item, seen)
            if spec is not None:
                specs.append(spec)
        return specs

    def check_entry(self, index: int, item: object, seen: dict[str, int]) -> PluginSpec | None:
        path: DocPath = ("plugins", index)
        if not isinstance(item, dict) or len(item) != 1:
            if isinstance(item, dict) and len(item) > 1:
                keys = list(item)
                message = (
                    f"this entry has {len(keys)} keys ({', '.join(map(str, keys))}); each entry is a "
                    f"one-key mapping 'name: {{settings}}': indent the settings under '{keys[0]}:'"
                )
            elif isinstance(item, str):
                message = (
                    f"this entry is a string; write '- {item}: {{}}' (a one-key mapping 'name: {{settings}}')"
                )
            else:
                message = (
                    f"each entry must be a one-key mapping 'name: {{settings}}', found {_describe(item)}"
                )
            self.add(path, message)
            return None

        ((name, value),) = item.items()
        name_path: DocPath = (*path, name)
        line = self.doc.lines.get(name_path) or self.line_of(path) or 0
        if not isinstance(name, str) or not name.strip():
            self.add(path, f"the plugin name must be a non-empty string, found {name!r}", line=line)
            return None

        ref = name
        settings: object
        config_path: DocPath = name_path
        if isinstance(value, dict) and "use" in value:
            config_path = (*name_path, "config")
            self.entries[index] = _Entry(index, name, line, config_path)
            ok = True
            for key in value:
                if key not in ("use", "config"):
                    self.add(
                        (*name_path, key),
                        f"unknown key {key!r} in an entry with 'use': only 'use' and 'config' are allowed "
                        "(the plugin's settings go under 'config:')",
                    )
                    ok = False
            use = value["use"]
            if not isinstance(use, str) or not use.strip():
                self.add(
                    (*name_path, "use"),
                    "'use' must name a plugin: a registered name or 'package.module:Class'",
                )
                ref = ""
            else:
                ref = use.strip()
            settings = {} if value.get("config") is None else value["config"]
            if not isinstance(settings, dict):
                self.add(config_path, f"the settings must be a mapping, found {_describe(settings)}")
                ok = False
        else:
            self.entries[index] = _Entry(index, name, line, config_path)
            settings = {} if value is None else value
            ok = isinstance(settings, dict)
            if not ok:
                hint = (
                    " (to choose the plugin class, write '{use: ...}')" if isinstance(settings, str) else ""
                )
                self.add(config_path, f"the settings must be a mapping, found {_describe(settings)}{hint}")

        if name in seen:
            self.add(
                path,
                f"duplicate plugin instance name {name!r} (first on line {seen[name]}); give the second "
                f"one another name: '{name}_2: {{use: {ref}, config: {{...}}}}'",
                line=line,
            )
            ok = False
        else:
            seen[name] = line

        if not ref:
            return None
        try:
            plugin_class = resolve_plugin(ref)
        except PluginNotFound as exc:
            ref_path = (*name_path, "use") if ref != name else path
            self.add(ref_path, str(exc), line=self.doc.lines.get(ref_path, line))
            return None

        model = plugin_class.Config
        self.check_secrets(model, settings, config_path, name)
        config = self.validate(model, settings, config_path) if isinstance(settings, dict) else None
        if not ok or config is None:
            return None
        return PluginSpec(
            instance_name=name,
            plugin_class=plugin_class,
            config=config,
            line=line,
            ref=ref,
            env_vars=self.env_vars(config_path),
        )


_TOP_LEVEL = ("storage", "server", "log", "outbox", "plugins", "teams")


def _get(data: object, relative: DocPath) -> object:
    for part in relative:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return None
    return data


def _data_position(data: object, loc: Sequence[int | str]) -> DocPath:
    """Map a pydantic error location onto the settings data.

    Location parts that do not exist in the data are union members or missing fields: a missing
    field's name is kept (to name it), anything below a scalar is dropped.
    """
    position: list[Any] = []
    current = data
    for part in loc:
        if isinstance(current, dict):
            if part in current:
                position.append(part)
                current = current[part]
                continue
            if isinstance(part, str):
                position.append(part)
            break
        if isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            position.append(part)
            current = current[part]
            continue
        break
    return tuple(position)


# --------------------------------------------------------------------------------------------------
# Entry points


def parse_config(
    text: str,
    filename: str | Path = "plugins.yaml",
    environ: Mapping[str, str] | None = None,
    *,
    source: Path | None = None,
) -> DeskConfig:
    """Parse, interpolate and validate the config ``text``; ``filename`` is used in error messages.

    ``environ`` defaults to :data:`os.environ`. Raises :class:`ConfigError` listing every problem.
    """
    name = str(filename)
    env: Mapping[str, str] = os.environ if environ is None else environ
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            line, message = _yaml_problem(exc)
            raise ConfigError([ConfigErrorItem(name, line, None, None, f"invalid YAML: {message}")]) from None
        doc = _Document(loader, env)
        data = None if root is None else doc.build(root, (), root.start_mark.line + 1)
    finally:
        loader.dispose()

    checker = _Checker(name, doc)
    # Positions with a YAML or ${...} problem: their validation errors would only repeat it.
    checker.bad.update(path for path, _, _ in doc.problems)
    config = checker.check(data, 1 if root is None else root.start_mark.line + 1, source)
    # Reported after the check, which knows the plugin entries these positions belong to.
    for path, line, message in doc.problems:
        checker.add(path, message, line=line)
    if checker.items or config is None:
        items = sorted(checker.items, key=lambda item: item.line or 0)
        raise ConfigError(items)
    return config


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> DeskConfig:
    """Read and validate the config file at ``path`` (see the module docstring for the format).

    ``environ`` defaults to :data:`os.environ`. Raises :class:`ConfigError` listing every problem,
    including a file that cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [ConfigErrorItem(str(path), None, None, None, f"not valid UTF-8 text (at byte {exc.start})")]
        ) from None
    except OSError as exc:
        raise ConfigError(
            [ConfigErrorItem(str(path), None, None, None, f"cannot read the file: {exc.strerror or exc}")]
        ) from None
    return parse_config(text, str(path), environ, source=Path(path))
