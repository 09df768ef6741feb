"""The running desk: storage, bus, plugins, relay, outbox, scheduler and HTTP server, started and stopped
in the right order, and reloaded from plugins.yaml without dropping a conversation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import functools
import logging
import socket
import uuid
from datetime import datetime
from typing import Any

from aiohttp import web
from tortoise import connections
from tortoise.exceptions import IntegrityError

from bot_core.adapter_health import AdapterHealth
from bot_core.adapters import (
    PRESENCES,
    Channel,
    InboundEvent,
    PresenceWorkspace,
    RoomRef,
    TypingChannel,
    TypingWorkspace,
    Workspace,
)
from bot_core.adapters import NotAccepting as NotAccepting  # re-exported: it used to live here
from bot_core.analytics import ServiceMetrics
from bot_core.commands import CoreCommands
from bot_core.config import DeskConfig, PluginSpec
from bot_core.contacts import MERGED_TOPIC, CustomerKeyCache, publish_key
from bot_core.context import MAX_TASK_KEY
from bot_core.conversation_service import ConversationService
from bot_core.conversations import conversation_for_room, reply_identity_id
from bot_core.downloads import DownloadPolicy
from bot_core.events import (
    ConversationEvent,
    CustomerMessage,
    LifecycleKind,
    ScheduledFire,
    dump_event,
    utcnow,
)
from bot_core.metrics import Metrics
from bot_core.outbox import Outbox, OutboxSettings
from bot_core.pipeline import Pipeline
from bot_core.plugin import EmptyConfig, Plugin, PluginKind, PluginServices
from bot_core.receiving import Receivers, ReceiveSettings, ReceiveState
from bot_core.relay import Relay
from bot_core.rooms import RoomDirectory
from bot_core.scheduler import Clock, Scheduler
from bot_core.server import build_metrics_app, make_runner
from storage import fence, hot
from storage.bus import BusEntry, EventBus
from storage.bus.journal import DbJournal
from storage.bus.memory import MemoryBus
from storage.bus.redis_streams import RedisStreamsBus
from storage.db import close_db, database_answers, fresh_context, init_db
from storage.fanout import Fanout, LocalFanout, RedisFanout
from storage.models import ConversationState, Identity, OutboxItem, OutboxStatus, Room, ScheduledTask
from storage.ratelimit import MemoryRateLimits, RateLimits, RedisRateLimits

log = logging.getLogger("relaydesk.desk")


def outbox_settings_of(config: DeskConfig, base: OutboxSettings | None = None) -> OutboxSettings:
    """The outbox tuning from plugins.yaml's ``outbox`` section (other fields as in ``base``)."""
    section = config.outbox
    return dataclasses.replace(
        base or OutboxSettings(),
        retry_window=section.retry_window,
        notice_after=section.notice_after,
        max_backoff=section.max_backoff,
        claim_seconds=section.claim_timeout,
    )


class AddressUnavailable(RuntimeError):
    """The HTTP server's address cannot be bound (in use by another relaydesk or program, or not allowed)."""


# How long the HTTP server waits for requests still running when it closes. Long polls and WebSockets
# were already ended by the plugins' closing(), so what is left are short requests.
HTTP_SHUTDOWN_SECONDS = 2.0
# How often an event that failed while the database was unreachable checks whether it is back.
DATABASE_RETRY_SECONDS = 0.5


def bind_http(host: str, port: int) -> list[socket.socket]:
    """Bind the HTTP server's listening sockets now (every address ``host`` resolves to).

    relaydesk binds before it starts anything else, so a port that is taken is reported at once, in
    one line, instead of after a homeserver was started and a login printed.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise AddressUnavailable(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    if port == 0:
        infos = infos[:1]  # an ephemeral port would differ per address
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            reason = "the port is already in use (is relaydesk already running?)"
        elif exc.errno == errno.EACCES:
            reason = "not allowed (ports below 1024 need privileges)"
        else:
            reason = exc.strerror or str(exc)
        raise AddressUnavailable(
            f"cannot listen on {host}:{port}: {reason}. Stop the other program, or set another port"
            " (server.port in plugins.yaml, RELAYDESK_PORT in the sample)."
        ) from None
    return sockets


class Desk:
    """One relaydesk worker process."""

    def __init__(
        self,
        config: DeskConfig,
        *,
        serve_http: bool = True,
        outbox_settings: OutboxSettings | None = None,
        scheduler_poll: float = 1.0,
        scheduler_clock: Clock = utcnow,
        bus: EventBus | None = None,
        fanout: Fanout | None = None,
        rate_limits: RateLimits | None = None,
        receive_settings: ReceiveSettings | None = None,
    ) -> None:
        self.config = config
        self.receive_settings = receive_settings or ReceiveSettings(
            degraded_after=config.server.health_degraded_after,
            down_after=config.server.health_down_after,
        )
        self.metrics = Metrics()
        self.adapter_health = AdapterHealth(self.receiving_states)  # every worker's adapters, shared
        self.service_metrics = ServiceMetrics()  # the supervisor's figures, from the database at scrape time
        self.metrics.registry.register(self.service_metrics)
        self.plugins: dict[str, Plugin] = {}
        self._core = CoreCommands(
            EmptyConfig(), PluginServices(log=logging.getLogger("relaydesk.plugin.core"))
        )
        self._pipeline = Pipeline([self._core], self.metrics)
        self._core.help_source = lambda: self._pipeline.command_help()
        redis_url, cluster = config.storage.redis, config.storage.redis_cluster
        self.bus: EventBus = bus or (
            RedisStreamsBus(redis_url, cluster=cluster) if redis_url else MemoryBus(journal=DbJournal())
        )
        self.fanout: Fanout = fanout or (
            RedisFanout(redis_url, cluster=cluster) if redis_url else LocalFanout()
        )
        self.rate_limits: RateLimits = rate_limits or (
            RedisRateLimits(redis_url, cluster=cluster) if redis_url else MemoryRateLimits()
        )
        self.rooms = RoomDirectory(self._workspace_names, self._team_workspaces)
        self.outbox = Outbox(
            self.adapter,
            self.metrics,
            outbox_settings or outbox_settings_of(config),
            rooms=self.rooms,
            single_worker=not redis_url,
        )
        self.conversations = ConversationService(
            self.outbox, self.rooms, self._publish_event, wants=self._handled
        )
        # one worker publishes every event: it may remember the keys of identities not stored yet too
        self.customer_keys = CustomerKeyCache(unknown=isinstance(self.bus, MemoryBus))
        """The bus keys of identities seen lately (see :mod:`bot_core.contacts`); merges clear it."""
        self.relay = Relay(
            lambda: self._pipeline,
            self.outbox,
            self.metrics,
            self.conversations,
            keys=self.customer_keys,
            merged=self._customers_merged,
        )
        self._core.links = self.relay.links  # !link and !via
        self.scheduler = Scheduler(self._publish_fire, poll_interval=scheduler_poll, now=scheduler_clock)
        self._serve_http = serve_http
        self._runner: web.AppRunner | None = None
        self._sites: list[web.BaseSite] = []
        self._metrics_runner: web.AppRunner | None = None
        self.metrics_port: int | None = None  # where /metrics is served when it has an address of its own
        self.port: int | None = None
        self.announcements: list[str] = []
        self.hold_announcements = False
        self._accepting = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self._reload_lock = asyncio.Lock()

    # -- lookups -------------------------------------------------------------------------------

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline in force."""
        return self._pipeline

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` has begun (and after it finished)."""
        return self._stopping

    def adapter(self, name: str) -> object | None:
        """The enabled channel or workspace plugin called ``name``."""
        return self.plugins.get(name)

    def default_workspace(self) -> str | None:
        """The first workspace plugin in plugins.yaml (teams may have others: see :attr:`rooms`)."""
        return self.rooms.first_workspace()

    def _workspace_names(self) -> list[str]:
        """The enabled workspace plugins, in plugins.yaml order."""
        return [n for n, p in self.plugins.items() if p.kind is PluginKind.WORKSPACE]

    def _team_workspaces(self) -> dict[str, str]:
        """plugins.yaml's ``teams:``: the workspace of each team that names one."""
        return {name: team.workspace for name, team in self.config.teams.items() if team.workspace}

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open storage, start plugins, replay what a crash left, then accept events and serve HTTP.

        Raises :class:`AddressUnavailable` (before anything else is started) when the HTTP address is taken.
        """
        sockets = bind_http(self.config.server.host, self.config.server.port) if self._serve_http else []
        try:
            await self._start(sockets)
        except BaseException:
            for sock in sockets:
                sock.close()
            raise

    async def _start(self, sockets: list[socket.socket]) -> None:
        await init_db(self.config.storage.database)
        await self.fanout.start()
        await self.fanout.subscribe(MERGED_TOPIC, self.customer_keys.clear)  # another worker merged
        await self.rate_limits.start()
        try:
            for spec in self.config.plugins:
                self.plugins[spec.instance_name] = await self._start_plugin(spec)
        except BaseException:
            # Undo what did start (a dev homeserver, connections, the database) before the error surfaces.
            for name in reversed(list(self.plugins)):
                await self._stop_plugin(name, self.plugins[name])
            self.plugins.clear()
            await self.rate_limits.stop()
            await self.fanout.stop()
            await close_db()
            raise
        self._rebuild_pipeline()
        self._accepting = True
        await self.outbox.start()
        await self.bus.start(self._handle_entry, self._dead_letter)
        await self.scheduler.start()
        self.scheduler.set_periodic(self._pipeline.periodic_jobs())
        if self._serve_http:
            self._runner = make_runner(self, shutdown_timeout=HTTP_SHUTDOWN_SECONDS)
            await self._runner.setup()
            for sock in sockets:
                site = web.SockSite(self._runner, sock)
                await site.start()
                self._sites.append(site)
            self.port = sockets[0].getsockname()[1] if sockets else self.config.server.port
            await self._serve_metrics_apart()
        for name, plugin in self.plugins.items():
            try:
                await plugin.ready()
            except Exception:
                log.exception("plugin failed in ready()", extra={"plugin": name})
        self.adapter_health.start()
        log.info(
            "relaydesk started",
            extra={
                "plugins": ",".join(self.plugins),
                "bus": type(self.bus).__name__,
                "http": f"{self.config.server.host}:{self.port}" if self._serve_http else "off",
            },
        )

    async def _serve_metrics_apart(self) -> None:
        """Serve ``/metrics`` on ``server.metrics_host:metrics_port`` when configured."""
        server = self.config.server
        if server.metrics_port is None:
            return
        self._metrics_runner = web.AppRunner(build_metrics_app(self), access_log=None, handle_signals=False)
        await self._metrics_runner.setup()
        site = web.TCPSite(self._metrics_runner, server.metrics_host or server.host, server.metrics_port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.metrics_port = sockets[0].getsockname()[1] if sockets else server.metrics_port

    async def stop(self, timeout: float = 30.0) -> None:
        """Graceful shutdown: stop intake, finish events and deliveries in flight, stop plugins, close.

        New connections are refused at once and the plugins end their long-lived ones (long polls,
        WebSockets) before anything is waited for, so connected clients never hold the stop up.
        """
        self._accepting = False
        self._stopping = True
        await self.adapter_health.stop()  # before the loops stop: a worker shut down is not an adapter down
        for site in self._sites:
            await site.stop()  # the listening sockets close; requests on open connections still run
        self._sites.clear()
        for name in reversed(list(self.plugins)):
            try:
                await self.plugins[name].closing()
            except Exception:
                log.exception("plugin failed in closing()", extra={"plugin": name})
        await self.scheduler.stop()
        await self.bus.stop(timeout)
        await self.outbox.stop(timeout)
        for name in reversed(list(self.plugins)):
            await self._stop_plugin(name, self.plugins[name])
        self.plugins.clear()
        for runner in (self._runner, self._metrics_runner):
            if runner is not None:
                await runner.cleanup()
        self._runner = self._metrics_runner = None
        await self.rate_limits.stop()
        await self.fanout.stop()
        await close_db()
        self._stopped.set()
        log.info("relaydesk stopped")

    async def _start_plugin(self, spec: PluginSpec) -> Plugin:
        services = PluginServices(
            log=logging.getLogger(f"relaydesk.plugin.{spec.instance_name}"),
            inbound=self.inbound,
            agent_typing=functools.partial(self.agent_typing, spec.instance_name),
            customer_typing=functools.partial(self.customer_typing, spec.instance_name),
            http_base_url=self.config.server.bind_url,
            public_url=self.config.server.public_base_url,
            plugin_name=spec.instance_name,
            post_to_ops=functools.partial(self.post_to_ops, spec.instance_name),
            schedule_once=functools.partial(self.schedule_once, spec.instance_name),
            now=self.scheduler.now,
            receiving_states=self.receiving_states,
            adapter_states=self.adapter_health.states,
            presence=self.presence,
            metrics_registry=self.metrics.registry,
            fanout=self.fanout,
            rate_limits=self.rate_limits,
            announce=self._announce,
            receivers=Receivers(
                spec.instance_name,
                logging.getLogger(f"relaydesk.plugin.{spec.instance_name}"),
                self.receive_settings,
            ),
            downloads=DownloadPolicy(
                link_ttl=self.config.server.download_link_ttl,
                per_minute=self.config.server.downloads_per_minute,
                rate_limits=self.rate_limits,
            ),
        )
        plugin = spec.plugin_class(spec.config, services, instance_name=spec.instance_name)
        kind = plugin.kind
        if kind is PluginKind.CHANNEL and not isinstance(plugin, Channel):
            raise TypeError(f"plugin '{spec.instance_name}' is a channel but does not implement send()")
        if kind is PluginKind.WORKSPACE and not isinstance(plugin, Workspace):
            raise TypeError(f"plugin '{spec.instance_name}' is a workspace but lacks the Workspace methods")
        await plugin.start()
        log.info("plugin started", extra={"plugin": spec.instance_name, "kind": kind.value})
        return plugin

    @staticmethod
    async def _stop_plugin(name: str, plugin: Plugin) -> None:
        try:
            await plugin.stop()
        except Exception:
            log.exception("plugin failed to stop cleanly", extra={"plugin": name})

    def _rebuild_pipeline(self) -> None:
        # the core's commands come last, so a plugin may replace one (handoff's !transfer @agent: note)
        self._pipeline = Pipeline([*self.plugins.values(), self._core], self.metrics)

    def _announce(self, text: str) -> None:
        """A plugin's lines for the person who started relaydesk: kept for the command, or printed now."""
        if self.hold_announcements:
            self.announcements.append(text)
        else:
            print(text, flush=True)

    # -- intake --------------------------------------------------------------------------------

    async def inbound(self, event: InboundEvent) -> None:
        """Append an adapter's event to the bus; returns once it is stored (then the adapter may ack)."""
        if not self._accepting:
            raise NotAccepting("relaydesk is shutting down")
        # a customer's events are ordered per customer, whichever channel they come from
        if isinstance(event, CustomerMessage):
            key = await publish_key(event, self.customer_keys)
        else:
            key = event.conversation_key()
        await self.bus.publish(key, dump_event(event))

    async def _customers_merged(self) -> None:
        """A merge committed here: this worker's bus-key cache is cleared now, the others' through the fan-out."""
        self.customer_keys.clear()
        try:
            await self.fanout.publish(MERGED_TOPIC, {})
        except Exception:  # the other workers' entries expire within CustomerKeyCache.ttl
            log.warning("could not tell the other workers about a merge", exc_info=True)

    async def agent_typing(self, workspace: str, room_id: str, agent_name: str, active: bool) -> None:
        """An agent types (or stopped) in a room of ``workspace``: the customer's channel shows it if it can."""
        try:
            conversation = await conversation_for_room(workspace, room_id)
            if conversation is None or conversation.state is ConversationState.CLOSED:
                return
            identity = await Identity.get_or_none(id=reply_identity_id(conversation))
            if identity is None or not identity.reachable:
                return
            channel = self.plugins.get(identity.channel)
            if isinstance(channel, TypingChannel):
                await channel.typing(identity.external_id, agent_name, active)
        except Exception:
            log.warning("typing indicator failed", exc_info=True, extra={"workspace": workspace})

    async def customer_typing(self, channel: str, external_user_id: str, active: bool) -> None:
        """A customer types (or stopped) on ``channel``: the agents' room shows it if the workspace can."""
        try:
            opened = await hot.open_conversation_of(channel, external_user_id)
            if opened is None or opened[0].room_id is None:
                return  # no room yet: the first message creates it
            conversation, identity, _customer = opened
            room = await Room.get_or_none(id=conversation.room_id)
            workspace = self.plugins.get(room.workspace) if room else None
            if room is not None and isinstance(workspace, TypingWorkspace):
                name = identity.display_name or identity.external_id
                await workspace.customer_typing(
                    RoomRef(room.workspace, room.external_id), channel, external_user_id, name, active
                )
        except Exception:
            log.warning("customer typing indicator failed", exc_info=True, extra={"channel": channel})

    async def post_to_ops(
        self,
        plugin: str,
        team: str | None,
        text: str,
        *,
        key: str | None = None,
        image: tuple[str, bytes] | None = None,
    ) -> None:
        """Queue ``text`` for ``team``'s ops room in the team's workspace (a plugin's ``services.post_to_ops``).

        With ``key`` the post is made once per plugin and key (the outbox row's idempotency key); with
        ``image`` (file name, PNG bytes) ``text`` is its caption.
        """
        workspace, channel = self.rooms.ops_target(team)
        if workspace is None:
            log.warning("ops post dropped: no workspace is enabled", extra={"plugin": plugin, "team": team})
            return
        row_key = f"ops:{plugin}:{key}" if key else f"ops:{plugin}:{uuid.uuid4().hex}"
        if image is not None:
            await self.outbox.enqueue_ops_image(workspace, channel, text, image[1], image[0], key=row_key)
            return
        await self.outbox.enqueue_ops(workspace, channel, text, key=row_key)

    async def schedule_once(
        self,
        plugin: str,
        job: str,
        key: str,
        *,
        data: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> bool:
        """Store ``plugin``'s global task ``key`` for ``job`` unless it exists (``services.schedule_once``)."""
        if not 0 < len(key) <= MAX_TASK_KEY:
            raise ValueError(f"plugin '{plugin}': a task key must have 1 to {MAX_TASK_KEY} characters")
        try:
            await ScheduledTask.create(
                plugin=plugin,
                scope="global",
                key=key,
                job=job,
                data=data or {},
                due_at=at or self.scheduler.now(),
                source=f"once:{key}"[:255],
            )
        except IntegrityError:
            return False
        return True

    async def _publish_fire(self, fire: ScheduledFire) -> None:
        await self.bus.publish(fire.conversation_key(), dump_event(fire))

    async def _publish_event(self, event: ConversationEvent) -> None:
        await self.bus.publish(event.conversation_key(), dump_event(event))

    def _handled(self, kind: LifecycleKind) -> bool:
        """Whether an enabled plugin handles ``kind`` (changes nobody handles are logged, not published)."""
        return self._pipeline.handles(kind)

    async def _handle_entry(self, entry: BusEntry) -> None:
        """The bus handler: the relay on one entry, in a task of its own, waiting out a database outage.

        Each entry runs in a task of its own in a fresh context (:func:`storage.db.fresh_context`), so
        nothing a transaction broken by a database restart leaves in the context reaches the next entry. A failure while the database does
        not answer is not the entry's fault: it does not count against its attempts (which would set it
        aside within a second); the entry waits until the database answers, then runs again.
        """
        while True:
            try:
                # the bus's fence (storage.fence) goes along: a worker that froze stops writing when it wakes
                await asyncio.create_task(self.relay.handle(entry), context=fence.carry(fresh_context()))
                return
            except fence.FenceLost:
                raise  # the partition's new owner handles the entry
            except Exception:
                if self._stopping or await database_answers():
                    raise
            log.warning("database unreachable: the event waits for it", extra={"entry": entry.id})
            while not await database_answers():
                if self._stopping:
                    raise RuntimeError("stopping while the database is unreachable")
                await asyncio.sleep(DATABASE_RETRY_SECONDS)

    async def _dead_letter(self, entry: BusEntry, exc: BaseException) -> None:
        log.error(
            "event could not be handled and was set aside",
            extra={"entry": entry.id, "key": entry.key, "error": repr(exc)[:500]},
        )

    # -- reload --------------------------------------------------------------------------------

    async def reload(self, new: DeskConfig) -> list[str]:
        """Apply a new, already validated config: feature plugins are enabled, disabled or reconfigured.

        Channels, workspaces, storage and server settings need a restart; a change to them is
        reported and the running ones are kept. Returns what was done, one line each.
        """
        async with self._reload_lock:
            changes: list[str] = []
            old_specs = {s.instance_name: s for s in self.config.plugins}
            new_specs = {s.instance_name: s for s in new.plugins}
            if new.storage != self.config.storage or new.server != self.config.server:
                changes.append("storage/server settings changed: restart relaydesk to apply them")
            if new.outbox != self.config.outbox:
                self.outbox.settings = outbox_settings_of(new, self.outbox.settings)
                changes.append("outbox: retry window and notice delay applied")
            if new.teams != self.config.teams:
                # the room directory reads self.config.teams, replaced below
                changes.append("teams: applied (a moved team's conversations move with their next post)")
            plugins = dict(self.plugins)
            for name, spec in new_specs.items():
                old = old_specs.get(name)
                adapter = spec.plugin_class.kind is not PluginKind.FEATURE
                if old is None:
                    if adapter:
                        changes.append(
                            f"{name}: new {spec.plugin_class.kind.value}: restart relaydesk to start it"
                        )
                        continue
                    plugins[name] = await self._start_plugin(spec)
                    await plugins[name].ready()
                    changes.append(f"{name}: enabled")
                elif old.plugin_class is not spec.plugin_class:
                    if adapter:
                        changes.append(f"{name}: plugin class changed: restart relaydesk to apply it")
                        continue
                    await self._stop_plugin(name, plugins[name])
                    plugins[name] = await self._start_plugin(spec)
                    changes.append(f"{name}: replaced")
                elif old.config != spec.config:  # pydantic equality compares SecretStr values too
                    await plugins[name].reconfigure(spec.config)
                    changes.append(f"{name}: reconfigured")
            removed = [n for n in old_specs if n not in new_specs]
            for name in removed:
                if old_specs[name].plugin_class.kind is not PluginKind.FEATURE:
                    changes.append(
                        f"{name}: removing a {old_specs[name].plugin_class.kind.value} needs a restart"
                    )
                    continue
                plugins.pop(name, None)
            # keep plugins.yaml order for the new pipeline; adapters that stay keep their place
            order = [n for n in new_specs if n in plugins] + [n for n in plugins if n not in new_specs]
            disabled = {n: self.plugins[n] for n in removed if n in self.plugins and n not in plugins}
            self.plugins = {n: plugins[n] for n in order}
            self._rebuild_pipeline()  # events already running finish on the pipeline they pinned
            for name, plugin in disabled.items():
                await self._stop_plugin(name, plugin)
                changes.append(f"{name}: disabled")
            self.config = new.model_copy(update={"plugins": [*new.plugins]})
            self.scheduler.set_periodic(self._pipeline.periodic_jobs())
            log.info("configuration reloaded", extra={"changes": "; ".join(changes) or "none"})
            return changes

    # -- observation ---------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """What ``/healthz`` reports (served with 503 when ``status`` is ``down`` or ``stopping``).

        ``status`` is ``down`` when the database is unreachable or an adapter's receiving is down,
        ``degraded`` when an adapter's receiving has been failing for a while (see
        :mod:`bot_core.receiving`), ``stopping`` during shutdown, ``ok`` otherwise. ``receiving`` has
        each adapter that runs receiving loops, with its state and each loop's failure streak.
        """
        report: dict[str, Any] = {"status": "ok" if self._accepting else "stopping"}
        down = False
        try:
            await connections.get("default").execute_query("SELECT 1")
            report["database"] = "ok"
        except Exception as exc:
            down = True
            report["database"] = f"error: {type(exc).__name__}"
        report["bus_pending"] = await self.bus.pending()
        report["plugins"] = list(self.plugins)
        worst = ReceiveState.OK
        receiving: dict[str, Any] = {}
        for name, state, loops in self._receiving():
            worst = max(worst, state, key=lambda s: s.severity)
            receiving[name] = {"state": state.value, "loops": loops}
        report["receiving"] = receiving
        if down or worst is ReceiveState.DOWN:
            report["status"] = "down"
        elif worst is ReceiveState.DEGRADED and report["status"] == "ok":
            report["status"] = "degraded"
        return report

    async def presence(self, user_id: str) -> str | None:
        """Whether ``user_id`` is ``online``, ``unavailable`` or ``offline``, as the first workspace that knows
        says (:class:`PresenceWorkspace`); None when none can say. A failing workspace counts as not knowing."""
        for name, plugin in list(self.plugins.items()):
            if plugin.kind is not PluginKind.WORKSPACE or not isinstance(plugin, PresenceWorkspace):
                continue
            try:
                found = await plugin.presence(user_id)
            except Exception:
                log.warning(
                    "presence lookup failed", extra={"workspace": name, "user": user_id}, exc_info=True
                )
                continue
            if found in PRESENCES:
                return found
        return None

    def receiving_states(self) -> dict[str, str]:
        """Each adapter with receiving loops in this process: its state (``ok``, ``degraded``, ``down``)."""
        return {name: state.value for name, state, _loops in self._receiving()}

    def _receiving(self) -> list[tuple[str, ReceiveState, dict[str, dict[str, object]]]]:
        """Every adapter with receiving loops: its state and its loops' reports."""
        found = []
        for name, plugin in self.plugins.items():
            if plugin.services.receivers.loops:
                state, loops = plugin.services.receivers.report()
                found.append((name, state, loops))
        return found

    async def refresh_gauges(self) -> None:
        """Update the gauges that are read on scrape."""
        self.metrics.bus_pending.set(await self.bus.pending())
        self.metrics.receiving_state.clear()  # adapters stopped since the last scrape disappear
        for name, _state, loops in self._receiving():
            for loop, entry in loops.items():
                value = ReceiveState(str(entry["state"])).severity
                self.metrics.receiving_state.labels(adapter=name, loop=loop).set(value)
        self.metrics.outbox_depth.set(
            await OutboxItem.filter(status__in=[OutboxStatus.PENDING, OutboxStatus.SENDING]).count()
        )
        try:
            await self.service_metrics.refresh(self.scheduler.now())
        except Exception:  # the rest of /metrics is still worth serving
            log.warning("service figures could not be computed for /metrics", exc_info=True)
        for name, plugin in list(self.plugins.items()):
            try:
                await plugin.refresh_metrics()
            except Exception:
                log.warning("plugin metrics could not be refreshed", extra={"plugin": name}, exc_info=True)

    async def wait_settled(self, timeout: float = 30.0) -> bool:
        """Wait until every bus entry is handled and every outbox row is sent or given up (tests, tools)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            if not await self.bus.wait_idle(remaining) or not await self.outbox.wait_settled(remaining):
                return False
            if await self.bus.pending() == 0:  # nothing new was published while the outbox drained
                return True

    async def wait_stopped(self) -> None:
        """Return once :meth:`stop` has finished."""
        await self._stopped.wait()
