"""The relaydesk command as a user runs it: check, migrate, run (health, metrics, reload, SIGTERM, crash)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

RELAYDESK = [sys.executable, "-m", "bot_core"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RELAYDESK, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


BAD_FILES = {
    "unknown plugin": ("plugins:\n  - echo: {}\n  - telegrum: {}\n", "plugins.yaml:3: plugin 'telegrum'"),
    "wrong field": (
        "plugins:\n  - echo:\n      greting: hi\n",
        "plugins.yaml:3: plugin 'echo', field 'greting'",
    ),
    "wrong type": (
        "plugins:\n  - mem:\n      use: bot_core.testing:MemoryChannel\n      config: {max_text_length: lots}\n",
        "plugin 'mem', field 'max_text_length'",
    ),
    "missing secret": (
        "storage:\n  database: ${DB_URL_NOT_SET}\nplugins: []\n",
        "plugins.yaml:2: ",
    ),
    "yaml syntax": ("plugins:\n  - echo: {greeting: [unclosed\n", "plugins.yaml:"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_check_refuses_a_bad_file_with_one_clear_message(kind: str, tmp_path: Path) -> None:
    text, expected = BAD_FILES[kind]
    (tmp_path / "plugins.yaml").write_text(text)
    result = run_cli("check", "plugins.yaml", cwd=tmp_path)
    assert result.returncode == 2, result
    assert expected in result.stderr
    if kind == "missing secret":
        assert "DB_URL_NOT_SET" in result.stderr
    assert result.stdout == ""


def test_run_with_a_bad_file_starts_nothing(tmp_path: Path) -> None:
    (tmp_path / "plugins.yaml").write_text(BAD_FILES["unknown plugin"][0])
    result = run_cli("run", "-c", "plugins.yaml", "--migrate", cwd=tmp_path)
    assert result.returncode == 2
    assert "telegrum" in result.stderr
    assert not (tmp_path / "relaydesk.db").exists()  # nothing was started, not even the database


def test_check_accepts_the_shipped_plugins_yaml() -> None:
    repo = Path(__file__).resolve().parents[2]
    result = run_cli("check", "plugins.yaml", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert "plugins.yaml: OK" in result.stdout


class Running:
    """A relaydesk process started by a test, with its log lines collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.lines: list[str] = []
        self._new_line = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace"))
            self._new_line.set()

    async def wait_log(self, needle: str, timeout: float = 20.0) -> str:
        async def look() -> str:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if needle in line:
                        return line
                seen = len(self.lines)
                if self.proc.returncode is not None and self._reader.done():
                    raise AssertionError(
                        f"relaydesk exited before logging {needle!r}:\n{''.join(self.lines)}"
                    )
                self._new_line.clear()
                await self._new_line.wait()

        try:
            return await asyncio.wait_for(look(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"no log line with {needle!r} in {timeout}s:\n{''.join(self.lines)}"
            ) from None

    async def post_inbound(self, user: str, text: str, message_id: str) -> None:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{self.port}/test/memory-channel/inbound"
            async with http.post(url, json={"user": user, "text": text, "id": message_id}) as resp:
                assert resp.status == 200, await resp.text()


async def start_relaydesk(cwd: Path) -> Running:
    port = int((cwd / "port").read_text())
    proc = await asyncio.create_subprocess_exec(
        *RELAYDESK,
        "run",
        "-c",
        "plugins.yaml",
        "--migrate",
        cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Running(proc, port)
    await running.wait_log("relaydesk started")
    return running


def write_config(path: Path, plugins: str, port: int) -> None:
    (path / "port").write_text(str(port))
    (path / "plugins.yaml").write_text(
        f"server: {{host: 127.0.0.1, port: {port}}}\nlog: {{level: INFO, format: json}}\nplugins:\n{plugins}"
    )


CHANNEL = '  - customers: {use: "bot_core.testing:MemoryChannel", config: {record_file: deliveries.jsonl}}\n'
CRASHING = '  - customers: {use: "bot_core.testing:MemoryChannel", config: {record_file: deliveries.jsonl, crash_before_send: true}}\n'
ECHO = "  - echo: {greeting: GREETING}\n"


def deliveries(path: Path) -> list[dict[str, str]]:
    file = path / "deliveries.jsonl"
    return [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else []


async def wait_deliveries(path: Path, count: int, timeout: float = 20.0) -> list[dict[str, str]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while len(deliveries(path)) < count:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"expected {count} deliveries, got {deliveries(path)}")
        await asyncio.sleep(0.05)
    return deliveries(path)


@pytest.fixture
async def workdir(tmp_path: Path) -> AsyncIterator[Path]:
    yield tmp_path


async def test_run_serves_health_and_metrics_and_stops_gracefully_on_sigterm(workdir: Path) -> None:
    write_config(workdir, CHANNEL + ECHO.replace("GREETING", "hello there"), _free_port())
    desk = await start_relaydesk(workdir)
    await desk.post_inbound("c1", "hi", "m1")
    assert [d["text"] for d in await wait_deliveries(workdir, 1)] == ["hello there"]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{desk.port}/healthz") as resp:
            assert resp.status == 200
            health = await resp.json()
        async with http.get(f"http://127.0.0.1:{desk.port}/metrics") as resp:
            metrics = await resp.text()
    assert health["status"] == "ok" and health["database"] == "ok"
    assert 'relaydesk_messages_in_total{source="customers"} 1.0' in metrics
    assert 'relaydesk_messages_out_total{adapter="customers"} 1.0' in metrics
    for name in ("relaydesk_outbox_depth", "relaydesk_delivery_failures", "relaydesk_handler_seconds"):
        assert name in metrics
    # logs are structured and never carry message bodies at INFO
    log_text = "".join(desk.lines)
    assert "hello there" not in log_text and '"hi"' not in log_text
    assert all(json.loads(line)["level"] for line in desk.lines if line.startswith("{"))

    desk.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(desk.proc.wait(), 30) == 0
    await desk.wait_log("relaydesk stopped")
    assert not (workdir / ".relaydesk.pid").exists()


async def test_sighup_reloads_feature_plugins_and_refuses_a_bad_file(workdir: Path) -> None:
    port = _free_port()
    write_config(workdir, CHANNEL, port)
    desk = await start_relaydesk(workdir)
    try:
        write_config(workdir, CHANNEL + ECHO.replace("GREETING", "first greeting"), port)
        reload = run_cli("reload", cwd=workdir)
        assert reload.returncode == 0, reload.stderr
        await desk.wait_log("echo: enabled")
        await desk.post_inbound("c1", "hi", "m1")
        assert [d["text"] for d in await wait_deliveries(workdir, 1)] == ["first greeting"]

        (workdir / "plugins.yaml").write_text((workdir / "plugins.yaml").read_text() + "  - nonsense: {}\n")
        assert run_cli("reload", cwd=workdir).returncode == 2  # refused before signalling
        os.kill(desk.proc.pid, signal.SIGHUP)  # and the process refuses it too
        await desk.wait_log("reload refused")
        await desk.post_inbound("c2", "hi", "m2")
        assert [d["text"] for d in await wait_deliveries(workdir, 2)][1] == "first greeting"

        write_config(workdir, CHANNEL + ECHO.replace("GREETING", "second greeting"), port)
        assert run_cli("reload", cwd=workdir).returncode == 0
        await desk.wait_log("echo: reconfigured")
        await desk.post_inbound("c3", "hi", "m3")
        assert [d["text"] for d in await wait_deliveries(workdir, 3)][2] == "second greeting"

        write_config(workdir, CHANNEL, port)
        assert run_cli("reload", cwd=workdir).returncode == 0
        await desk.wait_log("echo: disabled")
        await desk.post_inbound("c4", "hi", "m4")
        await desk.post_inbound("c3", "second message", "m5")
        await desk.wait_log('"conversation": 3')  # c3's second message was handled
        assert len(deliveries(workdir)) == 3  # no greeting for c4: echo is off
    finally:
        desk.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(desk.proc.wait(), 30)


async def test_killed_between_storing_and_sending_delivers_exactly_once_after_restart(workdir: Path) -> None:
    port = _free_port()
    write_config(workdir, CRASHING + ECHO.replace("GREETING", "we got it"), port)
    desk = await start_relaydesk(workdir)
    await desk.post_inbound("c1", "hello", "m1")
    # the greeting is stored in the outbox, then the process is SIGKILLed as it starts sending
    assert await asyncio.wait_for(desk.proc.wait(), 30) == -signal.SIGKILL
    assert deliveries(workdir) == []

    write_config(workdir, CHANNEL + ECHO.replace("GREETING", "we got it"), port)
    desk = await start_relaydesk(workdir)
    try:
        assert [d["text"] for d in await wait_deliveries(workdir, 1)] == ["we got it"]
        await desk.post_inbound("c1", "hello", "m1")  # the platform retries the webhook it never saw acked
        await desk.post_inbound("c1", "still there?", "m2")
        await desk.wait_log('"chars": 12')  # "still there?" was handled after the retry
        assert [d["text"] for d in deliveries(workdir)] == ["we got it"]  # exactly once
    finally:
        desk.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(desk.proc.wait(), 30)


async def _long_poller(base: str, token: str, statuses: list[int], first_returned: asyncio.Event) -> None:
    """A visitor on the HTTP fallback, as the widget is: a 25 s long poll, polled again as soon as it returns."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        wait = 0  # the first poll reads the history at once, the next ones wait for news
        while True:
            try:
                async with http.get(f"{base}/web/api/messages?after=0&newest=0&wait={wait}") as resp:
                    statuses.append(resp.status)
                    await resp.read()
                    if resp.status != 200:
                        return  # the widget backs off here (1 s, 2 s, ...) and polls the next relaydesk
            except aiohttp.ClientError:
                return  # the server is gone
            first_returned.set()
            wait = 25


async def _websocket_visitor(base: str, token: str, closes: list[int | None], synced: asyncio.Event) -> None:
    """A visitor on the WebSocket, as the widget is: reconnects at once when the server closes it."""
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.ws_connect(f"{base}/web/ws?token={token}") as ws:
                    await ws.send_json({"type": "sync", "after": 0})
                    async for _msg in ws:
                        synced.set()  # the history came: the visitor is connected
                    closes.append(ws.close_code)
            except (aiohttp.ClientError, aiohttp.WSServerHandshakeError):
                return


async def test_stop_with_long_polling_and_websocket_visitors_is_quick(workdir: Path) -> None:
    """`make run`'s setup (the shipped plugins.yaml, dev homeserver included), a visitor on each transport,
    then Ctrl-C: both visitors are let go at once and relaydesk exits without waiting out the visitor's 25 s
    long poll (about a second on an idle machine: the figure is printed; the bound leaves room for a loaded one)."""
    repo = Path(__file__).resolve().parents[2]
    (workdir / "plugins.yaml").write_text((repo / "plugins.yaml").read_text())
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        *RELAYDESK,
        "run",
        "--migrate",
        cwd=workdir,
        env={**os.environ, "RELAYDESK_PORT": str(port), "RELAYDESK_MATRIX_PORT": str(_free_port())},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Running(proc, port)
    await running.wait_log("relaydesk started", 60)
    assert not [line for line in running.lines if " route " in line]  # routes are logged at DEBUG only
    base = f"http://127.0.0.1:{running.port}"
    async with aiohttp.ClientSession() as http, http.post(f"{base}/web/api/session", json={}) as resp:
        token = (await resp.json())["token"]
    statuses: list[int] = []
    closes: list[int | None] = []
    polled = asyncio.Event()
    poller = asyncio.create_task(_long_poller(base, token, statuses, polled))
    synced = asyncio.Event()
    socket_visitor = asyncio.create_task(_websocket_visitor(base, token, closes, synced))
    # both are connected: the first poll (history) returned and the long poll is waiting; the socket synced
    await asyncio.wait_for(polled.wait(), 10)
    await asyncio.wait_for(synced.wait(), 10)
    try:
        started = asyncio.get_running_loop().time()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        took = asyncio.get_running_loop().time() - started
        print(f"relaydesk stopped {took:.2f} s after SIGINT with a long-polling and a WebSocket visitor")
        assert took < 10.0, f"the stop took {took:.1f} s: it waited for the long poll"
        await asyncio.wait_for(asyncio.gather(poller, socket_visitor), 10)
    finally:
        poller.cancel()
        socket_visitor.cancel()
    assert 1012 in closes  # the widget was told "service restart" and reconnects
    assert statuses[:1] == [200] and all(s in (200, 503) for s in statuses), statuses
    await running.wait_log("relaydesk stopped")


def test_a_taken_port_is_said_in_one_line_before_anything_starts(tmp_path: Path) -> None:
    """A second relaydesk (or any program) on the port: exit status 2, one line, no login printed."""
    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "plugins.yaml").write_text((repo / "plugins.yaml").read_text())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "run",
            "--migrate",
            cwd=tmp_path,
            env={"RELAYDESK_PORT": str(port), "RELAYDESK_MATRIX_PORT": str(_free_port())},
        )
    assert result.returncode == 2
    assert result.stdout == ""  # no login, no demo address: nothing was started
    assert result.stderr.splitlines() == [
        f"relaydesk: cannot listen on 127.0.0.1:{port}: the port is already in use (is relaydesk already"
        " running?). Stop the other program, or set another port (server.port in plugins.yaml,"
        " RELAYDESK_PORT in the sample)."
    ]
    assert not (tmp_path / "var").exists()  # no homeserver was set up
