"""relaydesk's one aiohttp server: every plugin's routes and webhooks, ``/healthz`` and ``/metrics``.

What every route gets from the server, before a plugin sees the request (see :func:`edge_middlewares`):

* behind a reverse proxy listed in ``server.trusted_proxies``, ``request.remote`` is the client's address
  from ``X-Forwarded-For`` (:mod:`bot_core.proxies`), so per-address limits count clients, not the proxy;
* a client has ``server.header_timeout`` seconds to send a request's headers (slowloris) and
  ``server.body_timeout`` seconds to send its body, then gets 408 and the connection is closed;
* a body the HTTP parser cannot read (bad chunked encoding, a connection lost halfway) is a 400 logged
  in one line at INFO, never a 500 with a traceback; malformed request heads are logged the same way.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from bot_core.metrics import CONTENT_TYPE_LATEST
from bot_core.proxies import client_address, parse_networks

if TYPE_CHECKING:
    from bot_core.config import ServerConfig
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
    app = web.Application(client_max_size=32 * 1024**2, middlewares=edge_middlewares(desk.config.server))

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


def make_runner(desk: Desk, *, shutdown_timeout: float) -> web.AppRunner:
    """The runner of :func:`build_app`, with the header timeout and the one-line log of malformed requests."""
    return web.AppRunner(
        build_app(desk),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
        keepalive_timeout=desk.config.server.header_timeout,
        logger=cast(logging.Logger, _ClientErrorLog(logging.getLogger("relaydesk.server.http"))),
    )


class BodyTimeout(asyncio.TimeoutError):
    """The client did not send the request's body within ``server.body_timeout``.

    A ``TimeoutError``, so that aiohttp's lingering read of an unfinished body stops quietly on it.
    """


def edge_middlewares(server: ServerConfig) -> list[Any]:
    """The middlewares every route runs behind (outermost first); see the module's docstring."""
    trusted = parse_networks(server.trusted_proxies)
    body_timeout = server.body_timeout

    @web.middleware
    async def real_client(request: web.Request, handler: Handler) -> web.StreamResponse:
        if trusted:
            client = client_address(request.remote, request.headers.getall("X-Forwarded-For", []), trusted)
            if client is not None and client != request.remote:
                request = request.clone(remote=client)
        return await handler(request)

    @web.middleware
    async def client_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except HttpProcessingError as exc:
            reason = str(exc.message or type(exc).__name__).splitlines()[0][:200]
            _refused(request, 400, f"malformed request: {reason}")
            return web.json_response({"error": f"malformed request: {reason}"}, status=400)
        except ConnectionResetError:
            log.debug("client went away during the request", extra={"path": request.path})
            return web.Response(status=400)

    @web.middleware
    async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.body_exists or request.content.is_eof():
            return await handler(request)
        content = request.content

        def expire() -> None:
            if not content.is_eof():
                content.set_exception(BodyTimeout(f"the body did not arrive within {body_timeout:g} s"))

        timer = asyncio.get_running_loop().call_later(body_timeout, expire)
        try:
            return await handler(request)
        except BodyTimeout as exc:
            _refused(request, 408, str(exc))
            response = web.json_response({"error": str(exc)}, status=408)
            response.force_close()
            return response
        finally:
            timer.cancel()

    return [real_client, client_errors, body_deadline]


def _refused(request: web.Request, status: int, reason: str) -> None:
    log.info(
        "request refused",
        extra={"path": request.path, "status": status, "reason": reason, "client": request.remote},
    )


class _ClientErrorLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server log, where a request the client got wrong is one INFO line instead of a traceback.

    aiohttp logs every malformed request head with ``logger.exception`` (ERROR and a 16-line traceback):
    anyone on the internet could flood the log. Errors of relaydesk's own code are still logged in full.
    """

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        """Log ``msg``: one INFO line when ``exc_info`` is the client's fault, with the traceback otherwise."""
        if isinstance(exc_info, HttpProcessingError | ConnectionResetError):
            reason = str(getattr(exc_info, "message", "") or type(exc_info).__name__).splitlines()[0][:200]
            self.logger.info("malformed HTTP request refused", extra={"reason": reason})
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)
