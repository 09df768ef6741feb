"""``/metrics`` behind a bearer token, or on an address of its own."""

from __future__ import annotations

import aiohttp

from tests.conftest import DOUBLES_YAML, DeskFactory

TOKEN = "metrics-token-for-tests"


async def test_metrics_want_the_bearer_token_when_one_is_configured(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    yaml_text = "server:\n  metrics_token: ${RELAYDESK_METRICS_TOKEN}\n" + DOUBLES_YAML
    desk = await make_desk(sqlite_url, yaml_text, serve_http=True, environ={"RELAYDESK_METRICS_TOKEN": TOKEN})
    url = f"http://127.0.0.1:{desk.port}/metrics"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
            assert "relaydesk_" not in await resp.text()
        async with http.get(url, headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
        async with http.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 200 and "relaydesk_outbox_depth" in await resp.text()
        async with http.get(f"http://127.0.0.1:{desk.port}/healthz") as resp:
            assert resp.status == 200  # health checks stay open


async def test_metrics_can_move_to_a_port_of_their_own(sqlite_url: str, make_desk: DeskFactory) -> None:
    yaml_text = "server:\n  metrics_port: 0\n" + DOUBLES_YAML
    desk = await make_desk(sqlite_url, yaml_text, serve_http=True)
    assert desk.metrics_port is not None and desk.metrics_port != desk.port
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{desk.port}/metrics") as resp:
            assert resp.status == 404  # not on the public port any more
        async with http.get(f"http://127.0.0.1:{desk.metrics_port}/metrics") as resp:
            assert resp.status == 200 and "relaydesk_outbox_depth" in await resp.text()
