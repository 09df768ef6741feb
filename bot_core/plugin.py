"""The plugin API: a plugin class has a name, a kind and a pydantic config model, and registers handlers.

Handlers are declared with the decorators below and run in plugins.yaml order. A handler returns
:data:`HANDLED` to stop propagation (no later plugin sees the event), or ``None`` to let the event go
on. The room always shows the customer's message, handled or not: the agents see what was asked and
what a plugin answered. Plugins import all of this from :mod:`bot_core.api`.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, Protocol, TypeVar, get_args

from pydantic import BaseModel, ConfigDict
from typing_extensions import TypeVar as DefaultTypeVar

from bot_core.adapters import Inbound, InboundEvent
from bot_core.context import StateStore
from bot_core.downloads import DownloadPolicy
from bot_core.events import LifecycleKind, utcnow
from bot_core.periodic import PeriodicSpec, periodic_spec
from bot_core.receiving import Receivers
from storage.fanout import Fanout, LocalFanout
from storage.ratelimit import MemoryRateLimits, RateLimits

if TYPE_CHECKING:
    from aiohttp import web
    from prometheus_client import CollectorRegistry


class Handled(enum.Enum):
    """The sentinel type a handler returns to stop propagation (the room still shows the message)."""

    HANDLED = "handled"


HANDLED: Final = Handled.HANDLED


class PluginKind(enum.StrEnum):
    """What a plugin is for."""

    CHANNEL = "channel"  # customer side: telegram, whatsapp, sms, web
    WORKSPACE = "workspace"  # agent side: slack, matrix
    FEATURE = "feature"  # faq, queue, routing, outreach...


class HandlerKind(enum.StrEnum):
    """The event types a handler can observe."""

    CUSTOMER_MESSAGE = "customer_message"
    AGENT_MESSAGE = "agent_message"
    COMMAND = "command"
    CONVERSATION_EVENT = "conversation_event"
    SCHEDULE = "schedule"


@dataclass(frozen=True)
class HandlerSpec:
    """What a decorator recorded about one handler method."""

    kind: HandlerKind
    pattern: re.Pattern[str] | None = None
    command: str | None = None
    help: str = ""
    usage: str = ""
    lifecycle: frozenset[LifecycleKind] = frozenset()
    job: str | None = None
    periodic: PeriodicSpec | None = None  # set for a periodic job (every= or cron=)
    ops_rooms: bool = False  # a command that also works in an ops room (no conversation there)


@dataclass(frozen=True)
class RouteSpec:
    """An HTTP route a plugin serves on relaydesk's aiohttp server."""

    method: str
    path: str


_HANDLER_ATTR = "__relaydesk_handler__"
_ROUTE_ATTR = "__relaydesk_route__"
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _mark(spec: HandlerSpec) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        setattr(func, _HANDLER_ATTR, spec)
        return func

    return decorate


def on_customer_message(matches: str | None = None) -> Callable[[F], F]:
    """Handle customer messages, optionally only those whose text matches the regular expression."""
    return _mark(HandlerSpec(HandlerKind.CUSTOMER_MESSAGE, pattern=re.compile(matches) if matches else None))


def on_agent_message() -> Callable[[F], F]:
    """Handle agent messages in a conversation's room (before they go to the outbox)."""
    return _mark(HandlerSpec(HandlerKind.AGENT_MESSAGE))


def on_command(name: str, *, help: str = "", usage: str = "", ops_rooms: bool = False) -> Callable[[F], F]:
    """Handle the agent command ``!name`` typed in a room; ``help`` is shown by ``!help``.

    With ``ops_rooms=True`` the command also works in an ops room (``ctx.ops_channel`` is set there,
    ``ctx.has_conversation`` is False and ``ctx.notice`` answers in that room); otherwise an agent
    typing it in an ops room is told it works in a customer's room.
    """
    return _mark(
        HandlerSpec(
            HandlerKind.COMMAND,
            command=name.lower().lstrip("!"),
            help=help,
            usage=usage,
            ops_rooms=ops_rooms,
        )
    )


def on_conversation_event(*kinds: LifecycleKind | str) -> Callable[[F], F]:
    """Handle lifecycle events (opened, queued, assigned, transferred, closed); all of them if none given."""
    chosen = frozenset(LifecycleKind(k) for k in kinds) or frozenset(LifecycleKind)
    return _mark(HandlerSpec(HandlerKind.CONVERSATION_EVENT, lifecycle=chosen))


def on_schedule(
    job: str, *, every: float | None = None, cron: str | None = None, timezone: str | None = None
) -> Callable[[F], F]:
    """Handle the scheduled job ``job``: fired by ``ctx.schedule``, or periodically.

    ``every=N`` fires every N seconds, counted from the job's last run stored in the database (so a
    restart keeps the rhythm); ``cron="0 9 * * mon-fri"`` fires at the crontab times in ``timezone``
    (an IANA name, default UTC; days of week by name). Each slot fires once across all workers; slots
    missed while relaydesk was down fire once, at start. A bad declaration raises
    :class:`~bot_core.periodic.PeriodicJobError` naming the plugin class and the job.
    """

    def decorate(func: F) -> F:
        where = f"plugin {func.__module__}:{func.__qualname__.rsplit('.', 1)[0]} job '{job}'"
        spec = periodic_spec(where, every, cron, timezone)
        return _mark(HandlerSpec(HandlerKind.SCHEDULE, job=job, periodic=spec))(func)

    return decorate


def route(method: str, path: str) -> Callable[[F], F]:
    """Serve ``method path`` on relaydesk's HTTP server; the path is used as given (plugins pick their prefix)."""

    def decorate(func: F) -> F:
        setattr(func, _ROUTE_ATTR, RouteSpec(method.upper(), path))
        return func

    return decorate


class EmptyConfig(BaseModel):
    """The config model of a plugin that takes no settings."""

    model_config = ConfigDict(extra="forbid")


async def _no_inbound(event: InboundEvent) -> None:
    raise RuntimeError("this plugin was constructed without an inbound bus")


async def _no_presence(user_id: str) -> str | None:
    return None


async def _no_typing(room_id: str, agent_name: str, active: bool) -> None:
    """Without a desk, typing reports go nowhere."""


def _print_announcement(text: str) -> None:
    print(text, flush=True)


async def _no_customer_typing(external_user_id: str, active: bool) -> None:
    """Without a desk, typing reports go nowhere."""


class PostToOps(Protocol):
    """``services.post_to_ops``: post into a team's ops room through the outbox."""

    async def __call__(
        self, team: str | None, text: str, *, key: str | None = None, image: tuple[str, bytes] | None = None
    ) -> None:
        """Queue ``text`` for ``team``'s ops room (``key``: post once per key; ``image``: (file name, PNG))."""
        ...


async def _no_ops(
    team: str | None, text: str, *, key: str | None = None, image: tuple[str, bytes] | None = None
) -> None:
    raise RuntimeError("this plugin was constructed without a desk: there is no ops room")


class ScheduleOnce(Protocol):
    """``services.schedule_once``: arm a global task of this plugin once per key, from anywhere."""

    async def __call__(
        self, job: str, key: str, *, data: dict[str, Any] | None = None, at: datetime | None = None
    ) -> bool:
        """Arm ``job`` under ``key`` (due ``at``, default now); False if a task with that key exists."""
        ...


async def _no_adapter_states() -> dict[str, str]:
    return {}


async def _no_schedule(
    job: str, key: str, *, data: dict[str, Any] | None = None, at: datetime | None = None
) -> bool:
    raise RuntimeError("this plugin was constructed without a desk: there is no scheduler")


@dataclass
class PluginServices:
    """What the engine hands every plugin at construction.

    ``inbound`` appends an event to the bus and returns once it is stored: an adapter acknowledges
    a webhook only after it returned (it raises :class:`bot_core.adapters.NotAccepting` while shutting down).
    ``agent_typing(room_id, agent_name, active)`` is for workspaces: an agent started (or stopped) typing
    in a room; the customer's channel shows it if it can (:class:`bot_core.adapters.TypingChannel`).
    It is ephemeral: nothing is stored, and it never fails the caller.
    ``customer_typing(external_user_id, active)`` is the same for channels: the customer started (or
    stopped) typing; the agents' room shows it if the workspace can (:class:`bot_core.adapters.TypingWorkspace`).
    ``fanout`` carries ephemeral pushes to every worker process (:mod:`storage.fanout`): a channel
    whose visitors hold live connections publishes there, so a delivery sent by one worker reaches
    a connection held by another.
    ``rate_limits`` are token buckets shared by every worker (:mod:`storage.ratelimit`; in Redis when
    the desk has one): a channel with public endpoints limits floods there.
    ``metrics_registry`` is the desk's Prometheus registry (served on ``/metrics``): a plugin may register
    its own collector there in :meth:`Plugin.start` and must unregister it in :meth:`Plugin.stop`.
    ``announce(text)`` is for what the person who started relaydesk must read (a login, a URL): the
    ``relaydesk run`` command prints every announcement together, last, once relaydesk is ready, so
    log lines never push them out of view (outside the command they are printed at once).
    ``receivers`` runs an adapter's receiving loops (long polling, sync) under supervision: a loop made
    with ``receivers.loop(name, body)`` survives every error and is reported on ``/healthz`` and
    ``/metrics`` as ok / degraded / down (:mod:`bot_core.receiving`).
    ``http_base_url`` is the address relaydesk's HTTP server binds (``http://host:port``), for fetches from
    this machine; ``public_url`` is where the outside world reaches it (``server.public_url``, behind a
    proxy or tunnel; the bind address if unset): every link a platform or a person fetches starts there.
    ``store(scope)`` is the plugin's key-value store for ``scope`` (:class:`bot_core.context.StateStore`).
    ``post_to_ops(team, text, key=None)`` posts ``text`` into ``team``'s ops room (alerts, digests; no
    team: the desk's ``ops`` room) in the team's workspace, through the outbox (a crash loses nothing).
    Give a ``key`` (``"digest:2026-12-06"``) to post it once however often the call is repeated (a
    replayed event, a retried job); without one every call posts. With ``image=(name, png_bytes)`` the
    text is the image's caption (workspaces implementing :class:`bot_core.adapters.OpsImageWorkspace`
    show the image; others the caption alone).
    ``schedule_once(job, key, data=, at=)`` arms this plugin's ``@on_schedule(job)`` handler as a global
    task (no conversation) from outside a handler, e.g. an HTTP route: the first call with a ``key``
    stores it (True) and it fires once, across workers; every later call with that key is refused
    (False) whether the task ran or not. It returns once the task is stored: a webhook answered after it
    loses nothing. ``now()`` is the desk's clock (the scheduler's: a test may set it with ``Desk(scheduler_clock=)``):
    a plugin that reasons about time (opening hours, waits) asks it, so its "now" and its scheduled
    tasks' due times agree.
    ``receiving_states()`` is every adapter's receiving state in this process (``ok``, ``degraded``,
    ``down``; :mod:`bot_core.receiving`); ``await adapter_states()`` is the same across every live worker
    (the worst any reports, :mod:`bot_core.adapter_health`), for a plugin that watches the adapters (the
    supervisor's alerts).
    ``presence(user_id)`` asks the workspaces that know presence (:class:`bot_core.adapters.PresenceWorkspace`)
    whether a person is ``online``, ``unavailable`` or ``offline``; None when none of them can say.
    ``downloads`` is how an adapter serves files from relaydesk's origin (:mod:`bot_core.downloads`):
    signed expiring links, safe headers, the per-address download rate from the ``server`` settings.
    """

    log: logging.Logger
    inbound: Inbound = _no_inbound
    agent_typing: Callable[[str, str, bool], Awaitable[None]] = _no_typing
    customer_typing: Callable[[str, bool], Awaitable[None]] = _no_customer_typing
    http_base_url: str = ""
    public_url: str = ""
    plugin_name: str = ""  # the plugin's instance name: the owner of what store() keeps
    metrics_registry: CollectorRegistry | None = None
    fanout: Fanout = field(default_factory=LocalFanout)
    rate_limits: RateLimits = field(default_factory=MemoryRateLimits)
    announce: Callable[[str], None] = _print_announcement
    receivers: Receivers = field(default_factory=Receivers)
    downloads: DownloadPolicy = field(default_factory=DownloadPolicy)
    post_to_ops: PostToOps = _no_ops
    schedule_once: ScheduleOnce = _no_schedule
    now: Callable[[], datetime] = utcnow
    receiving_states: Callable[[], dict[str, str]] = dict
    adapter_states: Callable[[], Awaitable[dict[str, str]]] = _no_adapter_states
    presence: Callable[[str], Awaitable[str | None]] = _no_presence

    def store(self, scope: str) -> StateStore:
        """The plugin's key-value store for ``scope`` (a name the plugin picks, e.g. ``"telegram"``)."""
        if not self.plugin_name:
            raise RuntimeError("these services were built without a plugin name: nothing to own the store")
        return StateStore(self.plugin_name, scope)


ConfigT = DefaultTypeVar("ConfigT", bound=BaseModel, default=Any)


def _config_of(cls: type) -> type[BaseModel] | None:
    """The config model given as the generic parameter (``class P(Plugin[PConfig])``), if any."""
    for base in getattr(cls, "__orig_bases__", ()):
        for arg in get_args(base):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


class Plugin(Generic[ConfigT]):
    """Base class of every plugin: channels, workspaces and features.

    Subclasses set ``name`` (the name used in plugins.yaml), ``kind`` and their pydantic config model,
    either as the generic parameter (``class FaqPlugin(Plugin[FaqConfig])``: ``self.config`` is then a
    ``FaqConfig`` to the type checker, and ``Config`` is set from it) or as a nested class ``Config``.
    The engine calls :meth:`start` after construction and :meth:`stop` before it drops the plugin
    (shutdown, or a reload that disables it); :meth:`reconfigure` applies a changed config live.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[PluginKind] = PluginKind.FEATURE
    Config: ClassVar[type[BaseModel]] = EmptyConfig

    _handlers: ClassVar[tuple[tuple[str, HandlerSpec], ...]] = ()
    _routes: ClassVar[tuple[tuple[str, RouteSpec], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "Config" not in vars(cls):
            config = _config_of(cls)
            if config is not None:
                cls.Config = config
        handlers = dict(cls._handlers)
        routes = dict(cls._routes)
        for attr, value in vars(cls).items():
            spec = getattr(value, _HANDLER_ATTR, None)
            if isinstance(spec, HandlerSpec):
                handlers[attr] = spec
            rspec = getattr(value, _ROUTE_ATTR, None)
            if isinstance(rspec, RouteSpec):
                routes[attr] = rspec
        cls._handlers = tuple(handlers.items())
        cls._routes = tuple(routes.items())

    def __init__(
        self, config: ConfigT, services: PluginServices, *, instance_name: str | None = None
    ) -> None:
        self.config: ConfigT = config
        self.services = services
        self.log = services.log
        self.instance_name = instance_name or self.name
        if not services.plugin_name:  # services made by hand (a test): this plugin owns its store
            services.plugin_name = self.instance_name

    async def start(self) -> None:
        """Called once when the engine enables the plugin; open connections here."""

    async def ready(self) -> None:
        """Called once relaydesk accepts events and serves HTTP (e.g. to tell a platform we are back)."""

    async def closing(self) -> None:
        """Called first when relaydesk shuts down, before the work in flight is finished.

        End long-lived client connections here (long polls, WebSockets: clients reconnect to the next
        relaydesk) and refuse new ones; everything else keeps working until :meth:`stop`.
        """

    async def stop(self) -> None:
        """Called once when the engine disables the plugin; close what :meth:`start` opened."""

    async def refresh_metrics(self) -> None:
        """Called before each ``/metrics`` scrape is rendered: read what the plugin's collectors serve.

        A collector's ``collect()`` cannot await the database; a plugin whose figures come from stored
        rows (so every worker exports the same values) reads them here, cached as it sees fit, and its
        collector serves the snapshot. An error is logged and the rest of ``/metrics`` still served.
        """

    async def reconfigure(self, config: ConfigT) -> None:
        """Apply a new validated config without a restart. The default just swaps it in."""
        self.config = config

    @classmethod
    def handler_specs(cls) -> tuple[tuple[str, HandlerSpec], ...]:
        """The handler methods this class declares, by attribute name."""
        return cls._handlers

    def periodic_jobs(self) -> list[tuple[str, PeriodicSpec]]:
        """Periodic jobs this instance adds from its config (campaigns on a schedule), as (job, when).

        A job named ``"<handler job>:<name>"`` is handled by the ``@on_schedule("<handler job>")``
        handler (``fire.job`` tells which one fired). Each slot fires once across workers, like a
        declared job's. The default adds none; the desk asks again after a reload.
        """
        return []

    @classmethod
    def route_specs(cls) -> tuple[tuple[str, RouteSpec], ...]:
        """The HTTP routes this class declares, by attribute name."""
        return cls._routes

    def bound_routes(self) -> list[tuple[RouteSpec, Callable[[web.Request], Awaitable[web.StreamResponse]]]]:
        """The routes with their bound handler methods, for the HTTP server."""
        return [(spec, getattr(self, attr)) for attr, spec in self.route_specs()]
