"""relaydesk's one aiohttp server: every plugin's routes and webhooks, ``/healthz`` and ``/metrics``."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from bot_core.metrics import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from bot_core.desk import Desk

log = logging.getLogger("relaydesk.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def metrics_handler(desk: Desk) -> Handler:
    """``GET /metrics``: Prometheus text; with ``server.metrics_token`` set, only for ``Bearer <token>``."""
    secret = desk.config.server.metrics_token
    token = secret.get_secret_value().encode() if secret is not None else b""

    async def metrics(request: web.Request) -> web.StreamResponse:
        if token:
            supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip().encode()
            if not hmac.compare_digest(supplied, token):
                log.info("metrics request without the token", extra={"remote": request.remote})
                raise web.HTTPUnauthorized(
                    text="a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
                )
        await desk.refresh_gauges()
        return web.Response(body=desk.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return metrics


def build_metrics_app(desk: Desk) -> web.Application:
    """``/metrics`` alone, for ``server.metrics_port`` (an address only the monitoring can reach)."""
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(desk))
    return app


def build_app(desk: Desk) -> web.Application:
    """The application: health, metrics and the routes of the plugins enabled at start.

    ``/metrics`` is served here unless ``server.metrics_port`` moves it to an address of its own.

    A route calls whichever instance of its plugin is enabled *now*, so a reload that reconfigures
    or disables a plugin takes effect at once (a disabled plugin's routes answer 404). Routes of a
    plugin first enabled by a reload are served after the next restart: aiohttp's router is fixed
    once the server runs.
    """
    app = web.Application(client_max_size=32 * 1024**2)

    async def healthz(_request: web.Request) -> web.Response:
        report = await desk.health()
        # degraded is still 200: the desk works, a receiving loop retries; down asks for a restart
        return web.json_response(report, status=200 if report["status"] in ("ok", "degraded") else 503)

    app.router.add_get("/healthz", healthz)
    if desk.config.server.metrics_port is None:
        app.router.add_get("/metrics", metrics_handler(desk))
    for instance, plugin in desk.plugins.items():
        for spec, _bound in plugin.bound_routes():
            attr = next(a for a, s in plugin.route_specs() if s == spec)
            app.router.add_route(spec.method, spec.path, _late_bound(desk, instance, attr))
            log.debug("route", extra={"plugin": instance, "method": spec.method, "path": spec.path})
    return app


def _late_bound(desk: Desk, instance: str, attr: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        plugin = desk.plugins.get(instance)
        if plugin is None and desk.stopping:
            raise web.HTTPServiceUnavailable(text="relaydesk is restarting", headers={"Retry-After": "1"})
        if plugin is None:
            raise web.HTTPNotFound(text=f"plugin '{instance}' is not enabled")
        handler: Handler = getattr(plugin, attr)
        return await handler(request)

    return handle
